"""Conditional 1-D temporal U-Net denoiser: Diffusion Policy's `ConditionalUnet1D` in flax.

Layout is channels-last ([B, T, C]) throughout. The architecture is the original's layer for
layer (`conditional_unet1d.py`, `conv1d_components.py`), so parameter counts match PyTorch's:

  step k -> SinusoidalPosEmb(dsed) -> Dense(4 dsed) -> Mish -> Dense(dsed)
  cond = concat(step feature, obs_features flattened to [B, To * F])
  down level i: 2 residual blocks (-> down_dims[i]); Downsample1d except at the last level
  mid: 2 residual blocks at down_dims[-1]
  up level: concat skip, 2 residual blocks, Upsample1d (every up level: the original's
    `is_last` test is never true there, and it is what restores the horizon)
  final: Conv1dBlock(down_dims[0]) -> Conv1d 1x1 -> Da

The skip of the first down level is never used (as in the original: there is one up level fewer
than down levels). Weights are initialised like PyTorch's defaults (uniform +-1/sqrt(fan_in) for
kernels and biases): the paper's optimiser settings were used with that init.
"""
from typing import Any, Optional, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dpjax.nets import conv_block_kernel, precision, torch_init
from dpjax.nets.embeddings import sinusoidal_embedding

_GROUP_NORM_EPS = 1e-5  # torch's default; flax's is 1e-6
# The original's final Conv1dBlock is built without n_groups, so it uses Conv1dBlock's default.
_FINAL_BLOCK_GROUPS = 8


def conv1d_im2col(x: jax.Array, kernel: jax.Array, stride: int, padding: int, matmul_dtype=None) -> jax.Array:
  """torch's Conv1d without bias as one matmul: x [B, L, C_in], kernel [k, C_in, C_out] -> [B, L_out, C_out].

  The k shifted (strided) views of the padded input are concatenated along channels, [B, L_out, k * C_in], and
  multiplied by the kernel reshaped to [k * C_in, C_out] (`precision.matmul`: with `matmul_dtype`, bfloat16
  operands and a float32 result). On XLA:CPU this is 9x faster for a training step than
  `lax.conv_general_dilated` with the default lowering (whose backward pass is especially slow, and ~100x slower
  where the input is shorter than the kernel); BUILD_NOTES.md, "Convolution lowering".
  """
  k, c_in, c_out = kernel.shape
  x = jnp.pad(x, ((0, 0), (padding, padding), (0, 0)))
  out_length = (x.shape[1] - k) // stride + 1
  span = stride * (out_length - 1) + 1
  patches = jnp.concatenate([x[:, j:j + span:stride] for j in range(k)], axis=-1)
  return precision.matmul(patches, kernel.reshape(k * c_in, c_out), matmul_dtype)


def tap_products(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x [B, L, C_in] times each tap of kernel [k, C_in, C_out], in one batched matmul with float32 results:
  [k, B, L, C_out]."""
  k = kernel.shape[0]
  return jnp.einsum("kblc,kcd->kbld", jnp.broadcast_to(x, (k,) + x.shape), kernel, preferred_element_type=jnp.float32)


def conv1d_taps(x: jax.Array, kernel: jax.Array, stride: int, padding: int, out_dtype=None) -> jax.Array:
  """`conv1d_im2col`'s result as k products of the unshifted input, shifted and summed: x [B, L, C_in], kernel
  [k, C_in, C_out] -> [B, L_out, C_out].

  taps[j] = x @ kernel[j] for every tap j in one batched matmul (float32 results, [k, B, L, C_out]), then
  y[t] = sum_j taps[j][stride * t + j - padding]. No copy of the input is made, and on a GPU the shifted sum fuses
  into the kernel that adds the bias: the full-size U-Net's sampling-chain iteration at batch 1 compiles to 115 GPU
  kernels instead of 133. It writes k float32 partial outputs instead of one, which costs more than it saves once
  the call is not launch-bound (a training batch), and XLA:CPU runs it slower (BUILD_NOTES.md, "Session 14").
  """
  k = kernel.shape[0]
  taps = jnp.pad(tap_products(x, kernel), ((0, 0), (0, 0), (padding, padding), (0, 0)))
  out_length = (x.shape[1] + 2 * padding - k) // stride + 1
  span = stride * (out_length - 1) + 1
  return sum(taps[j, :, j:j + span:stride] for j in range(k)).astype(out_dtype or x.dtype)


# Rows (batch x length) up to which a sampling chain's convolution runs as taps on an accelerator (`_taps_in_chain`):
# a 50-environment rollout's 50 x 16. Counted for an H100 (experiments/gpu_kernels/session15/): taps win at batch 1,
# 50 and 100 and lose from ~1,000 rows on (batch 256 with a limit of 1,024: 4 more kernels and 34 MB per iteration).
TAPS_MAX_ROWS = 800


def _taps_in_chain(x: jax.Array, chain: bool, general, taps) -> jax.Array:
  """`taps()` for a sampling chain's call of at most TAPS_MAX_ROWS rows (x [B, L, C]: B x L) on an accelerator,
  else `general()`; both compute the same numbers to rounding. There taps need fewer GPU kernels and bytes (batch-1
  DDPM iteration 133 -> 115 kernels, batch 50 141 -> 120 and 569 -> 415 MB; experiments/gpu_kernels/). Training
  keeps the general form at any size (taps write k float32 partial outputs: the low-dim step would be 532 kernels /
  8.59 GB instead of 520 / 7.42), and so does a CPU, where taps ran slower everywhere (BUILD_NOTES.md, "Session
  14")."""
  if not chain or x.shape[0] * x.shape[1] > TAPS_MAX_ROWS:
    return general()
  return jax.lax.platform_dependent(cpu=general, default=taps)


def conv1d(x: jax.Array, kernel: jax.Array, stride: int, padding: int, chain: bool = False,
           matmul_dtype=None) -> jax.Array:
  """torch's Conv1d without bias, x [B, L, C_in], kernel [k, C_in, C_out] -> [B, L_out, C_out]: `conv1d_taps` in a
  sampling chain's call on an accelerator, else `conv1d_im2col` (`_taps_in_chain`). With `matmul_dtype` the
  operands are rounded to it and the result is float32 (`precision.matmul`)."""
  return _taps_in_chain(x, chain, lambda: conv1d_im2col(x, kernel, stride, padding, matmul_dtype),
                        lambda: _with_float32_result(conv1d_taps, x, kernel, matmul_dtype, stride, padding))


def _with_float32_result(conv, x, kernel, matmul_dtype, *args):
  """conv(x, kernel, *args) as it is if matmul_dtype is None, else on operands rounded to it, returned float32 (the
  taps' products are float32 anyway). Sampling chains only: no custom gradient."""
  if matmul_dtype is None:
    return conv(x, kernel, *args)
  return conv(x.astype(matmul_dtype), kernel.astype(matmul_dtype), *args, out_dtype=jnp.float32)


def transposed_conv1d_x2_phases(x: jax.Array, kernel: jax.Array, matmul_dtype=None) -> jax.Array:
  """torch's ConvTranspose1d(C, C, 4, stride 2, padding 1) without bias as one matmul: x [B, T, C], kernel
  [4, C_out, C_in] (flax's `transpose_kernel=True` layout) -> [B, 2T, C].

  With W_j = kernel[j].T ([C_in, C_out]), torch's output is, per input position m (x[-1] = x[T] = 0):
    y[2m] = x[m - 1] W_3 + x[m] W_1,    y[2m + 1] = x[m] W_2 + x[m + 1] W_0,
  so the windows [x[m - 1], x[m], x[m + 1]] times one [3C, 2C] matrix give both output phases at once.
  """
  batch, length, channels = x.shape
  w = jnp.swapaxes(kernel, 1, 2)                      # w[j] = W_j: [C_in, C_out]
  zeros = jnp.zeros_like(w[0])
  phases = jnp.concatenate([jnp.concatenate([w[3], w[1], zeros], axis=0),     # even outputs
                            jnp.concatenate([zeros, w[2], w[0]], axis=0)], axis=1)  # odd outputs
  padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
  windows = jnp.concatenate([padded[:, j:j + length] for j in range(3)], axis=-1)   # [B, T, 3C]
  out = precision.matmul(windows, phases, matmul_dtype)
  return out.reshape(batch, length, 2, channels).reshape(batch, 2 * length, channels)


def transposed_conv1d_x2_taps(x: jax.Array, kernel: jax.Array, out_dtype=None) -> jax.Array:
  """`transposed_conv1d_x2_phases`'s result from the four products x[m] W_j (one batched matmul, float32), shifted
  and summed per output phase: no window copy and no [3C, 2C] matrix assembled from the kernel at every call (a
  sampling chain would rebuild it at every step: XLA keeps it in the loop)."""
  batch, length, channels = x.shape
  taps = jnp.einsum("kblc,kdc->kbld", jnp.broadcast_to(x, (4,) + x.shape), kernel,
                    preferred_element_type=jnp.float32)
  taps = jnp.pad(taps, ((0, 0), (0, 0), (1, 1), (0, 0)))                # x[-1] = x[T] = 0
  even = taps[3, :, :length] + taps[1, :, 1:length + 1]
  odd = taps[2, :, 1:length + 1] + taps[0, :, 2:]
  return jnp.stack([even, odd], axis=2).reshape(batch, 2 * length, channels).astype(out_dtype or x.dtype)


def transposed_conv1d_x2(x: jax.Array, kernel: jax.Array, chain: bool = False, matmul_dtype=None) -> jax.Array:
  """torch's ConvTranspose1d(C, C, 4, stride 2, padding 1) without bias, x [B, T, C] -> [B, 2T, C]: taps in a
  sampling chain's call on an accelerator, else the phase matmul (`_taps_in_chain`); `matmul_dtype` as `conv1d`'s."""
  return _taps_in_chain(x, chain, lambda: transposed_conv1d_x2_phases(x, kernel, matmul_dtype),
                        lambda: _with_float32_result(transposed_conv1d_x2_taps, x, kernel, matmul_dtype))


class Conv1d(nn.Module):
  """torch Conv1d(C_in, features, kernel_size, stride, padding) on [B, L, C_in] -> [B, L_out, features].

  Parameters are flax's Conv layout: kernel [kernel_size, C_in, features], bias [features], float32; the
  convolution (`conv1d`) runs in `dtype`, or with its operands in `matmul_dtype` if given (`conv1d_layer`).
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, chain: bool = False) -> jax.Array:
    """x [B, L, C_in]; chain: a sampling chain's call (`conv1d`)."""
    k, in_features = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", torch_init.kernel_init, (k, in_features, self.features))
    bias = self.param("bias", torch_init.bias_init(in_features * k), (self.features,))
    return conv1d_layer(x, kernel, bias, self.stride, self.padding, self.dtype, chain, self.matmul_dtype)


def conv1d_layer(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int, padding: int, dtype,
                 chain: bool = False, matmul_dtype=None) -> jax.Array:
  """What `Conv1d` computes from its parameters: `conv1d` + bias, everything cast to `dtype` first (the kernel as
  `layer_kernel` says)."""
  x, bias = x.astype(dtype), bias.astype(dtype)
  return conv1d(x, layer_kernel(kernel, dtype, matmul_dtype), stride, padding, chain=chain,
                matmul_dtype=matmul_dtype) + bias


def layer_kernel(kernel: jax.Array, dtype, matmul_dtype=None) -> jax.Array:
  """A layer's kernel as its matmul takes it: cast to `dtype`, or as it is if `matmul_dtype` is given
  (`precision.matmul` rounds it, and its gradient comes back in the kernel's own dtype)."""
  return kernel.astype(dtype) if matmul_dtype is None else kernel


def _conv(x, features, kernel_size, dtype, stride=1, padding=None, name=None, chain=False, matmul_dtype=None):
  """Conv1d with torch's arguments; padding defaults to kernel_size // 2 ("same" for odd kernels)."""
  padding = kernel_size // 2 if padding is None else padding
  return Conv1d(features, kernel_size, stride, padding, dtype, matmul_dtype, name=name)(x, chain)


def _dense(x, features, dtype, name=None, matmul_dtype=None):
  return nn.Dense(features, dtype=dtype, kernel_init=torch_init.kernel_init,
                  bias_init=torch_init.bias_init(x.shape[-1]), dot_general=precision.dot_general(matmul_dtype),
                  name=name)(x)


def _group_norm(n_groups, dtype, name, **kwargs):
  """GroupNorm whose statistics are float32 whatever `dtype` (flax's force_float32_reductions)."""
  return nn.GroupNorm(num_groups=n_groups, epsilon=_GROUP_NORM_EPS, dtype=dtype, name=name, **kwargs)


class Conv1dBlock(nn.Module):
  """Conv1d (same padding) -> GroupNorm -> Mish, then optionally FiLM and a residual. [B, T, C_in] ->
  [B, T, features].

  `chain=True` marks a sampling chain's call (`conv1d`). `fused=True` (in a chain's call: the parameters must
  exist) runs everything after the convolution's tap products as one Pallas kernel on CUDA where the block's shapes
  fit (`conv_block_kernel`); elsewhere, and on other platforms, the same layers as `fused=False`. `matmul_dtype`:
  the convolution's operand dtype if not `dtype` (`conv1d_layer`).
  """
  features: int
  kernel_size: int
  n_groups: int = 8
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, film: Optional[jax.Array] = None, film_offset: int = 0,
               residual: Optional[jax.Array] = None, residual_bias: Optional[jax.Array] = None,
               chain: bool = False, fused: bool = False) -> jax.Array:
    """x [B, T, C_in]; film [B, 1, W] with this block's scale and shift at channels film_offset ..
    film_offset + 2 * features, or None; residual [B, T, features] (+ residual_bias [features]) or None."""
    if fused and conv_block_kernel.supported(x.shape[1], self.features, self.n_groups):
      return self._fused(self.variables["params"], x, film, film_offset, residual, residual_bias)
    x = _conv(x, self.features, self.kernel_size, self.dtype, name="conv", chain=chain, matmul_dtype=self.matmul_dtype)
    x = jax.nn.mish(_group_norm(self.n_groups, self.dtype, "norm")(x))
    return _film_and_residual(x, film, film_offset, residual, residual_bias)

  def _fused(self, params, x, film, film_offset, residual, residual_bias) -> jax.Array:
    """The block from its parameters {"conv": {kernel, bias}, "norm": {scale, bias}}: the Pallas kernel on CUDA,
    the layers of the unfused path elsewhere (`lax.platform_dependent`)."""
    conv, norm = params["conv"], params["norm"]
    padding = self.kernel_size // 2

    def layers():
      y = conv1d_layer(x, conv["kernel"], conv["bias"], 1, padding, self.dtype, chain=True,
                       matmul_dtype=self.matmul_dtype)
      y = jax.nn.mish(_group_norm(self.n_groups, self.dtype, None, parent=None).apply({"params": norm}, y))
      return _film_and_residual(y, film, film_offset, residual, residual_bias)

    def kernel():
      operands = self.dtype if self.matmul_dtype is None else self.matmul_dtype
      taps = tap_products(x.astype(operands), conv["kernel"].astype(operands))
      return conv_block_kernel.conv_block_epilogue(
          taps, conv["bias"], norm["scale"], norm["bias"], n_groups=self.n_groups, padding=padding,
          eps=_GROUP_NORM_EPS, out_dtype=jnp.result_type(self.dtype), film=film, film_offset=film_offset,
          residual=residual, residual_bias=residual_bias)

    return jax.lax.platform_dependent(cuda=kernel, default=layers)


def _film_and_residual(x: jax.Array, film: Optional[jax.Array], film_offset: int, residual: Optional[jax.Array],
                       residual_bias: Optional[jax.Array]) -> jax.Array:
  """On x [B, T, C]: FiLM (Perez et al. 2018; film[..., film_offset:] = per-channel scale [C], then shift [C]),
  then + residual (+ residual_bias), each if given."""
  if film is not None:
    features = x.shape[-1]
    x = film[..., film_offset:film_offset + features] * x + film[..., film_offset + features:film_offset + 2 * features]
  if residual is not None:
    x = x + (residual if residual_bias is None else residual + residual_bias.astype(residual.dtype))
  return x


class Downsample1d(nn.Module):
  """torch Conv1d(C, C, 3, stride 2, padding 1): [B, T, C] -> [B, T / 2, C]."""
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, chain: bool = False) -> jax.Array:
    return _conv(x, x.shape[-1], 3, self.dtype, stride=2, padding=1, name="conv", chain=chain,
                 matmul_dtype=self.matmul_dtype)


class _TransposedConv1dX2(nn.Module):
  """The parameters of torch's ConvTranspose1d(C, C, 4, stride 2, padding 1) and its computation
  (`transposed_conv1d_x2`). Parameters keep flax's `nn.ConvTranspose(transpose_kernel=True)` layout, which the
  original's weight [C_in, C_out, 4] maps to by a plain transpose: kernel [4, C_out, C_in] (fan_in C_out * 4, as
  torch's), bias [C]. `matmul_dtype` as `Conv1d`'s."""
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, chain: bool = False) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param("kernel", torch_init.kernel_init, (4, channels, channels))
    bias = self.param("bias", torch_init.bias_init(channels * 4), (channels,))
    x, bias = x.astype(self.dtype), bias.astype(self.dtype)
    kernel = layer_kernel(kernel, self.dtype, self.matmul_dtype)
    return transposed_conv1d_x2(x, kernel, chain=chain, matmul_dtype=self.matmul_dtype) + bias


class Upsample1d(nn.Module):
  """torch ConvTranspose1d(C, C, 4, stride 2, padding 1): [B, T, C] -> [B, 2T, C] (`_TransposedConv1dX2`)."""
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, chain: bool = False) -> jax.Array:
    return _TransposedConv1dX2(self.dtype, self.matmul_dtype, name="conv")(x, chain)


class ConditionalResidualBlock1D(nn.Module):
  """Two Conv1dBlocks with FiLM from the condition between them, plus a residual.

  x: [B, T, C_in], cond: [B, D] -> [B, T, features]. The FiLM embedding depends on the condition only, so it can
  be computed apart (`film_only=True` returns it, [B, 1, 2 * features]) and passed back in (`film=`, this block's
  at channels film_offset .. film_offset + 2 * features; then cond is unused): a sampling chain computes every
  step's embeddings before its loop. `chain`, `fused`, `matmul_dtype`: see `Conv1dBlock`.
  """
  features: int
  kernel_size: int = 3
  n_groups: int = 8
  dtype: Any = jnp.float32
  matmul_dtype: Any = None

  @nn.compact
  def __call__(self, x: Optional[jax.Array], cond: Optional[jax.Array], film: Optional[jax.Array] = None,
               film_only: bool = False, film_offset: int = 0, chain: bool = False,
               fused: bool = False) -> jax.Array:
    if film is None:
      # FiLM (Perez et al. 2018): per-channel scale and bias predicted from the condition.
      film = _dense(jax.nn.mish(cond), 2 * self.features, self.dtype, name="cond_encoder",
                    matmul_dtype=self.matmul_dtype)[:, None, :]  # [B, 1, 2C]
    if film_only:
      return film
    block_0 = Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.dtype, self.matmul_dtype,
                          name="block_0")
    block_1 = Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.dtype, self.matmul_dtype,
                          name="block_1")
    if not fused:
      out = block_1(block_0(x, film=film, film_offset=film_offset, chain=chain), chain=chain)
      residual = x if x.shape[-1] == self.features else _conv(x, self.features, 1, self.dtype, name="residual_conv",
                                                              chain=chain, matmul_dtype=self.matmul_dtype)
      return out + residual
    # The residual (its 1x1 convolution without bias, if any) goes into block_1's kernel.
    residual, residual_bias = x, None
    if x.shape[-1] != self.features:
      conv = self.variables["params"]["residual_conv"]
      kernel = layer_kernel(conv["kernel"][0], self.dtype, self.matmul_dtype)
      residual = precision.matmul(x.astype(self.dtype), kernel, self.matmul_dtype)
      residual_bias = conv["bias"]   # float32, added in the kernel: a cast here would be a kernel per call
    out = block_0(x, film=film, film_offset=film_offset, chain=True, fused=True)
    return block_1(out, residual=residual, residual_bias=residual_bias, chain=True, fused=True)


def block_widths(down_dims: Sequence[int]) -> dict[str, int]:
  """Residual block name -> output channels, in the order the U-Net runs them."""
  widths = {}
  for level, features in enumerate(down_dims):
    widths[f"down_{level}_res_0"] = widths[f"down_{level}_res_1"] = features
  widths["mid_0"] = widths["mid_1"] = down_dims[-1]
  for level, features in enumerate(reversed(down_dims[:-1])):
    widths[f"up_{level}_res_0"] = widths[f"up_{level}_res_1"] = features
  return widths


class ConditionalUnet1D(nn.Module):
  """The paper's CNN denoiser.

  Attributes:
    down_dims: channel widths of the U-Net levels, e.g. (256, 512, 1024).
    kernel_size: temporal convolution kernel size.
    n_groups: GroupNorm groups in the residual blocks.
    step_embed_dim: width of the diffusion-step feature (dsed).
    dtype: compute dtype of convolutions and matmuls (float32 or bfloat16), and of the activations between them;
      parameters, GroupNorm statistics and the output stay float32.
    matmul_dtype: if given, the dtype every convolution's and matmul's operands are rounded to, their results
      staying `dtype` (float32: `precision.matmul`, the "bfloat16_matmuls" compute dtype); None: `dtype`.
    one_film_matmul: compute every residual block's FiLM embedding in one matmul (`_films`); None: on GPUs and
      TPUs, where it saves ~50 kernels per train step, not on a CPU, where the CPU-sized network trained ~4 %
      slower with it (BUILD_NOTES.md, "Session 13"). The same numbers either way (to rounding).
    fused_sampling: in the sampling chain's calls (given `conditioning`), run each conv block's bias, GroupNorm,
      Mish, FiLM and residual as one Pallas kernel on CUDA (`Conv1dBlock`): two GPU kernels per block instead of
      four. Elsewhere, and in training, the XLA layers. The same numbers to the compute dtype's rounding, not bit
      for bit (the kernel keeps float32 between the layers).
  """
  down_dims: Sequence[int]
  kernel_size: int = 5
  n_groups: int = 8
  step_embed_dim: int = 256
  dtype: Any = jnp.float32
  matmul_dtype: Any = None
  one_film_matmul: Optional[bool] = None
  fused_sampling: bool = False

  @nn.compact
  def __call__(self, x: Optional[jax.Array], k: Optional[jax.Array], obs_features: Optional[jax.Array] = None,
               train: bool = False, conditioning: Optional[dict] = None, conditioning_only: bool = False):
    """Predicts the noise (or clean sample) for a noisy action chunk.

    Args:
      x: [B, T, Da] noisy actions; T divisible by 2 ** (len(down_dims) - 1). Unused with conditioning_only.
      k: int [B] or scalar diffusion steps. Unused when `conditioning` is given.
      obs_features: [B, To, F] observation features (global condition), or None. Unused with `conditioning`.
      train: unused (no dropout or batch statistics); part of the shared denoiser signature.
      conditioning: what depends on (k, obs_features) only, from an earlier `conditioning_only=True` call: the
        FiLM embedding of every residual block, {block name: [B, 1, W]}. None: computed here.
      conditioning_only: return that conditioning and run nothing else.

    Returns:
      [B, T, Da] (or the conditioning).
    """
    del train
    blocks = {name: ConditionalResidualBlock1D(features, self.kernel_size, self.n_groups, self.dtype,
                                               self.matmul_dtype, name=name)
              for name, features in block_widths(self.down_dims).items()}
    # The sampling chain's calls are given `conditioning` (made by a conditioning_only call); with fused_sampling
    # its format is every block's embedding side by side.
    chain = conditioning is not None
    fused = self.fused_sampling and (chain or conditioning_only)
    if conditioning is None:
      cond = self._condition(k, obs_features, batch=None if x is None else x.shape[0])
      if self.is_initializing():   # each block creates its FiLM encoder's parameters
        conditioning = {name: block(None, cond, film_only=True) for name, block in blocks.items()}
      else:
        conditioning = self._films(cond, list(blocks), side_by_side=fused)
    if conditioning_only:
      return conditioning

    chex.assert_rank(x, 3)
    batch, horizon, action_dim = x.shape
    factor = 2 ** (len(self.down_dims) - 1)
    if horizon % factor:
      raise ValueError(f"Horizon {horizon} must be divisible by 2 ** (len(down_dims) - 1) = {factor} "
                       f"for down_dims={tuple(self.down_dims)}: each level but the last halves it.")
    if fused:   # every block's embedding side by side in one array ({"films": [B, 1, W]})
      offsets = dict(zip(blocks, np.cumsum([0] + [2 * w for w in block_widths(self.down_dims).values()])))
      run = lambda name, x: blocks[name](x, None, film=conditioning["films"], film_offset=int(offsets[name]),
                                         chain=True, fused=True)
    else:
      run = lambda name, x: blocks[name](x, None, film=conditioning[name], chain=chain)

    skips = []
    for level in range(len(self.down_dims)):
      x = run(f"down_{level}_res_1", run(f"down_{level}_res_0", x))
      skips.append(x)
      if level < len(self.down_dims) - 1:
        x = Downsample1d(self.dtype, self.matmul_dtype, name=f"down_{level}_downsample")(x, chain)

    x = run("mid_1", run("mid_0", x))

    for level in range(len(self.down_dims) - 1):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = run(f"up_{level}_res_1", run(f"up_{level}_res_0", x))
      x = Upsample1d(self.dtype, self.matmul_dtype, name=f"up_{level}_upsample")(x, chain)

    x = Conv1dBlock(self.down_dims[0], self.kernel_size, _FINAL_BLOCK_GROUPS, self.dtype, self.matmul_dtype,
                    name="final_block")(x, chain=chain, fused=fused)
    x = _conv(x, action_dim, 1, self.dtype, name="final_conv", chain=chain, matmul_dtype=self.matmul_dtype)
    chex.assert_shape(x, (batch, horizon, action_dim))
    return x.astype(jnp.float32)

  def _films(self, cond: jax.Array, names: Sequence[str], side_by_side: bool = False) -> dict:
    """Every residual block's FiLM embedding {name: [B, 1, 2C]} from the global condition [B, D]; side_by_side:
    {"films": [B, 1, sum 2C]}, one matmul on every platform (what `fused_sampling` reads).

    Each block's `cond_encoder` is a Dense on the same mish(cond), so their kernels side by side make one [D, sum 2C]
    matrix: the same numbers as the twelve Dense layers in two GPU kernels instead of ~50 per train step, forward and
    backward (experiments/gpu_kernels/). On a CPU the separate Dense layers trained the CPU-sized network ~4 %
    faster, so `one_film_matmul=None` lets the compiled platform choose (`lax.platform_dependent`). The parameters
    stay each block's own (the original's layout, which the PyTorch import and the checkpoints keep), read here from
    this module's variables.
    """
    params = [self.variables["params"][name]["cond_encoder"] for name in names]
    inputs = jax.nn.mish(cond)

    def dense(kernel, bias):   # flax's nn.Dense
      x, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
      return precision.matmul(x, kernel, self.matmul_dtype) + bias

    def per_block():
      return [dense(p["kernel"], p["bias"]) for p in params]

    def all_blocks():
      return dense(jnp.concatenate([p["kernel"] for p in params], axis=1),
                   jnp.concatenate([p["bias"] for p in params]))

    def one_matmul():
      return jnp.split(all_blocks(), np.cumsum([p["bias"].shape[0] for p in params])[:-1], axis=-1)

    if side_by_side:
      return {"films": all_blocks()[:, None, :]}
    if self.one_film_matmul is None:
      films = jax.lax.platform_dependent(cpu=per_block, default=one_matmul)
    else:
      films = one_matmul() if self.one_film_matmul else per_block()
    return {name: film[:, None, :] for name, film in zip(names, films)}

  def _condition(self, k: jax.Array, obs_features: Optional[jax.Array], batch: Optional[int]) -> jax.Array:
    """The global condition [B, dsed + To * F]: step feature (sinusoid -> Dense -> Mish -> Dense) and observation
    features. B is `batch`, else obs_features' or k's leading axis."""
    if batch is None:
      batch = obs_features.shape[0] if obs_features is not None else jnp.shape(k)[0]
    k = jnp.broadcast_to(jnp.asarray(k), (batch,))
    dsed = self.step_embed_dim
    cond = sinusoidal_embedding(k, dsed)
    cond = _dense(cond, 4 * dsed, self.dtype, name="step_encoder_0", matmul_dtype=self.matmul_dtype)
    cond = _dense(jax.nn.mish(cond), dsed, self.dtype, name="step_encoder_1", matmul_dtype=self.matmul_dtype)
    if obs_features is not None:
      chex.assert_rank(obs_features, 3)
      chex.assert_axis_dimension(obs_features, 0, batch)
      cond = jnp.concatenate([cond, obs_features.reshape(batch, -1).astype(cond.dtype)], axis=-1)
    return cond
