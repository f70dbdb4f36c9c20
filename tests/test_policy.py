"""The policy API: spec from config, `dpjax.sample` shapes, errors, and compile-once behaviour."""
import dataclasses

import jax
import numpy as np
import pytest

import dpjax
from dpjax import policy as policy_lib
from tests import smoke


def _policy(variant="smoke", obs_shapes=None):
  """A random-weight policy, built once per (variant, shapes) for the whole session (init compiles are slow)."""
  return smoke.random_policy(variant, tuple(sorted((obs_shapes or {"low_dim": (20,)}).items())))


def test_sample_batched_and_unbatched_shapes_and_range():
  policy = _policy()
  obs = {"low_dim": np.random.default_rng(1).uniform(0, 512, (3, 2, 20)).astype(np.float32)}
  actions = dpjax.sample(policy, obs, jax.random.key(0))
  assert actions.shape == (3, 16, 2)
  # Clipped x0 in [-1, 1] maps back inside the action range seen by the normaliser.
  lo, hi = policy_lib.normalizer_lib.unnormalize(policy.normalizer["action"], np.array([-1.0, 1.0])[:, None])
  assert np.all(np.asarray(actions) >= lo - 1e-3) and np.all(np.asarray(actions) <= hi + 1e-3)
  single = dpjax.sample(policy, {"low_dim": obs["low_dim"][0]}, jax.random.key(0))
  assert single.shape == (16, 2)


def test_sample_is_deterministic_given_key_and_ddim_works():
  policy = _policy()
  obs = {"low_dim": np.zeros((2, 2, 20), np.float32)}
  a = dpjax.sample(policy, obs, jax.random.key(3))
  b = dpjax.sample(policy, obs, jax.random.key(3))
  np.testing.assert_array_equal(a, b)
  c = dpjax.sample(policy, obs, jax.random.key(3), method="ddim", num_inference_steps=5)
  assert c.shape == (2, 16, 2)


def test_sample_from_given_noise_is_a_deterministic_map_for_ddim():
  policy = _policy()
  obs = {"low_dim": np.random.default_rng(2).uniform(0, 512, (2, 2, 20)).astype(np.float32)}
  noise = jax.random.normal(jax.random.key(5), (2, 16, 2))
  ddim = dict(method="ddim", num_inference_steps=5)
  a = dpjax.sample(policy, obs, jax.random.key(0), noise=noise, **ddim)
  b = dpjax.sample(policy, obs, jax.random.key(1), noise=noise, **ddim)
  np.testing.assert_array_equal(a, b)   # the key does not matter once the start is given
  other = dpjax.sample(policy, obs, jax.random.key(0), noise=-noise, **ddim)
  assert np.abs(np.asarray(other) - np.asarray(a)).max() > 1e-3   # the start does
  single = dpjax.sample(policy, {"low_dim": obs["low_dim"][1]}, jax.random.key(7), noise=noise[1], **ddim)
  np.testing.assert_allclose(single, a[1], atol=1e-5)
  # DDPM still draws fresh noise along the chain from the key.
  c = dpjax.sample(policy, obs, jax.random.key(0), noise=noise)
  d = dpjax.sample(policy, obs, jax.random.key(1), noise=noise)
  assert np.abs(np.asarray(c) - np.asarray(d)).max() > 1e-3


@pytest.mark.parametrize("noise, message", [
    (np.zeros((2, 16, 3), np.float32), r"starts from \[2, 16, 2\]"),
    (np.zeros((16, 2), np.float32), r"starts from \[2, 16, 2\]"),
    ([0.0] * 64, "noise has shape list"),
    (np.full((2, 16, 2), np.nan, np.float32), "non-finite"),
])
def test_sample_rejects_noise_of_the_wrong_shape_or_values(noise, message):
  obs = {"low_dim": np.zeros((2, 2, 20), np.float32)}
  with pytest.raises(ValueError, match=message):
    dpjax.sample(_policy(), obs, jax.random.key(0), noise=noise)


def test_sample_compiles_once_per_shape():
  policy = _policy()
  rng = np.random.default_rng(0)
  before = policy_lib._sample_batched._cache_size()
  dpjax.sample(policy, {"low_dim": rng.normal(size=(4, 2, 20))}, jax.random.key(0))
  dpjax.sample(policy, {"low_dim": rng.normal(size=(4, 2, 20))}, jax.random.key(1))
  # New observations and a new key reuse the compiled chain; a new batch shape compiles once more.
  assert policy_lib._sample_batched._cache_size() == before + 1
  dpjax.sample(policy, {"low_dim": rng.normal(size=(5, 2, 20))}, jax.random.key(1))
  assert policy_lib._sample_batched._cache_size() == before + 2


@pytest.mark.parametrize("obs, message", [
    ({"low_dim": np.zeros((2, 2, 19))}, r"expected \[B, 2, 20\]"),
    ({"state": np.zeros((2, 2, 20))}, "do not match"),
    ({"low_dim": np.zeros((2, 3, 20))}, r"expected \[B, 2, 20\]"),
])
def test_wrong_observations_name_the_expected_shape(obs, message):
  with pytest.raises(ValueError, match=message):
    dpjax.sample(_policy(), obs, jax.random.key(0))


def test_batch_sizes_must_agree_across_keys():
  policy = _policy("image,smoke", {"image": (96, 96, 3), "agent_pos": (2,)})
  obs = {"image": np.zeros((2, 2, 96, 96, 3), np.uint8), "agent_pos": np.zeros((3, 2, 2), np.float32)}
  with pytest.raises(ValueError, match="batch sizes differ"):
    dpjax.sample(policy, obs, jax.random.key(0))


def test_image_policy_samples():
  policy = _policy("image,smoke", {"image": (96, 96, 3), "agent_pos": (2,)})
  obs = {"image": np.zeros((2, 2, 96, 96, 3), np.uint8), "agent_pos": np.zeros((2, 2, 2), np.float32)}
  assert dpjax.sample(policy, obs, jax.random.key(0)).shape == (2, 16, 2)


def test_spec_round_trips_through_json_and_rejects_bad_choices():
  spec = _policy("transformer,smoke").spec
  assert policy_lib.PolicySpec.from_json(spec.to_json()) == spec
  config = smoke.smoke_config("unused")
  config.n_action_steps = 16
  with pytest.raises(ValueError, match="n_action_steps"):
    policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2)
  config = smoke.smoke_config("unused")
  with pytest.raises(ValueError, match="contain images"):
    policy_lib.spec_from_config(config, {"image": (96, 96, 3)}, 2)


_IMAGE_SHAPES = {"image": (96, 96, 3), "agent_pos": (2,)}


@pytest.mark.parametrize("obs,message", [
    ({"low_dim": np.full((1, 2, 20), np.nan, np.float32)}, r"'low_dim' has 40 non-finite value\(s\).*Repeat the last"),
    ({"low_dim": np.full((1, 2, 20), np.inf, np.float32)}, "non-finite"),
    ({"low_dim": np.zeros((1, 2, 20), np.int64)}, r"'low_dim' has dtype int64.*astype\(np.float32\)"),
    ({"low_dim": np.zeros((1, 2, 20), bool)}, "dtype bool"),
    ({"low_dim": np.zeros((1, 2, 20), np.complex64)}, "dtype complex64"),
    ({"low_dim": np.zeros((0, 2, 20), np.float32)}, r"batch is empty \(B = 0\)"),
    ({"low_dim": [[0.0] * 20] * 2}, r"'low_dim' is a list, not an array; pass np.asarray"),
])
def test_bad_observation_values_are_clear_errors(obs, message):
  with pytest.raises(ValueError, match=message):
    dpjax.sample(_policy(), obs, jax.random.key(0))


@pytest.mark.parametrize("key, shown", [
    (3, "int 3"), (jax.random.split(jax.random.key(0)), r"key<fry> array of shape \(2,\)"),
    (np.zeros(2, np.int32), r"int32 array of shape \(2,\)")])
def test_a_key_that_is_not_one_prng_key_is_a_clear_error(key, shown):
  obs = {"low_dim": np.zeros((1, 2, 20), np.float32)}
  with pytest.raises(ValueError, match=rf"key must be one PRNG key, e.g. jax.random.key\(0\) .*got a {shown}\."):
    dpjax.sample(_policy(), obs, key)
  np.testing.assert_array_equal(dpjax.sample(_policy(), obs, jax.random.PRNGKey(0)),   # legacy keys still work
                                dpjax.sample(_policy(), obs, jax.random.wrap_key_data(jax.random.PRNGKey(0))))


def test_float_images_are_rejected_and_float64_low_dim_is_accepted():
  policy = _policy("image,smoke", _IMAGE_SHAPES)
  obs = {"image": np.zeros((1, 2, 96, 96, 3), np.float32), "agent_pos": np.zeros((1, 2, 2), np.float32)}
  with pytest.raises(ValueError, match=r"'image' is an image of dtype float32; images must be uint8"):
    dpjax.sample(policy, obs, jax.random.key(0))
  float64 = {"low_dim": np.random.default_rng(0).uniform(0, 512, (2, 2, 20))}
  np.testing.assert_array_equal(dpjax.sample(_policy(), float64, jax.random.key(0)),
                                dpjax.sample(_policy(), {"low_dim": float64["low_dim"].astype(np.float32)},
                                             jax.random.key(0)))
  with pytest.raises(ValueError, match="must be a dict"):
    dpjax.sample(_policy(), np.zeros((1, 2, 20), np.float32), jax.random.key(0))


def test_flow_policy_samples_with_euler_heun_and_ancestral_and_refuses_ddpm():
  policy = _policy("flow,smoke")
  obs = {"low_dim": np.random.default_rng(2).uniform(0, 512, (3, 2, 20)).astype(np.float32)}
  euler = dpjax.sample(policy, obs, jax.random.key(0))
  heun = dpjax.sample(policy, obs, jax.random.key(0), method="heun", num_inference_steps=2)
  ancestral = [dpjax.sample(policy, obs, jax.random.key(seed), method="ancestral", num_inference_steps=3)
               for seed in (0, 1)]
  assert euler.shape == heun.shape == ancestral[0].shape == (3, 16, 2) and np.all(np.isfinite(heun))
  assert np.all(np.isfinite(ancestral[0])) and not np.allclose(ancestral[0], ancestral[1])   # stochastic
  # More steps than a DDPM's K are fine for a flow policy (its time is continuous).
  assert dpjax.sample(policy, obs, jax.random.key(0), num_inference_steps=policy.spec.num_diffusion_steps + 1).shape \
      == (3, 16, 2)
  with pytest.raises(ValueError, match="use one of \\('euler', 'heun', 'ancestral'\\)"):
    dpjax.sample(policy, obs, jax.random.key(0), method="ddim")


def test_timestep_spacing_is_a_sampling_choice():
  policy = _policy()
  obs = {"low_dim": np.random.default_rng(3).uniform(0, 512, (2, 2, 20)).astype(np.float32)}
  run = lambda pol, **kw: np.asarray(dpjax.sample(pol, obs, jax.random.key(0), method="ddim",  # noqa: E731
                                                  num_inference_steps=2, **kw))
  trailing = run(policy, timestep_spacing="trailing")
  np.testing.assert_array_equal(
      trailing, run(policy.replace(spec=dataclasses.replace(policy.spec, timestep_spacing="trailing"))))
  assert not np.allclose(trailing, run(policy))   # leading: a 2-step chain from k = 5 of the smoke K = 10
  with pytest.raises(ValueError, match="timestep_spacing='middle' is not one of"):
    run(policy, timestep_spacing="middle")


def test_sampler_must_match_the_objective_in_the_config():
  config = smoke.smoke_config("unused", "flow,smoke")
  config.diffusion.sampler = "ddpm"
  with pytest.raises(ValueError, match="does not apply to config.diffusion.objective='flow'"):
    policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2)
  config.diffusion.sampler = "ancestral"
  config.diffusion.flow_time_distribution = "logit-normal"
  with pytest.raises(ValueError, match="flow_time_distribution='logit-normal' is not one of"):
    policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2)
  config.diffusion.flow_time_distribution = "logit_normal"
  assert policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2).flow_time_distribution == "logit_normal"


@pytest.mark.parametrize("variant", ["smoke", "smoke,transformer"])
def test_conditioned_call_equals_the_whole_call(variant):
  # The chain runs `denoise_conditioned` on conditioning computed before its loop; it must be the same network.
  policy = _policy(variant)
  spec, net = policy.spec, policy_lib.PolicyNet(policy.spec)
  variables = {"params": policy.params}
  rng = np.random.default_rng(0)
  features = net.apply(variables, {"low_dim": rng.normal(size=(3, spec.n_obs_steps, 20)).astype(np.float32)}, False,
                       method=policy_lib.PolicyNet.encode)
  x = rng.normal(size=(3, spec.horizon, spec.action_dim)).astype(np.float32)
  k = np.array([0, 3, 9], np.int32)
  whole = net.apply(variables, x, k, features, False, method=policy_lib.PolicyNet.denoise)
  conditioning = net.apply(variables, k, features, method=policy_lib.PolicyNet.condition)
  split = net.apply(variables, x, conditioning, method=policy_lib.PolicyNet.denoise_conditioned)
  np.testing.assert_array_equal(split, whole)


def test_fused_sampling_is_an_inference_field_of_u_net_policies_only():
  """`fused_sampling` changes how the chain runs, not the weights: a spec with it on has the same network fields
  (a run resumes or evaluates either way), samples the same chunks on a CPU (which runs the XLA layers), and the
  transformer refuses it with the fix in the message."""
  policy = _policy()
  fused = policy.replace(spec=dataclasses.replace(policy.spec, fused_sampling=True))
  assert fused.spec.network_fields() == policy.spec.network_fields()
  assert policy_lib.PolicySpec.from_json(fused.spec.to_json()) == fused.spec
  obs = {"low_dim": np.random.default_rng(3).uniform(0, 512, (2, 2, 20)).astype(np.float32)}
  np.testing.assert_allclose(dpjax.sample(fused, obs, jax.random.key(0)), dpjax.sample(policy, obs, jax.random.key(0)),
                             rtol=1e-5, atol=1e-4)
  config = smoke.smoke_config("unused", "transformer,smoke")
  config.policy.fused_sampling = True
  with pytest.raises(ValueError, match="U-Net only.*leave it False"):
    policy_lib.spec_from_config(config, {"low_dim": (20,)}, 2)


def test_action_error_is_the_squared_distance_from_the_sampled_chunk_in_normalised_units():
  policy = _policy()
  rng = np.random.default_rng(4)
  # Observation steps past To are ignored, as in the loss: the batch carries a full window.
  obs = {"low_dim": rng.uniform(0, 512, (3, policy.spec.horizon, 20)).astype(np.float32)}
  key = jax.random.key(5)
  own = np.asarray(dpjax.sample(policy, {"low_dim": obs["low_dim"][:, :2]}, key))
  error = policy_lib.action_error(policy.params, policy.spec, policy.normalizer, {"obs": obs, "action": own}, key)
  assert float(error) < 1e-8
  # Moving every action by 0.1 in normalised units: scale (normalised per raw unit) converts it.
  shift = 0.1 / np.asarray(policy.normalizer["action"]["scale"])
  error = policy_lib.action_error(policy.params, policy.spec, policy.normalizer,
                                  {"obs": obs, "action": own + shift}, key)
  np.testing.assert_allclose(float(error), 0.01, rtol=1e-3)
