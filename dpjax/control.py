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

With `latency_steps=d` it acts as a robot whose policy takes d control steps to answer: the next chunk is planned
from the observations d steps before the current chunk's actions run out, the robot keeps executing those d actions
meanwhile, and the new chunk's first d actions, whose time has passed when it arrives, are skipped (as the
original's real-robot runner drops actions whose timestamps are past). The episode's first plan is waited for.
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


def check_frame_shapes(obs: Mapping[str, np.ndarray], spec: policy_lib.PolicySpec) -> None:
  """A ValueError unless each observation the spec names is one frame of N environments, [N, *per-step shape]."""
  for key, shape in spec.obs_shapes:
    if key in obs and np.shape(obs[key])[1:] != tuple(shape):
      raise ValueError(f"Observation {key!r} has shape {np.shape(obs[key])}; the controller takes one frame of N "
                       f"environments, [N, {', '.join(map(str, shape))}] (one environment: {{key: value[None]}}).")


def check_latency_steps(latency_steps: int, spec: policy_lib.PolicySpec) -> None:
  """A ValueError unless a chunk has `latency_steps` actions to skip and the current chunk as many to run meanwhile."""
  most = min(spec.n_action_steps, spec.horizon - spec.n_obs_steps + 1 - spec.n_action_steps)
  if not 0 <= latency_steps <= most:
    raise ValueError(f"latency_steps={latency_steps}: a chunk of {spec.horizon} actions executing "
                     f"{spec.n_action_steps} from action {spec.n_obs_steps - 1} can skip 0 to {most} (the "
                     "actions left after those it executes, and no more than it executes).")


class RecedingHorizonController:
  """Plans action chunks with a policy and executes `n_action_steps` of each before re-planning.

  `num_plans` counts the policy calls; `last_plan_obs` is the raw observation history {key: [N, n_obs_steps, ...]}
  the latest one planned from (None before the first), e.g. to record the states a policy visits.
  `latency_steps`: the control steps the policy takes to answer (module docstring; 0: it answers at once).
  """

  def __init__(self, policy: policy_lib.Policy, key: jax.Array, *, method: str | None = None,
               num_inference_steps: int | None = None, latency_steps: int = 0):
    check_latency_steps(latency_steps, policy.spec)
    policy_lib.check_key(key)
    self.policy = policy_lib.for_sampling(policy)   # weights cast once, not at every chunk
    self._key = key
    self._method = method
    self._num_inference_steps = num_inference_steps
    self._latency_steps = latency_steps
    self._history = None
    self._queue = []
    self._pending = None   # the chunk planned latency_steps before the queue runs out, until it does
    self.num_plans = 0
    self.last_plan_obs = None

  def reset(self) -> None:
    """Forgets the observation history and queued actions (call at the start of every episode)."""
    self._history = None
    self._queue = []
    self._pending = None

  def _plan(self, skip: int) -> list[np.ndarray]:
    """The executed actions [N, action_dim] of a chunk planned from the history, its first `skip` left out."""
    self._key, sample_key = jax.random.split(self._key)
    self.last_plan_obs = self._history.stacked()
    chunk = policy_lib.sample(self.policy, self.last_plan_obs, sample_key, method=self._method,
                              num_inference_steps=self._num_inference_steps)
    chunk = np.asarray(policy_lib.action_steps_to_execute(self.policy.spec, chunk, skip))
    self.num_plans += 1
    return [chunk[:, t] for t in range(chunk.shape[1])]

  def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Takes the newest raw observation {key: [N, ...]} and returns the next actions [N, action_dim]."""
    if self._history is None:
      check_frame_shapes(obs, self.policy.spec)
      self._history = ObservationHistory(obs, self.policy.spec.n_obs_steps)
    else:
      self._history.push(obs)
    if not self._queue and self._pending is not None:   # the chunk planned latency_steps ago arrives
      self._queue, self._pending = self._pending, None
    if not self._queue:   # the episode's first plan (or any, without latency)
      self._queue = self._plan(skip=0)
    # After the swap: with latency_steps == n_action_steps the arriving chunk is when the next must be planned.
    if self._latency_steps and self._pending is None and len(self._queue) == self._latency_steps:
      self._pending = self._plan(skip=self._latency_steps)
    return self._queue.pop(0)
