"""Several Push-T environments stepped in lockstep, with batched observations for a batched policy.

A plain in-process loop: one pymunk step of a 0.1 s control period costs well under a millisecond, far below the
policy's sampling time, so worker processes would add more overhead than they save.
"""
from typing import Sequence

import numpy as np

from dpjax.envs import pusht


class PushTVectorEnv:
  """`num_envs` `PushTEnv`s that advance together.

  Observations are dicts of stacked arrays with the training batches' key names:
    obs_type="lowdim": {"low_dim": float32 [N, 20]}
    obs_type="image":  {"image": uint8 [N, 96, 96, 3], "agent_pos": float32 [N, 2]}
    obs_type="arrays": the dataset's arrays named in `arrays`, e.g. {"keypoint": [N, 9, 2], "state": [N, 5]}
  An environment that has terminated stays frozen: it is not stepped again, and keeps returning its last
  observation and reward (and done=True) until the next `reset`.
  """

  def __init__(self, num_envs, obs_type="lowdim", render_size=96, arrays=("keypoint", "n_contacts", "state")):
    self.num_envs = num_envs
    self.obs_type = obs_type
    self.envs = [pusht.PushTEnv(obs_type=obs_type, render_size=render_size, arrays=arrays) for _ in range(num_envs)]
    self._last_obs = [None] * num_envs
    self._last_reward = np.zeros(num_envs, dtype=np.float64)
    self._last_info = [{} for _ in range(num_envs)]
    self._done = np.zeros(num_envs, dtype=bool)

  def reset(self, seeds: Sequence[int]):
    """Resets environment i to the original start for seeds[i]. Returns the batched observation."""
    return self._reset_all([lambda env, s=seed: env.reset(s) for seed in self._check_len(seeds)])

  def reset_to_states(self, states):
    """Resets environment i exactly to states[i] ([N, 5]). Returns the batched observation."""
    return self._reset_all([lambda env, s=state: env.reset_to_state(s) for state in self._check_len(states)])

  def step(self, actions):
    """Steps every environment that is not done.

    Args:
      actions: [N, 2] target positions.

    Returns:
      obs (batched dict), rewards float64 [N], dones bool [N], infos (list of N info dicts; a frozen environment
      repeats its last info).
    """
    actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, 2)
    for i, env in enumerate(self.envs):
      if self._done[i]:
        continue
      obs, reward, done, info = env.step(actions[i])
      self._last_obs[i], self._last_reward[i], self._last_info[i] = obs, reward, info
      self._done[i] = done
    return self._stack(), self._last_reward.copy(), self._done.copy(), list(self._last_info)

  def render(self, size=256):
    """uint8 [N, size, size, 3] frames with the goal and the latest commanded targets, for videos."""
    return np.stack([env.render(size) for env in self.envs])

  def _check_len(self, values):
    if len(values) != self.num_envs:
      raise ValueError(f"expected {self.num_envs} values, got {len(values)}")
    return values

  def _reset_all(self, resets):
    self._last_obs = [reset(env) for reset, env in zip(resets, self.envs)]
    self._last_reward[:] = 0.0
    self._last_info = [{} for _ in range(self.num_envs)]
    self._done[:] = False
    return self._stack()

  def _stack(self):
    if self.obs_type == "lowdim":
      return {"low_dim": np.stack(self._last_obs)}
    return {key: np.stack([obs[key] for obs in self._last_obs]) for key in self._last_obs[0]}
