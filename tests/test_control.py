"""Receding-horizon control: observation history, re-planning every n_action_steps, executed slice, errors."""
import dataclasses

import jax
import numpy as np
import pytest

import dpjax
from dpjax import control
from dpjax import policy as policy_lib
from tests import smoke


def test_history_repeats_first_frame_then_slides():
  history = control.ObservationHistory({"low_dim": np.array([[1.0], [2.0]])}, 3)
  np.testing.assert_array_equal(history.stacked()["low_dim"][:, :, 0], [[1, 1, 1], [2, 2, 2]])
  history.push({"low_dim": np.array([[5.0], [6.0]])})
  np.testing.assert_array_equal(history.stacked()["low_dim"][:, :, 0], [[1, 1, 5], [2, 2, 6]])


def test_history_rejects_other_keys_and_shapes():
  history = control.ObservationHistory({"low_dim": np.zeros((2, 20))}, 2)
  with pytest.raises(ValueError, match="keys"):
    history.push({"state": np.zeros((2, 20))})
  with pytest.raises(ValueError, match=r"expected \(2, 20\)"):
    history.push({"low_dim": np.zeros((3, 20))})


def test_controller_refuses_a_frame_without_the_environment_axis():
  controller = dpjax.RecedingHorizonController(smoke.random_policy(), jax.random.key(0))
  with pytest.raises(ValueError, match=r"'low_dim' has shape \(20,\); the controller takes one frame of N "
                     r"environments, \[N, 20\] \(one environment: \{key: value\[None\]\}\)"):
    controller.act({"low_dim": np.zeros(20, np.float32)})
  assert controller.act({"low_dim": np.zeros((1, 20), np.float32)}).shape == (1, 2)


def test_controller_replans_every_n_action_steps_with_the_executed_slice():
  policy = smoke.random_policy()
  spec = policy.spec   # smoke: horizon 16, n_obs_steps 2, n_action_steps 8
  rng = np.random.default_rng(0)
  observations = [{"low_dim": rng.uniform(0, 512, (3, 20)).astype(np.float32)} for _ in range(spec.n_action_steps + 1)]
  controller = control.RecedingHorizonController(policy, jax.random.key(7), method="ddim", num_inference_steps=3)
  actions = [controller.act(obs) for obs in observations]
  assert controller.num_plans == 2 and all(a.shape == (3, 2) for a in actions)

  # The same two plans by hand: the history repeats the first frame, then holds the last two observations.
  key, first_key = jax.random.split(jax.random.key(7))
  _, second_key = jax.random.split(key)
  first_obs = {"low_dim": np.stack([observations[0]["low_dim"]] * 2, axis=1)}
  second_obs = {"low_dim": np.stack([observations[-2]["low_dim"], observations[-1]["low_dim"]], axis=1)}
  for obs, sample_key, executed in ((first_obs, first_key, actions[:-1]), (second_obs, second_key, actions[-1:])):
    chunk = dpjax.sample(policy, obs, sample_key, method="ddim", num_inference_steps=3)
    want = np.asarray(policy_lib.action_steps_to_execute(spec, chunk))
    np.testing.assert_allclose(np.stack(executed, axis=1), want[:, :len(executed)], rtol=1e-6, atol=1e-5)

  controller.reset()
  controller.act(observations[0])
  assert controller.num_plans == 3   # a reset empties the queue: the next act plans again


def test_controller_refuses_non_finite_observations_instead_of_acting_on_them():
  controller = dpjax.RecedingHorizonController(smoke.random_policy(), jax.random.key(0))
  obs = {"low_dim": np.zeros((2, 20), np.float32)}
  obs["low_dim"][1, 3] = np.nan      # one environment's sensor dropped out
  with pytest.raises(ValueError, match="'low_dim' has 2 non-finite value"):
    controller.act(obs)


@pytest.mark.parametrize("n_action_steps, latency", [(8, 2), (8, 7), (4, 4)])
def test_latency_plans_early_runs_the_current_chunk_meanwhile_and_skips_what_passed(n_action_steps, latency):
  # (4, 4): latency == n_action_steps, the next plan due the moment a chunk arrives (once skipped every other plan).
  policy = smoke.random_policy()
  policy = policy.replace(spec=dataclasses.replace(policy.spec, n_action_steps=n_action_steps))
  spec = policy.spec   # smoke: horizon 16, n_obs_steps 2, so latency 0 to min(n, 15 - n)
  n = spec.n_action_steps
  rng = np.random.default_rng(1)
  observations = [{"low_dim": rng.uniform(0, 512, (2, 20)).astype(np.float32)} for _ in range(3 * n)]
  controller = control.RecedingHorizonController(policy, jax.random.key(3), method="ddim", num_inference_steps=2,
                                                 latency_steps=latency)
  actions = np.stack([controller.act(obs) for obs in observations], axis=1)   # [2, 3n, 2]

  # By hand: plan 1 at step 0 (waited for, nothing skipped) runs steps 0 to n - 1; plan k + 1 is made at step
  # nk - latency, from the two observations up to it, and runs steps nk to nk + n - 1 from its action 1 + latency.
  key = jax.random.key(3)
  plan_steps = [0] + [n * k - latency for k in (1, 2)]
  for k, step in enumerate(plan_steps):
    key, sample_key = jax.random.split(key)
    history = {"low_dim": np.stack([observations[max(step - 1, 0)]["low_dim"], observations[step]["low_dim"]], 1)}
    chunk = dpjax.sample(policy, history, sample_key, method="ddim", num_inference_steps=2)
    want = policy_lib.action_steps_to_execute(spec, chunk, skip=0 if k == 0 else latency)
    np.testing.assert_allclose(actions[:, n * k:n * k + n], want, rtol=1e-6, atol=1e-5)
  assert controller.num_plans == 4   # the fourth, for steps 3n to 4n - 1, was made at step 3n - latency


def test_latency_without_actions_to_skip_or_run_meanwhile_is_refused():
  with pytest.raises(ValueError, match=r"latency_steps=8: a chunk of 16 actions executing 8 from action 1 can skip "
                                       r"0 to 7"):
    control.RecedingHorizonController(smoke.random_policy(), jax.random.key(0), latency_steps=8)
  with pytest.raises(ValueError, match="latency_steps=-1"):
    control.RecedingHorizonController(smoke.random_policy(), jax.random.key(0), latency_steps=-1)
