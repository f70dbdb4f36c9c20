"""ResNet-18 with GroupNorm and a spatial-softmax head: the paper's per-camera image encoder.

Matches robomimic's `VisualCore(ResNet18Conv, SpatialSoftmax, feature_dimension=64)` as Diffusion Policy builds
it: torchvision's ResNet-18 without its average pool and classifier, trained from scratch, every BatchNorm
replaced by GroupNorm(channels // 16) (`replace_bn_with_gn`), then 32 soft-argmax keypoints and a Dense layer.
Channels-last throughout: images are [B, H, W, C].
"""
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpjax.nets import torch_init

# torchvision initialises convolutions with kaiming_normal(mode="fan_out", nonlinearity="relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's BatchNorm and GroupNorm use eps 1e-5; flax defaults to 1e-6.
_NORM_EPS = 1e-5


def group_norm(channels: int, name: str, dtype: Any = jnp.float32) -> nn.GroupNorm:
  """GroupNorm with 16 channels per group, as Diffusion Policy's `replace_bn_with_gn`; float32 statistics
  (flax's force_float32_reductions), output in `dtype`."""
  return nn.GroupNorm(num_groups=channels // 16, epsilon=_NORM_EPS, dtype=dtype, name=name)


def _conv(channels: int, kernel: int, stride: int, padding: int, dtype, name: str) -> nn.Conv:
  """Bias-free square convolution with torchvision's init and explicit (torch) padding."""
  return nn.Conv(channels, (kernel, kernel), (stride, stride), padding=((padding, padding), (padding, padding)),
                 use_bias=False, kernel_init=_conv_init, dtype=dtype, name=name)


def soft_argmax(logits: jax.Array) -> jax.Array:
  """Expected (x, y) position of each channel's spatial softmax.

  Coordinates are in [-1, 1]: x runs over columns (left -1, right +1), y over rows (top -1, bottom +1), as
  robomimic's `SpatialSoftmax` (`np.meshgrid(linspace(-1, 1, W), linspace(-1, 1, H))`).

  Args:
    logits: [B, H, W, K].

  Returns:
    [B, K, 2] keypoints (x, y).
  """
  _, height, width, _ = logits.shape
  attention = jax.nn.softmax(logits.reshape(logits.shape[0], height * width, -1), axis=1)  # [B, H*W, K]
  pos_y, pos_x = jnp.meshgrid(jnp.linspace(-1.0, 1.0, height), jnp.linspace(-1.0, 1.0, width), indexing="ij")
  expected_x = jnp.einsum("bnk,n->bk", attention, pos_x.reshape(-1))
  expected_y = jnp.einsum("bnk,n->bk", attention, pos_y.reshape(-1))
  return jnp.stack([expected_x, expected_y], axis=-1)


class SpatialSoftmax(nn.Module):
  """1x1 conv to `num_keypoints` maps, softmax over space, expected coordinates.

  Attributes:
    num_keypoints: K, the number of keypoints (robomimic `num_kp`). The softmax temperature is robomimic's fixed 1
      (Diffusion Policy does not learn it; the 1x1 conv can scale the logits anyway).
  """
  num_keypoints: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """features: [B, H, W, C] -> float32 keypoints flattened [B, 2K] as (x0, y0, x1, y1, ...)."""
    chex.assert_rank(features, 4)
    logits = nn.Conv(self.num_keypoints, (1, 1), kernel_init=torch_init.kernel_init, dtype=self.dtype,
                     bias_init=torch_init.bias_init(features.shape[-1]), name="keypoint_conv")(features)
    logits = logits.astype(jnp.float32)  # the softmax and expected coordinates stay float32
    keypoints = soft_argmax(logits)
    return keypoints.reshape(keypoints.shape[0], -1)


class BasicBlock(nn.Module):
  """ResNet basic block (two 3x3 convs), GroupNorm in place of BatchNorm."""
  channels: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = _conv(self.channels, 3, self.stride, 1, self.dtype, "conv1")(x)
    y = nn.relu(group_norm(self.channels, "norm1", self.dtype)(y))
    y = _conv(self.channels, 3, 1, 1, self.dtype, "conv2")(y)
    y = group_norm(self.channels, "norm2", self.dtype)(y)
    if self.stride != 1 or x.shape[-1] != self.channels:
      residual = _conv(self.channels, 1, self.stride, 0, self.dtype, "downsample_conv")(x)
      residual = group_norm(self.channels, "downsample_norm", self.dtype)(residual)
    return nn.relu(y + residual)


class ResNet18GN(nn.Module):
  """ResNet-18 trunk (GroupNorm) + spatial softmax + Dense: one camera's image -> feature vector.

  Attributes:
    width: channels of the stem and first stage (64 is ResNet-18); stages use w, 2w, 4w, 8w. Must be a
      multiple of 16 (GroupNorm uses 16 channels per group).
    num_keypoints: spatial-softmax keypoints.
    feature_dim: output features.
    dtype: compute dtype of convolutions and matmuls (float32 or bfloat16); parameters, GroupNorm statistics,
      the spatial softmax and the output stay float32.
  """
  width: int = 64
  num_keypoints: int = 32
  feature_dim: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images: float [B, H, W, 3] normalised to [-1, 1] -> features [B, feature_dim]."""
    chex.assert_rank(images, 4)
    if self.width % 16:
      raise ValueError(f"ResNet18GN width must be a multiple of 16 for GroupNorm, got {self.width}")
    # Explicit torch paddings: flax "SAME" pads stride-2 layers asymmetrically and shifts the feature map.
    x = _conv(self.width, 7, 2, 3, self.dtype, "stem_conv")(images)
    x = nn.relu(group_norm(self.width, "stem_norm", self.dtype)(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, stride in enumerate((1, 2, 2, 2)):
      channels = self.width * 2**stage
      for block in range(2):
        x = BasicBlock(channels, stride if block == 0 else 1, self.dtype,
                       name=f"stage{stage + 1}_block{block + 1}")(x)
    keypoints = SpatialSoftmax(self.num_keypoints, dtype=self.dtype, name="spatial_softmax")(x)
    features = nn.Dense(self.feature_dim, kernel_init=torch_init.kernel_init, dtype=self.dtype,
                        bias_init=torch_init.bias_init(keypoints.shape[-1]), name="head")(keypoints)
    return features.astype(jnp.float32)
