"""Linear normalizer as a plain pytree, applied identically in training and at inference.

    normalizer = {"obs": {key: {"scale": f32 [D], "offset": f32 [D]}}, "action": {"scale", "offset"}}
    normalize(stats, x)   = x * scale + offset
    unnormalize(stats, y) = (y - offset) / scale

Stats act on the last axis, so one (D,) pair serves [N, D], [B, T, D] and [B, T, H, W, C] alike.
`normalize`/`unnormalize` are arithmetic only, so the same function runs on numpy batches and inside
jitted JAX code (stats may be numpy or jax arrays).
"""
from typing import Any, Mapping

import numpy as np

# Dims whose range is below this are shifted, not scaled (the original's range_eps).
RANGE_EPS = 1e-4
OUTPUT_MIN, OUTPUT_MAX = -1.0, 1.0

Stats = dict[str, Any]  # {"scale": [D], "offset": [D]}
Normalizer = dict[str, Any]


def fit_minmax(x: np.ndarray, range_eps: float = RANGE_EPS) -> Stats:
  """Per-last-dim min-max stats mapping the data range onto [-1, 1].

  As the original SingleFieldLinearNormalizer (mode "limits"): a dim with range < range_eps keeps
  scale 1 and is shifted so its minimum maps to the middle of the output range, 0.

  Args:
    x: [N, ..., D] finite data.

  Returns:
    {"scale": float32 [D], "offset": float32 [D]}.
  """
  x = np.asarray(x)
  if x.ndim < 1 or x.size == 0:
    raise ValueError(f"cannot fit a normalizer on an empty array of shape {x.shape}")
  flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
  if not np.all(np.isfinite(flat)):
    raise ValueError("cannot fit a normalizer on data containing NaN/inf")
  low, high = flat.min(axis=0), flat.max(axis=0)
  data_range = high - low
  constant = data_range < range_eps
  scale = (OUTPUT_MAX - OUTPUT_MIN) / np.where(constant, OUTPUT_MAX - OUTPUT_MIN, data_range)
  offset = np.where(constant, (OUTPUT_MAX + OUTPUT_MIN) / 2 - low, OUTPUT_MIN - scale * low)
  return {"scale": scale.astype(np.float32), "offset": offset.astype(np.float32)}


def image_stats(channels: int = 3) -> Stats:
  """Maps uint8 pixel values [0, 255] to [-1, 1]; shaped (C,) to broadcast over [..., H, W, C]."""
  return {"scale": np.full((channels,), 2.0 / 255.0, np.float32),
          "offset": np.full((channels,), -1.0, np.float32)}


def normalize(stats: Stats, x):
  """x * scale + offset in float32 (uint8 images are cast first); numpy in, numpy out; jax in, jax out."""
  return x.astype("float32") * stats["scale"] + stats["offset"]


def unnormalize(stats: Stats, y):
  """Exact algebraic inverse of `normalize`."""
  return (y.astype("float32") - stats["offset"]) / stats["scale"]


def normalize_obs(normalizer: Normalizer, obs: Mapping[str, Any]) -> dict:
  """Normalizes every observation key with its own stats."""
  missing = [k for k in obs if k not in normalizer["obs"]]
  if missing:
    raise KeyError(f"normalizer has no stats for obs keys {missing}; it has {sorted(normalizer['obs'])}")
  return {key: normalize(normalizer["obs"][key], value) for key, value in obs.items()}


def is_image(per_step_shape: tuple[int, ...]) -> bool:
  """An observation whose per-step shape is (H, W, C) is a camera image."""
  return len(per_step_shape) == 3


def fit_normalizer(obs: Mapping[str, np.ndarray], action: np.ndarray) -> Normalizer:
  """Fits min-max stats on low-dim keys and the action; images get the fixed [0, 255] map.

  Args:
    obs: key -> [N, ...] per-step arrays (the steps to fit on).
    action: [N, Da].
  """
  stats = {key: image_stats(value.shape[-1]) if is_image(value.shape[1:]) else fit_minmax(value)
           for key, value in obs.items()}
  return {"obs": stats, "action": fit_minmax(action)}


def to_json_tree(tree):
  """Normaliser -> nested dicts of float lists (JSON-ready; float32 round trip is bit-exact)."""
  if isinstance(tree, Mapping):
    return {key: to_json_tree(value) for key, value in tree.items()}
  # float(np.float32) is exact in float64, and json writes float64 with round-trip (repr) precision.
  return [float(v) for v in np.asarray(tree, dtype=np.float32).reshape(-1)]


def from_json_tree(tree):
  """Inverse of `to_json_tree`: float32 numpy leaves."""
  if isinstance(tree, Mapping):
    return {key: from_json_tree(value) for key, value in tree.items()}
  return np.asarray(tree, dtype=np.float32)

