"""The end of a U-Net Conv1dBlock as one GPU kernel (Pallas, Triton): the shifted sum of the convolution's tap
products, bias, GroupNorm, Mish, then FiLM and/or the residual. For the sampling chain at small batch, where each
XLA kernel costs a launch (~1.7 us on an H100) and a block's data is a few kilobytes.

XLA runs that part of a block as three kernels (the taps' shifted sum and bias, the GroupNorm statistics, and the
normalisation fused with Mish and FiLM or the residual), so with the taps' matmul a conv block is four kernels; here
it is two. One program per (batch row, group) holds the group's [L, C / G] slice as L rows of C / G channels: each
row is the bias plus the taps that reach it (static indices, so no out-of-range load, and Pallas' interpreter on a
CPU computes the same thing), then the group's mean and variance (two passes over the rows in registers), and each
row is normalised and written once. Everything is float32 inside; only the output is cast.

`conv_block_epilogue` is the kernel; `supported` says whether a block's shapes fit it. The U-Net decides where it
runs (`unet1d.Conv1dBlock`): only in the sampling chain, only on CUDA, only when asked (`fused_sampling`).
"""
import functools
from typing import Optional

import chex
import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

_MAX_TILE = 4096   # elements of one group's [L, C / G] slice; the U-Nets here have 512


def _is_power_of_two(n: int) -> bool:
  return n > 0 and n & (n - 1) == 0


def supported(length: int, channels: int, n_groups: int) -> bool:
  """Whether a block of `length` steps and `channels` channels in `n_groups` groups fits the kernel: a group's
  channels a power of two (a Triton vector), its [length, channels / n_groups] slice at most _MAX_TILE elements."""
  if channels % n_groups:
    return False
  group = channels // n_groups
  return _is_power_of_two(group) and length * group <= _MAX_TILE


def _mish(x):
  """x * tanh(softplus(x)), softplus written out for the Triton lowering."""
  softplus = jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))
  return x * jnp.tanh(softplus)


def _kernel(*refs, num_taps: int, padding: int, eps: float, film: bool, residual: bool, residual_bias: bool):
  """One (batch row, group) program. refs: taps [k, L, Cg], bias, norm scale, norm shift [Cg], then FiLM scale and
  shift [Cg] (film), residual [L, Cg] (residual), its bias [Cg] (residual_bias), and the output [L, Cg]."""
  taps_ref, bias_ref, scale_ref, shift_ref = refs[:4]
  rest = list(refs[4:])
  if film:
    film_scale_ref, film_shift_ref = rest.pop(0), rest.pop(0)
  if residual:
    residual_ref = rest.pop(0)
  if residual_bias:
    residual_bias_ref = rest.pop(0)
  (out_ref,) = rest

  length = out_ref.shape[0]
  f32 = lambda ref, *index: ref[index if index else ...].astype(jnp.float32)
  bias = f32(bias_ref)
  rows = []   # y[t] = bias + sum_j taps[j][t + j - padding] over the steps that exist: static rows, no shifted loads
  for t in range(length):
    row = bias
    for j in range(num_taps):
      if 0 <= t + j - padding < length:
        row = row + f32(taps_ref, j, t + j - padding, slice(None))
    rows.append(row)

  count = float(length * rows[0].shape[0])
  mean = sum(jnp.sum(row) for row in rows) / count
  variance = sum(jnp.sum((row - mean) * (row - mean)) for row in rows) / count
  inv_std = jax.lax.rsqrt(variance + eps)
  scale, shift = f32(scale_ref), f32(shift_ref)
  if film:
    film_scale, film_shift = f32(film_scale_ref), f32(film_shift_ref)
  if residual_bias:
    extra = f32(residual_bias_ref)
  for t, row in enumerate(rows):
    y = _mish((row - mean) * inv_std * scale + shift)
    if film:
      y = film_scale * y + film_shift
    if residual:
      y = y + f32(residual_ref, t, slice(None))
    if residual_bias:
      y = y + extra
    out_ref[t, :] = y.astype(out_ref.dtype)


def conv_block_epilogue(taps: jax.Array, bias: jax.Array, norm_scale: jax.Array, norm_bias: jax.Array, *,
                        n_groups: int, padding: int, eps: float, out_dtype, film: Optional[jax.Array] = None,
                        film_offset: int = 0, residual: Optional[jax.Array] = None,
                        residual_bias: Optional[jax.Array] = None, interpret: bool = False) -> jax.Array:
  """mish(GroupNorm(conv + bias)), then FiLM and/or + residual, from the convolution's tap products.

  Args:
    taps: [k, B, L, C] float32, taps[j] = x @ kernel[j] (`unet1d.tap_products`) for a stride-1 convolution with
      `padding` zeros each side and L output steps (2 * padding = k - 1).
    bias, norm_scale, norm_bias: [C] the convolution's bias and the GroupNorm's scale and bias.
    film: [B, 1, W] FiLM embeddings side by side, this block's (scale [C], then shift [C]) at channels
      film_offset .. film_offset + 2C (a multiple of C / n_groups), applied after Mish; or None. Read in place,
      so a sampling chain's per-step slice of every block's embeddings is one array, not one copy per block.
    residual: [B, L, C] added last, with residual_bias [C] if given; or None.
    interpret: run the kernel in Pallas' interpreter (any backend; for tests on a CPU).

  Returns:
    [B, L, C] in `out_dtype`.
  """
  num_taps, batch, length, channels = taps.shape
  chex.assert_shape([bias, norm_scale, norm_bias], (channels,))
  if num_taps != 2 * padding + 1:
    raise ValueError(f"{num_taps} taps with padding {padding}: the kernel computes 'same' convolutions only.")
  if not supported(length, channels, n_groups):
    raise ValueError(f"A block of {length} steps x {channels} channels in {n_groups} groups does not fit the "
                     f"kernel (a power of two channels per group, at most {_MAX_TILE} elements); use the XLA path.")
  group = channels // n_groups
  vector = pl.BlockSpec((group,), lambda b, g: (g,))
  operands = [taps, bias, norm_scale, norm_bias]
  in_specs = [pl.BlockSpec((num_taps, None, length, group), lambda b, g: (0, b, 0, g)), vector, vector, vector]
  if film is not None:
    chex.assert_rank(film, 3)
    if film_offset % group or film_offset + 2 * channels > film.shape[-1]:
      raise ValueError(f"FiLM channels {film_offset}..{film_offset + 2 * channels} of {film.shape[-1]} are not "
                       f"{2 * channels} channels starting at a multiple of the group size {group}.")
    first = film_offset // group
    operands += [film, film]
    in_specs += [pl.BlockSpec((None, None, group), lambda b, g: (b, 0, first + g)),
                 pl.BlockSpec((None, None, group), lambda b, g: (b, 0, first + n_groups + g))]
  if residual is not None:
    chex.assert_shape(residual, (batch, length, channels))
    operands.append(residual)
    in_specs.append(pl.BlockSpec((None, length, group), lambda b, g: (b, 0, g)))
    if residual_bias is not None:
      chex.assert_shape(residual_bias, (channels,))
      operands.append(residual_bias)
      in_specs.append(vector)
  kernel = functools.partial(_kernel, num_taps=num_taps, padding=padding, eps=eps, film=film is not None,
                             residual=residual is not None,
                             residual_bias=residual is not None and residual_bias is not None)
  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((batch, length, channels), out_dtype),
                        grid=(batch, n_groups), in_specs=in_specs,
                        out_specs=pl.BlockSpec((None, length, group), lambda b, g: (b, 0, g)),
                        compiler_params=pltriton.CompilerParams(num_warps=4, num_stages=1),
                        interpret=interpret)(*operands)
