"""Fixed-length training windows over episodes, padded by repeating edge steps.

Same windows as the original `create_indices` / `SequenceSampler.sample_sequence`, with
sequence_length = horizon T, pad_before = To - 1 and pad_after = Ta - 1: every step of an episode can
be the "current" observation, the first windows repeat step 0 and the last windows repeat the final
step. A window never crosses an episode boundary.

The padding is expressed as a precomputed table of step indices per window, clipped to the episode, so
sampling a batch is one numpy fancy-indexing gather per key (no Python loop over samples).
"""
from typing import Mapping

import numpy as np


def create_indices(episode_ends: np.ndarray, sequence_length: int, episode_ids: np.ndarray,
                   pad_before: int = 0, pad_after: int = 0) -> np.ndarray:
  """Window table of the original sampler, for the selected episodes only.

  Args:
    episode_ends: int [E], exclusive end step of each episode.
    sequence_length: T, steps per window.
    episode_ids: episodes to take windows from (any order; windows follow this order).
    pad_before / pad_after: steps a window may start before / end after its episode (clipped to
      [0, T - 1] as in the original).

  Returns:
    int64 [W, 4] rows (buffer_start, buffer_end, sample_start, sample_end): window positions
    sample_start:sample_end hold steps buffer_start:buffer_end, the rest repeat the edge step.
    W = sum over episodes of max(0, L + pad_before + pad_after - T + 1).
  """
  if sequence_length < 1:
    raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
  episode_ends = np.asarray(episode_ends, dtype=np.int64)
  pad_before = min(max(pad_before, 0), sequence_length - 1)
  pad_after = min(max(pad_after, 0), sequence_length - 1)
  rows = []
  for i in np.asarray(episode_ids, dtype=np.int64):
    start = int(episode_ends[i - 1]) if i > 0 else 0
    length = int(episode_ends[i]) - start
    offsets = np.arange(-pad_before, length - sequence_length + pad_after + 1, dtype=np.int64)
    buffer_start = np.maximum(offsets, 0) + start
    buffer_end = np.minimum(offsets + sequence_length, length) + start
    sample_start = buffer_start - (offsets + start)
    sample_end = sequence_length - ((offsets + sequence_length + start) - buffer_end)
    rows.append(np.stack([buffer_start, buffer_end, sample_start, sample_end], axis=1))
  if not rows:
    return np.zeros((0, 4), dtype=np.int64)
  return np.concatenate(rows, axis=0)


def window_steps(indices: np.ndarray, sequence_length: int) -> np.ndarray:
  """int64 [W, T] buffer step read at each window position (edge steps repeated).

  Position j reads buffer_start - sample_start + j, clipped into [buffer_start, buffer_end - 1]; this
  equals the original's "fill before with sample[0], after with sample[-1]".
  """
  indices = np.asarray(indices, dtype=np.int64).reshape(-1, 4)
  buffer_start, buffer_end, sample_start = indices[:, 0:1], indices[:, 1:2], indices[:, 2:3]
  steps = buffer_start - sample_start + np.arange(sequence_length, dtype=np.int64)[None]
  return np.clip(steps, buffer_start, buffer_end - 1)


def gather_windows(obs: Mapping, action, steps, n_obs_steps: int) -> dict:
  """Windows read at `steps` ([..., T] buffer steps, from the window table): {"obs": {key: [..., To, ...]},
  "action": [..., T, Da]}. Plain indexing, so the same function serves numpy arrays on the host and jax arrays
  inside a jitted step (`device_data.gather`)."""
  obs_steps = steps[..., :n_obs_steps]
  return {"obs": {key: value[obs_steps] for key, value in obs.items()}, "action": action[steps]}


class SequenceSource:
  """Grain random-access source of training windows.

  Item i: {"obs": {key: [To, ...]}, "action": float32 [T, Da]}; low-dim obs float32, images uint8.
  `gather_batch` returns the same with a leading batch axis and is what the pipeline uses.
  """

  def __init__(self, obs: Mapping[str, np.ndarray], action: np.ndarray, indices: np.ndarray,
               horizon: int, n_obs_steps: int):
    """
    Args:
      obs: key -> [N, ...] per-step arrays (float32, or uint8 images); shared, not copied.
      action: float32 [N, Da].
      indices: int [W, 4] from `create_indices` with sequence_length == horizon.
      horizon: T.
      n_obs_steps: To <= T; only the first To steps of each window's observations are returned.
    """
    action = np.asarray(action)
    if action.ndim != 2 or action.dtype != np.float32:
      raise ValueError(f"action must be float32 [N, Da], got {action.dtype} {action.shape}")
    num_steps = action.shape[0]
    for key, value in obs.items():
      if value.shape[0] != num_steps:
        raise ValueError(f"obs[{key!r}] has {value.shape[0]} steps, action has {num_steps}")
      if value.dtype not in (np.float32, np.uint8):
        raise ValueError(f"obs[{key!r}] must be float32 or uint8 (images), got {value.dtype}")
    if not 1 <= n_obs_steps <= horizon:
      raise ValueError(f"need 1 <= n_obs_steps <= horizon, got {n_obs_steps}, {horizon}")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, 4)
    if len(indices) and (indices[:, 0].min() < 0 or indices[:, 1].max() > num_steps):
      raise ValueError(f"window indices point outside the {num_steps} steps of the data")
    self.obs = dict(obs)
    self.action = action
    self.indices = indices
    self.horizon = horizon
    self.n_obs_steps = n_obs_steps
    self._steps = window_steps(indices, horizon)  # [W, T]

  @classmethod
  def from_episodes(cls, obs: Mapping[str, np.ndarray], action: np.ndarray, episode_ends: np.ndarray,
                    episode_ids: np.ndarray, horizon: int, n_obs_steps: int,
                    n_action_steps: int) -> "SequenceSource":
    """Windows of the given episodes with the paper's padding (To - 1 before, Ta - 1 after)."""
    indices = create_indices(episode_ends, horizon, episode_ids, pad_before=n_obs_steps - 1,
                             pad_after=n_action_steps - 1)
    return cls(obs, action, indices, horizon, n_obs_steps)

  def __len__(self) -> int:
    return self._steps.shape[0]

  @property
  def steps_table(self) -> np.ndarray:
    """int64 [W, T]: the buffer step each window reads at each position (`window_steps`)."""
    return self._steps

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"window {index} out of range for {len(self)} windows")
    return self._gather(self._steps[index])

  def gather_batch(self, window_ids: np.ndarray) -> dict:
    """Batch of windows: {"obs": {key: [B, To, ...]}, "action": float32 [B, T, Da]}."""
    window_ids = np.asarray(window_ids, dtype=np.int64)
    if window_ids.ndim != 1:
      raise ValueError(f"window_ids must be 1-D, got shape {window_ids.shape}")
    return self._gather(self._steps[window_ids])

  def _gather(self, steps: np.ndarray) -> dict:
    return gather_windows(self.obs, self.action, steps, self.n_obs_steps)

  def __repr__(self) -> str:
    return (f"SequenceSource(windows={len(self)}, horizon={self.horizon}, n_obs_steps={self.n_obs_steps}, "
            f"obs_keys={sorted(self.obs)})")
