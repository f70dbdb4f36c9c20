"""Tests for dpjax.nets.embeddings."""
import math

import numpy as np
import jax.numpy as jnp
import pytest

from dpjax.nets.embeddings import sinusoidal_embedding


def _reference(k, dim):
  """The original SinusoidalPosEmb, written out in NumPy."""
  half = dim // 2
  freqs = np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))
  angles = np.asarray(k, np.float64)[:, None] * freqs[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def test_matches_original_formula():
  k = np.array([0, 1, 7, 99], np.int32)
  out = sinusoidal_embedding(jnp.asarray(k), 16)
  assert out.shape == (4, 16)
  np.testing.assert_allclose(np.asarray(out), _reference(k, 16), atol=1e-5)


def test_step_zero_is_zeros_then_ones():
  out = np.asarray(sinusoidal_embedding(jnp.zeros((1,), jnp.int32), 8))
  np.testing.assert_array_equal(out, [[0, 0, 0, 0, 1, 1, 1, 1]])


@pytest.mark.parametrize("dim", [2, 7])
def test_rejects_bad_width(dim):
  with pytest.raises(ValueError, match="even"):
    sinusoidal_embedding(jnp.zeros((1,)), dim)
