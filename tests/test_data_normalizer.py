"""Min-max normalizer: range, inverse, constant dims, images, numpy/jax, save/load."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.data import normalizer as norm


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-50, 500, size=(200, 20)) * rng.uniform(0.01, 3, size=20)
  x = x.astype(np.float32)
  x[:, 7] = 3.25  # one constant dim
  return x


def test_minmax_range_is_minus_one_to_one():
  x = _data()
  stats = norm.fit_minmax(x)
  assert stats["scale"].shape == (20,) and stats["scale"].dtype == np.float32
  y = norm.normalize(stats, x)
  assert y.dtype == np.float32
  varying = np.arange(20) != 7
  np.testing.assert_allclose(y.min(axis=0)[varying], -1.0, atol=1e-6)
  np.testing.assert_allclose(y.max(axis=0)[varying], 1.0, atol=1e-6)
  assert np.all(y >= -1 - 1e-6) and np.all(y <= 1 + 1e-6)


def test_constant_dim_is_shifted_not_scaled():
  x = _data()
  stats = norm.fit_minmax(x)
  # As the original SingleFieldLinearNormalizer: scale 1, minimum moved to the middle of [-1, 1].
  assert stats["scale"][7] == 1.0 and stats["offset"][7] == np.float32(-3.25)
  np.testing.assert_array_equal(norm.normalize(stats, x)[:, 7], 0.0)
  tiny = np.stack([np.linspace(0, 5e-5, 10), np.linspace(0, 1, 10)], axis=1)
  assert norm.fit_minmax(tiny)["scale"][0] == 1.0


def test_round_trip_numpy_and_per_last_dim_broadcast():
  x = _data()
  stats = norm.fit_minmax(x)
  np.testing.assert_allclose(norm.unnormalize(stats, norm.normalize(stats, x)), x, rtol=1e-6, atol=1e-4)
  windows = x[:32].reshape(4, 8, 20)  # [B, T, D] uses the same (D,) stats
  np.testing.assert_array_equal(norm.normalize(stats, windows),
                                norm.normalize(stats, x[:32]).reshape(4, 8, 20))


def test_works_on_jax_arrays_and_under_jit():
  x = _data()
  stats = norm.fit_minmax(x)
  y_np = norm.normalize(stats, x)
  y_jax = norm.normalize(stats, jnp.asarray(x))
  assert isinstance(y_jax, jax.Array)
  np.testing.assert_allclose(np.asarray(y_jax), y_np, rtol=1e-6, atol=1e-6)
  device_stats = jax.tree.map(jnp.asarray, stats)
  round_trip = jax.jit(lambda s, v: norm.unnormalize(s, norm.normalize(s, v)))(device_stats, jnp.asarray(x))
  assert isinstance(round_trip, jax.Array)
  np.testing.assert_allclose(np.asarray(round_trip), x, rtol=1e-6, atol=1e-4)


def test_image_stats_map_0_255_to_unit_range():
  stats = norm.image_stats()
  assert stats["scale"].shape == (3,)
  image = np.array([0, 255, 51], np.uint8)[:, None, None, None] * np.ones((3, 4, 4, 3), np.uint8)
  for x in (image, jnp.asarray(image)):
    y = norm.normalize(stats, x)
    assert y.dtype == np.float32 and y.shape == (3, 4, 4, 3)
    np.testing.assert_allclose(np.asarray(y)[:, 0, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)


def test_fit_normalizer_structure_and_normalize_obs():
  obs = {"image": np.zeros((10, 8, 8, 3), np.uint8), "agent_pos": _data()[:10, :2]}
  action = _data(1)[:10, :2]
  normalizer = norm.fit_normalizer(obs, action)
  assert set(normalizer) == {"obs", "action"} and set(normalizer["obs"]) == {"image", "agent_pos"}
  np.testing.assert_array_equal(normalizer["obs"]["image"]["scale"], norm.image_stats()["scale"])
  out = norm.normalize_obs(normalizer, {k: v[:, None] for k, v in obs.items()})
  assert out["image"].shape == (10, 1, 8, 8, 3) and out["image"].dtype == np.float32
  np.testing.assert_allclose(norm.unnormalize(normalizer["action"], norm.normalize(normalizer["action"], action)),
                             action, rtol=1e-6, atol=1e-4)
  with pytest.raises(KeyError, match="no stats"):
    norm.normalize_obs(normalizer, {"low_dim": action})


def test_json_round_trip_is_bit_exact():
  """What checkpoints store (their meta JSON): float32 values survive exactly."""
  normalizer = norm.fit_normalizer({"low_dim": _data()}, _data(2)[:, :2])
  loaded = norm.from_json_tree(json.loads(json.dumps(norm.to_json_tree(normalizer))))
  assert jax.tree.structure(loaded) == jax.tree.structure(normalizer)
  for a, b in zip(jax.tree.leaves(normalizer), jax.tree.leaves(loaded)):
    assert b.dtype == np.float32
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_fit_rejects_nan():
  x = _data()
  x[3, 3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    norm.fit_minmax(x)
