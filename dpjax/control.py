"""Receding-horizon control with a diffusion policy, for a simulator or a robot.

    controller = dpjax.RecedingHorizonController(policy, jax.random.key(0))
    obs = env.reset()                       # {key: [N, ...]} raw observations of N environments
    controller.reset()
    while running:
      action = controller.act(obs)          # [N, action_dim]
      obs = env.step(action)

The controller keeps the last `n_obs_steps` observations (the first one repeated while the history is short), plans
a `horizon`-step chunk with `dpjax.sample` when its queue is empty, and hands out actions
[n_obs_steps - 1, n_obs_steps - 1 + n_action_steps) of the chunk one control step at a time before re-planning.
All environments share one policy call per re-planning step. Host-side state only (numpy); the policy call is the
jitted `dpjax.sample`, compiled once per number of environments.
"""
from typing import Mapping

import jax
import numpy as np

from dpjax import policy as policy_lib


class ObservationHistory:
  """The last `n` observations of every environment, stacked on axis 1: {key: [N, n, ...]}."""

  def __init__(self, first_obs: Mapping[str, np.ndarray], n: int):
    if n < 1:
      raise ValueError(f"ObservationHistory needs n >= 1, got {n}.")
    self._frames = {k: np.repeat(np.asarray(v)[:, None], n, axis=1) for k, v in first_obs.items()}

  def push(self, obs: Mapping[str, np.ndarray]) -> None:
    if set(obs) != set(self._frames):
      raise ValueError(f"Observation keys {sorted(obs)} differ from the history's {sorted(self._frames)}; give the "
                       "same keys every step (call reset() before an episode with other observations).")
    for k, v in obs.items():
      v = np.asarray(v)
      expected = self._frames[k].shape[:1] + self._frames[k].shape[2:]
      if v.shape != expected:
        raise ValueError(f"Observation {k!r} has shape {v.shape}; expected {expected} ([N, ...] as at the episode's "
                         "first step; call reset() before an episode with another number of environments).")
      self._frames[k] = np.concatenate([self._frames[k][:, 1:], v[:, None]], axis=1)

  def stacked(self) -> dict[str, np.ndarray]:
    return dict(self._frames)


class RecedingHorizonController:
  """Plans action chunks with a policy and executes `n_action_steps` of each before re-planning.

  `num_plans` counts the policy calls; `last_plan_obs` is the raw observation history {key: [N, n_obs_steps, ...]}
  the latest one planned from (None before the first), e.g. to record the states a policy visits.
  """

  def __init__(self, policy: policy_lib.Policy, key: jax.Array, *, method: str | None = None,
               num_inference_steps: int | None = None):
    self.policy = policy_lib.for_sampling(policy)   # weights cast once, not at every chunk
    self._key = key
    self._method = method
    self._num_inference_steps = num_inference_steps
    self._history = None
    self._queue = []
    self.num_plans = 0
    self.last_plan_obs = None

  def reset(self) -> None:
    """Forgets the observation history and queued actions (call at the start of every episode)."""
    self._history = None
    self._queue = []

  def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Takes the newest raw observation {key: [N, ...]} and returns the next actions [N, action_dim]."""
    if self._history is None:
      self._history = ObservationHistory(obs, self.policy.spec.n_obs_steps)
    else:
      self._history.push(obs)
    if not self._queue:
      self._key, sample_key = jax.random.split(self._key)
      self.last_plan_obs = self._history.stacked()
      chunk = policy_lib.sample(self.policy, self.last_plan_obs, sample_key, method=self._method,
                                num_inference_steps=self._num_inference_steps)
      chunk = np.asarray(policy_lib.action_steps_to_execute(self.policy.spec, chunk))
      self._queue = [chunk[:, t] for t in range(chunk.shape[1])]
      self.num_plans += 1
    return self._queue.pop(0)
