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

from dpjax.nets import torch_init
from dpjax.nets.embeddings import sinusoidal_embedding

_GROUP_NORM_EPS = 1e-5  # torch's default; flax's is 1e-6
# The original's final Conv1dBlock is built without n_groups, so it uses Conv1dBlock's default.
_FINAL_BLOCK_GROUPS = 8


class Conv1d(nn.Module):
  """torch Conv1d(C_in, features, kernel_size, stride, padding) on [B, L, C_in] -> [B, L_out, features].

  Parameters are flax's Conv layout: kernel [kernel_size, C_in, features], bias [features], float32; the
  convolution runs in `dtype`.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, in_features = self.kernel_size, x.shape[-1]
    kernel = self.param("kernel", torch_init.kernel_init, (k, in_features, self.features))
    bias = self.param("bias", torch_init.bias_init(in_features * k), (self.features,))
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    if x.shape[1] >= k:
      y = jax.lax.conv_general_dilated(x, kernel, (self.stride,), [(self.padding, self.padding)],
                                       dimension_numbers=("NWC", "WIO", "NWC"))
    else:
      # XLA:CPU's convolution is ~100x slower when the kernel is longer than the input, which is
      # the deepest level's case (Push-T: T / 4 = 4 < 5); a sum of shifted matmuls is exact and fast.
      x = jnp.pad(x, ((0, 0), (self.padding, self.padding), (0, 0)))
      out_length = (x.shape[1] - k) // self.stride + 1
      span = self.stride * (out_length - 1) + 1
      y = sum(x[:, j:j + span:self.stride] @ kernel[j] for j in range(k))
    return y + bias


def _conv(x, features, kernel_size, dtype, stride=1, padding=None, name=None):
  """Conv1d with torch's arguments; padding defaults to kernel_size // 2 ("same" for odd kernels)."""
  padding = kernel_size // 2 if padding is None else padding
  return Conv1d(features, kernel_size, stride, padding, dtype, name=name)(x)


def _dense(x, features, dtype, name=None):
  return nn.Dense(features, dtype=dtype, kernel_init=torch_init.kernel_init,
                  bias_init=torch_init.bias_init(x.shape[-1]), name=name)(x)


def _group_norm(n_groups, dtype, name):
  """GroupNorm whose statistics are float32 whatever `dtype` (flax's force_float32_reductions)."""
  return nn.GroupNorm(num_groups=n_groups, epsilon=_GROUP_NORM_EPS, dtype=dtype, name=name)


class Conv1dBlock(nn.Module):
  """Conv1d (same padding) -> GroupNorm -> Mish. [B, T, C_in] -> [B, T, features]."""
  features: int
  kernel_size: int
  n_groups: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _conv(x, self.features, self.kernel_size, self.dtype, name="conv")
    x = _group_norm(self.n_groups, self.dtype, "norm")(x)
    return jax.nn.mish(x)


class Downsample1d(nn.Module):
  """torch Conv1d(C, C, 3, stride 2, padding 1): [B, T, C] -> [B, T / 2, C]."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return _conv(x, x.shape[-1], 3, self.dtype, stride=2, padding=1, name="conv")


class Upsample1d(nn.Module):
  """torch ConvTranspose1d(C, C, 4, stride 2, padding 1): [B, T, C] -> [B, 2T, C].

  lax.conv_transpose pads the stride-dilated input, so torch's padding p becomes
  k - 1 - p = 2 on each side; output length (T - 1) * 2 + 1 + 4 - 4 + 1 = 2T. transpose_kernel
  flips the kernel as torch does, so a torch weight [C_in, C_out, 4] maps to this kernel [4, C_out,
  C_in] by a plain transpose; its fan_in (C_out * 4) is then also torch's.
  """
  kernel_size: int = 4
  torch_padding: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    pad = self.kernel_size - 1 - self.torch_padding
    return nn.ConvTranspose(channels, (self.kernel_size,), strides=(2,), padding=[(pad, pad)],
                            transpose_kernel=True, dtype=self.dtype, kernel_init=torch_init.kernel_init,
                            bias_init=torch_init.bias_init(channels * self.kernel_size), name="conv")(x)


class ConditionalResidualBlock1D(nn.Module):
  """Two Conv1dBlocks with FiLM from the condition between them, plus a residual.

  x: [B, T, C_in], cond: [B, D] -> [B, T, features].
  """
  features: int
  kernel_size: int = 3
  n_groups: int = 8
  cond_predict_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    out = Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.dtype, name="block_0")(x)
    # FiLM (Perez et al. 2018): per-channel scale and bias predicted from the condition.
    film_width = 2 * self.features if self.cond_predict_scale else self.features
    embed = _dense(jax.nn.mish(cond), film_width, self.dtype, name="cond_encoder")[:, None, :]  # [B, 1, film_width]
    if self.cond_predict_scale:
      scale, bias = embed[..., :self.features], embed[..., self.features:]
      out = scale * out + bias
    else:
      out = out + embed
    out = Conv1dBlock(self.features, self.kernel_size, self.n_groups, self.dtype, name="block_1")(out)
    residual = x if x.shape[-1] == self.features else _conv(x, self.features, 1, self.dtype, name="residual_conv")
    return out + residual


class ConditionalUnet1D(nn.Module):
  """The paper's CNN denoiser.

  Attributes:
    down_dims: channel widths of the U-Net levels, e.g. (256, 512, 1024).
    kernel_size: temporal convolution kernel size.
    n_groups: GroupNorm groups in the residual blocks.
    step_embed_dim: width of the diffusion-step feature (dsed).
    cond_predict_scale: FiLM predicts scale and bias (True, as in the paper's configs) or only bias.
    dtype: compute dtype of convolutions and matmuls (float32 or bfloat16); parameters, GroupNorm statistics and
      the output stay float32.
  """
  down_dims: Sequence[int]
  kernel_size: int = 5
  n_groups: int = 8
  step_embed_dim: int = 256
  cond_predict_scale: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, k: jax.Array, obs_features: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    """Predicts the noise (or clean sample) for a noisy action chunk.

    Args:
      x: [B, T, Da] noisy actions; T divisible by 2 ** (len(down_dims) - 1).
      k: int [B] or scalar diffusion steps.
      obs_features: [B, To, F] observation features (global condition), or None.
      train: unused (no dropout or batch statistics); part of the shared denoiser signature.

    Returns:
      [B, T, Da].
    """
    del train
    chex.assert_rank(x, 3)
    batch, horizon, action_dim = x.shape
    factor = 2 ** (len(self.down_dims) - 1)
    if horizon % factor:
      raise ValueError(f"Horizon {horizon} must be divisible by 2 ** (len(down_dims) - 1) = {factor} "
                       f"for down_dims={tuple(self.down_dims)}: each level but the last halves it.")
    k = jnp.broadcast_to(jnp.asarray(k), (batch,))

    dsed = self.step_embed_dim
    cond = sinusoidal_embedding(k, dsed)
    cond = _dense(cond, 4 * dsed, self.dtype, name="step_encoder_0")
    cond = _dense(jax.nn.mish(cond), dsed, self.dtype, name="step_encoder_1")
    if obs_features is not None:
      chex.assert_rank(obs_features, 3)
      chex.assert_axis_dimension(obs_features, 0, batch)
      cond = jnp.concatenate([cond, obs_features.reshape(batch, -1).astype(cond.dtype)], axis=-1)

    def block(features, name):
      return ConditionalResidualBlock1D(features, self.kernel_size, self.n_groups,
                                        self.cond_predict_scale, self.dtype, name=name)

    skips = []
    for level, features in enumerate(self.down_dims):
      x = block(features, f"down_{level}_res_0")(x, cond)
      x = block(features, f"down_{level}_res_1")(x, cond)
      skips.append(x)
      if level < len(self.down_dims) - 1:
        x = Downsample1d(self.dtype, name=f"down_{level}_downsample")(x)

    x = block(self.down_dims[-1], "mid_0")(x, cond)
    x = block(self.down_dims[-1], "mid_1")(x, cond)

    for level, features in enumerate(reversed(self.down_dims[:-1])):
      x = jnp.concatenate([x, skips.pop()], axis=-1)
      x = block(features, f"up_{level}_res_0")(x, cond)
      x = block(features, f"up_{level}_res_1")(x, cond)
      x = Upsample1d(dtype=self.dtype, name=f"up_{level}_upsample")(x)

    x = Conv1dBlock(self.down_dims[0], self.kernel_size, _FINAL_BLOCK_GROUPS, self.dtype, name="final_block")(x)
    x = _conv(x, action_dim, 1, self.dtype, name="final_conv")
    chex.assert_shape(x, (batch, horizon, action_dim))
    return x.astype(jnp.float32)
