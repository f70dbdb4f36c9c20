"""Tests for dpjax.nets.conv_block_kernel: the Pallas conv-block epilogue against the XLA layers, in Pallas'
interpreter (the kernel the GPU compiles, run on the CPU), and its bad-input errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.nets import conv_block_kernel, unet1d

EPS = 1e-5


def _reference(x, kernel, bias, scale, shift, n_groups, film=None, film_offset=0, residual=None,
               residual_bias=None):
  """The U-Net's XLA layers: im2col convolution + bias, flax GroupNorm, Mish, FiLM, residual (float32)."""
  y = unet1d.conv1d_im2col(x, kernel, 1, kernel.shape[0] // 2) + bias
  y = nn.GroupNorm(num_groups=n_groups, epsilon=EPS).apply({"params": {"scale": scale, "bias": shift}}, y)
  y = jax.nn.mish(y)
  channels = y.shape[-1]
  if film is not None:
    y = film[..., film_offset:film_offset + channels] * y + film[..., film_offset + channels:film_offset + 2 * channels]
  if residual is not None:
    y = y + residual + (0 if residual_bias is None else residual_bias)
  return y


@pytest.mark.parametrize("batch,length,c_in,channels,taps,n_groups", [
    (1, 16, 2, 32, 5, 8), (2, 4, 16, 64, 5, 8), (1, 8, 8, 16, 3, 4), (3, 6, 4, 16, 5, 2)])
def test_kernel_matches_the_xla_layers(batch, length, c_in, channels, taps, n_groups):
  """Shifted taps, bias, GroupNorm, Mish, FiLM read at an offset in a wider array, residual with its bias: the
  same numbers as the layers to float32 rounding, for short and long blocks (taps reaching past both ends)."""
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  x, kernel = normal(batch, length, c_in), normal(taps, c_in, channels) / np.sqrt(taps * c_in)
  bias, scale, shift = normal(channels), 1 + 0.1 * normal(channels), normal(channels)
  film = normal(batch, 1, 6 * channels)
  residual, residual_bias = normal(batch, length, channels), normal(channels)
  tap_products = unet1d.tap_products(x, kernel)
  cases = [dict(), dict(film=film, film_offset=2 * channels), dict(residual=residual),
           dict(residual=residual, residual_bias=residual_bias), dict(film=film, residual=residual)]
  for extra in cases:
    got = conv_block_kernel.conv_block_epilogue(
        tap_products, bias, scale, shift, n_groups=n_groups, padding=taps // 2, eps=EPS, out_dtype=jnp.float32,
        interpret=True, **extra)
    want = _reference(x, kernel, bias, scale, shift, n_groups, **extra)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=str(list(extra)))


def test_kernel_output_dtype_and_statistics_in_float32():
  """bfloat16 out, float32 inside: values on a large offset (1000 + noise) normalise as float64 NumPy does them
  (bfloat16 statistics would keep ~2 significant digits of 1000 and lose the noise)."""
  rng = np.random.default_rng(1)
  taps = 1000.0 + rng.normal(size=(3, 1, 8, 16))
  ones, zeros = jnp.ones(16), jnp.zeros(16)
  run = lambda out_dtype: conv_block_kernel.conv_block_epilogue(
      jnp.asarray(taps, jnp.float32), zeros, ones, zeros, n_groups=2, padding=1, eps=EPS, out_dtype=out_dtype,
      interpret=True)
  y = taps[1].copy()                       # y[t] = taps[0][t - 1] + taps[1][t] + taps[2][t + 1]
  y[:, 1:] += taps[0][:, :-1]
  y[:, :-1] += taps[2][:, 1:]
  groups = y.reshape(1, 8, 2, 8)
  normed = ((groups - groups.mean(axis=(1, 3), keepdims=True))
            / np.sqrt(groups.var(axis=(1, 3), keepdims=True) + EPS)).reshape(1, 8, 16)
  want = normed * np.tanh(np.log1p(np.exp(normed)))
  np.testing.assert_allclose(np.asarray(run(jnp.float32)), want, rtol=1e-3, atol=1e-3)
  got = run(jnp.bfloat16)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2, atol=1e-2)


def test_supported_shapes():
  assert conv_block_kernel.supported(16, 256, 8)          # the low-dim U-Net's first level: 32 channels a group
  assert conv_block_kernel.supported(4, 2048, 8)          # the image U-Net's deepest
  assert conv_block_kernel.supported(6, 16, 2)            # any length
  assert not conv_block_kernel.supported(16, 24, 8)       # 3 channels a group: not a power of two
  assert not conv_block_kernel.supported(16, 30, 8)       # groups do not divide the channels
  assert not conv_block_kernel.supported(64, 1024, 8)     # 8,192 elements a group: more than one program holds


def test_bad_inputs_name_the_problem():
  taps, vector = jnp.zeros((5, 1, 8, 32)), jnp.zeros(32)
  call = lambda **kwargs: conv_block_kernel.conv_block_epilogue(
      **{**dict(taps=taps, bias=vector, norm_scale=vector, norm_bias=vector, n_groups=8, padding=2, eps=EPS,
                out_dtype=jnp.float32, interpret=True), **kwargs})
  with pytest.raises(ValueError, match="'same' convolutions only"):
    call(padding=1)
  with pytest.raises(ValueError, match="does not fit the kernel"):
    call(taps=jnp.zeros((5, 1, 8, 24)), bias=jnp.zeros(24), norm_scale=jnp.zeros(24), norm_bias=jnp.zeros(24))
  with pytest.raises(ValueError, match="multiple of the group size 4"):
    call(film=jnp.zeros((1, 1, 128)), film_offset=2)
  with pytest.raises(ValueError, match="channels 64..128 of 96"):
    call(film=jnp.zeros((1, 1, 96)), film_offset=64)
