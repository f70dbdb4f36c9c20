"""Train / validation episode split, identical to the original Diffusion Policy.

The original builds a validation mask (`get_val_mask`) and then subsamples the remaining training
episodes (`downsample_mask`), both with `np.random.default_rng(seed)`; reproducing the exact draws
keeps dpjax's paper runs on the same 90 training episodes of Push-T.
"""
import numpy as np


def split_episodes(num_episodes: int, val_ratio: float, max_train_episodes: int | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits episode ids into training and validation sets.

  Args:
    num_episodes: E, number of episodes.
    val_ratio: fraction for validation; n_val = min(max(1, round(E * val_ratio)), E - 1), and 0 when
      val_ratio <= 0.
    max_train_episodes: keep at most this many training episodes (random subset); None or 0: keep all.
    seed: seed of both draws, as in the original.

  Returns:
    (train_ids, val_ids): sorted, disjoint int64 arrays of episode indices.
  """
  if num_episodes < 1:
    raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
  if not 0 <= val_ratio < 1:
    raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
  if max_train_episodes is not None and max_train_episodes < 0:
    raise ValueError(f"max_train_episodes must be >= 0 (0 or None: no limit), got {max_train_episodes}")

  val_mask = np.zeros(num_episodes, dtype=bool)
  if val_ratio > 0:
    # At least one validation episode and at least one training episode.
    num_val = min(max(1, round(num_episodes * val_ratio)), num_episodes - 1)
    val_mask[np.random.default_rng(seed=seed).choice(num_episodes, size=num_val, replace=False)] = True

  train_ids = np.flatnonzero(~val_mask)
  if max_train_episodes and len(train_ids) > max_train_episodes:
    chosen = np.random.default_rng(seed=seed).choice(len(train_ids), size=int(max_train_episodes),
                                                     replace=False)
    train_ids = np.sort(train_ids[chosen])
  return train_ids.astype(np.int64), np.flatnonzero(val_mask).astype(np.int64)


def episode_step_mask(episode_ends: np.ndarray, episode_ids: np.ndarray) -> np.ndarray:
  """bool [N]: True on the steps of the given episodes (e.g. to fit a normalizer on train only)."""
  episode_ends = np.asarray(episode_ends)
  lengths = np.diff(episode_ends, prepend=0)
  selected = np.zeros(len(episode_ends), dtype=bool)
  selected[np.asarray(episode_ids, dtype=np.int64)] = True
  return np.repeat(selected, lengths)
