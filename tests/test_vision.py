"""ResNet18GN and the spatial softmax: parameter counts, shapes, soft-argmax geometry."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.nets import vision

# torchvision resnet18: 11,689,512 parameters, minus fc (512 * 1000 + 1000). GroupNorm has the same affine
# parameters as the BatchNorm it replaces, so the trunk count is unchanged.
TORCHVISION_RESNET18_NO_FC = 11_689_512 - 513_000
SPATIAL_SOFTMAX_32 = 512 * 32 + 32  # 1x1 conv 512 -> 32 keypoint maps
HEAD_64 = 2 * 32 * 64 + 64  # Dense(2K -> 64)


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _abstract_params(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))["params"]


def test_resnet18gn_param_count_matches_torchvision_resnet18():
  params = _abstract_params(vision.ResNet18GN(), (1, 84, 84, 3))
  trunk = {k: v for k, v in params.items() if k not in ("spatial_softmax", "head")}
  assert _count(trunk) == TORCHVISION_RESNET18_NO_FC == 11_176_512
  assert _count(params["spatial_softmax"]) == SPATIAL_SOFTMAX_32
  assert _count(params["head"]) == HEAD_64
  assert _count(params) == 11_197_088


def test_group_norm_uses_16_channels_per_group():
  params = _abstract_params(vision.ResNet18GN(width=32, num_keypoints=4, feature_dim=8), (1, 32, 32, 3))
  assert params["stage4_block2"]["norm2"]["scale"].shape == (256,)
  assert vision.group_norm(256, "n").num_groups == 16
  with pytest.raises(ValueError, match="multiple of 16"):
    vision.ResNet18GN(width=24).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_resnet18gn_output_shape_and_finite():
  model = vision.ResNet18GN(width=16, num_keypoints=4, feature_dim=8)
  images = jax.random.uniform(jax.random.key(1), (2, 36, 36, 3), minval=-1.0, maxval=1.0)
  # rbg key and jit: a ResNet's init otherwise takes many seconds on a shared CPU.
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"), images)
  out = jax.jit(model.apply)(params, images)
  assert out.shape == (2, 8)
  assert np.all(np.isfinite(out))


def test_soft_argmax_finds_bright_spot():
  height, width, row, col = 5, 7, 1, 5
  logits = np.zeros((1, height, width, 2), np.float32)
  logits[0, row, col, 0] = 50.0  # channel 0: one bright spot; channel 1: flat
  keypoints = vision.soft_argmax(jnp.asarray(logits))
  expected_x = -1.0 + 2.0 * col / (width - 1)
  expected_y = -1.0 + 2.0 * row / (height - 1)
  np.testing.assert_allclose(keypoints[0, 0], [expected_x, expected_y], atol=1e-5)
  np.testing.assert_allclose(keypoints[0, 1], [0.0, 0.0], atol=1e-6)  # flat map: the image centre


def test_spatial_softmax_flattens_x_y_pairs_and_has_no_temperature():
  model = vision.SpatialSoftmax(num_keypoints=3)
  features = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
  params = model.init(jax.random.key(1), features)
  assert set(params["params"]) == {"keypoint_conv"}
  out = model.apply(params, features)
  assert out.shape == (2, 6)
  assert np.all(np.abs(out) <= 1.0)
