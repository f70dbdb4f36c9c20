"""Small synthetic Push-T replay buffers in the real zarr layout, for tests and smoke runs (no download needed).

Two kinds of values, picked with `values=`:

  "index"        recognisable values, so padding and episode boundaries can be checked by eye and in tests:
                     action[n]      = (n, episode)           n = global step index
                     state[n]       = (n, episode, n + 0.5, episode + 0.5, 0.25)
                     keypoint[n, k] = (n + k / 10, -(n + k / 10))
                     img[n]         = n % 256 everywhere (float32 0..255, like the official file)
  "random_walk"  smooth seeded random trajectories around the 512 x 512 workspace centre, with the action close
                 to the agent position as in the demonstrations: a learnable signal for training smoke runs.
"""
import pathlib
from typing import Sequence

import numpy as np

from dpjax.data import replay

VALUE_KINDS = ("index", "random_walk")


def _index_arrays(episode_lengths, image, image_size):
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
  return data


def _random_walk_arrays(episode_lengths, image, image_size, seed):
  rng = np.random.default_rng(seed)
  num_steps = int(sum(episode_lengths))
  walk = lambda dims: np.cumsum(rng.normal(0.0, 3.0, (num_steps, dims)), axis=0) + 256.0
  agent = walk(2)
  block = walk(3)
  data = {
      "action": (agent + rng.normal(0.0, 1.0, (num_steps, 2))).astype(np.float32),
      "state": np.concatenate([agent, block], axis=1).astype(np.float32),
      "keypoint": (block[:, None, :2] + rng.normal(0.0, 20.0, (1, 9, 2))).astype(np.float32),
  }
  if image:
    data["img"] = rng.integers(0, 256, (num_steps, image_size, image_size, 3)).astype(np.float32)
  return data


def synthetic_pusht_arrays(episode_lengths: Sequence[int], image: bool = True, image_size: int = 96,
                           values: str = "index", seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(data dict in the zarr layout, episode_ends) for episodes of the given lengths.

  Shapes: action [N, 2], state [N, 5], keypoint [N, 9, 2], img [N, image_size, image_size, 3] (if `image`),
  episode_ends [E], with N = sum(episode_lengths). `seed` only matters for values="random_walk".
  """
  if values not in VALUE_KINDS:
    raise ValueError(f"values={values!r}; choose from {VALUE_KINDS}")
  if len(episode_lengths) == 0 or min(episode_lengths) < 1:
    raise ValueError(f"episode_lengths={tuple(episode_lengths)}: need at least one episode, each >= 1 step")
  if values == "index":
    data = _index_arrays(episode_lengths, image, image_size)
  else:
    data = _random_walk_arrays(episode_lengths, image, image_size, seed)
  return data, np.cumsum(np.asarray(episode_lengths, dtype=np.int64))


def write_synthetic_pusht(path, episode_lengths: Sequence[int] = (20, 12, 30, 9, 25, 17), image: bool = True,
                          values: str = "index", seed: int = 0, chunk_steps: int = 16) -> pathlib.Path:
  """Writes a synthetic Push-T replay buffer (see `synthetic_pusht_arrays`) to `path` and returns the path."""
  data, episode_ends = synthetic_pusht_arrays(episode_lengths, image=image, values=values, seed=seed)
  replay.write_zarr_replay(path, data, episode_ends, chunk_steps=chunk_steps)
  return pathlib.Path(path)
