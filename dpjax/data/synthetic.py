"""Tiny synthetic Push-T replay buffers for tests and smoke runs (no real data needed).

Values are recognisable so padding and episode boundaries can be checked by eye and in tests:
    action[n]      = (n, episode)           n = global step index
    state[n]       = (n, episode, n + 0.5, episode + 0.5, 0.25)
    keypoint[n, k] = (n + k / 10, -(n + k / 10))
    img[n]         = n % 256 everywhere (stored as float32 0..255, like the official file)
"""
import pathlib
from typing import Sequence

import numpy as np

from dpjax.data import replay


def synthetic_pusht_arrays(episode_lengths: Sequence[int], image: bool = True,
                           image_size: int = 96) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(data dict in the zarr layout, episode_ends) for episodes of the given lengths."""
  episode_ends = np.cumsum(np.asarray(episode_lengths, dtype=np.int64))
  num_steps = int(episode_ends[-1])
  step = np.arange(num_steps, dtype=np.float32)
  episode = np.repeat(np.arange(len(episode_lengths), dtype=np.float32), episode_lengths)
  keypoint_x = step[:, None] + np.arange(9, dtype=np.float32)[None] / 10
  data = {
      "action": np.stack([step, episode], axis=1),
      "state": np.stack([step, episode, step + 0.5, episode + 0.5, np.full_like(step, 0.25)], axis=1),
      "keypoint": np.stack([keypoint_x, -keypoint_x], axis=-1),
  }
  if image:
    data["img"] = np.broadcast_to((step % 256)[:, None, None, None],
                                  (num_steps, image_size, image_size, 3)).astype(np.float32)
  return data, episode_ends


def write_synthetic_pusht(path, episode_lengths: Sequence[int] = (20, 12, 30, 9, 25, 17),
                          image: bool = True, chunk_steps: int = 16) -> pathlib.Path:
  """Writes a synthetic Push-T replay buffer to `path` and returns the path."""
  data, episode_ends = synthetic_pusht_arrays(episode_lengths, image=image)
  replay.write_zarr_replay(path, data, episode_ends, chunk_steps=chunk_steps)
  return pathlib.Path(path)
