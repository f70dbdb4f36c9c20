"""Crops and the observation encoder: randomness, exact centre crop, key order, shapes, errors."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.nets import crop
from dpjax.nets import obs_encoder

TINY = dict(width=16, num_keypoints=4, feature_dim=8)


def _key(seed):
  # rbg keys: a ResNet's init compiles about 3x faster than with threefry on a shared CPU.
  return jax.random.key(seed, impl="rbg")


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _images(shape):
  return jnp.arange(math.prod(shape), dtype=jnp.float32).reshape(shape)


def _offset_of(image, patch):
  """(row, col) where `patch` sits in `image`."""
  h, w = patch.shape[:2]
  for row in range(image.shape[0] - h + 1):
    for col in range(image.shape[1] - w + 1):
      if np.array_equal(image[row:row + h, col:col + w], patch):
        return row, col
  raise AssertionError("patch is not a slice of the image")


def test_random_crop_is_a_slice_with_independent_offsets_per_image():
  images = _images((3, 4, 10, 10, 2))  # [B, To, H, W, C]: every pixel distinct
  crops = jax.jit(crop.random_crop, static_argnums=2)(jax.random.key(0), images, (6, 6))
  assert crops.shape == (3, 4, 6, 6, 2)
  offsets = {_offset_of(np.asarray(images[b, t]), np.asarray(crops[b, t])) for b in range(3) for t in range(4)}
  assert len(offsets) > 1  # not one offset shared by the batch or the steps
  assert all(0 <= r < 4 and 0 <= c < 4 for r, c in offsets)  # the original never draws offset H - h


def test_random_crop_depends_on_key():
  images = _images((2, 10, 10, 1))
  a = crop.random_crop(jax.random.key(0), images, (5, 5))
  b = crop.random_crop(jax.random.key(1), images, (5, 5))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, crop.random_crop(jax.random.key(0), images, (5, 5)))


def test_center_crop_is_the_exact_centre_slice():
  images = _images((2, 96, 96, 3))
  np.testing.assert_array_equal(crop.center_crop(images, (84, 84)), images[:, 6:90, 6:90, :])
  with pytest.raises(ValueError, match="within the image"):
    crop.center_crop(images, (100, 84))


def test_lowdim_encoder_is_a_parameter_free_concat_in_sorted_key_order():
  shapes = (("z_pos", (2,)), ("a_kp", (18,)))
  encoder = obs_encoder.ObservationEncoder(obs_shapes=shapes)
  obs = {"z_pos": jnp.ones((2, 3, 2)), "a_kp": jnp.zeros((2, 3, 18))}
  variables = encoder.init(jax.random.key(0), obs, train=False)
  assert _count(variables) == 0
  features = encoder.apply(variables, obs, train=True)
  np.testing.assert_array_equal(features, jnp.concatenate([obs["a_kp"], obs["z_pos"]], axis=-1))


@pytest.fixture(scope="module")
def image_setup(batch=2, steps=2):
  """(encoder, obs, params, jitted apply), built once: compiling a ResNet dominates these tests."""
  shapes = (("cam_b", (40, 40, 3)), ("agent_pos", (2,)), ("cam_a", (40, 40, 3)))
  encoder = obs_encoder.ObservationEncoder(obs_shapes=shapes, crop_shape=(36, 36), **TINY)
  keys = jax.random.split(_key(0), 3)
  obs = {"cam_a": jax.random.uniform(keys[0], (batch, steps, 40, 40, 3), minval=-1.0, maxval=1.0),
         "cam_b": jax.random.uniform(keys[1], (batch, steps, 40, 40, 3), minval=-1.0, maxval=1.0),
         "agent_pos": jax.random.normal(keys[2], (batch, steps, 2))}
  params = jax.jit(lambda: encoder.init({"params": _key(1), "crop": _key(2)}, obs, train=True))()
  return encoder, obs, params, jax.jit(encoder.apply, static_argnames="train")


def test_image_encoder_one_resnet_per_camera_and_feature_layout(image_setup):
  encoder, obs, params, apply = image_setup
  assert set(params["params"]) == {"cam_a", "cam_b"}
  features = apply(params, obs, train=False)
  assert features.shape == (2, 2, 8 + 8 + 2)   # two cameras' feature_dim each, then the low-dim values
  np.testing.assert_array_equal(features[..., 16:], obs["agent_pos"])
  # Camera features are ReLU(Linear(keypoints)) as robomimic's ObservationEncoder: non-negative, some zero.
  camera = np.asarray(features[..., :16])
  assert camera.min() == 0.0 and (camera > 0).any()
  # cam_a's features come first: changing cam_b leaves them alone.
  changed = apply(params, {**obs, "cam_b": -obs["cam_b"]}, train=False)
  np.testing.assert_array_equal(changed[..., :8], features[..., :8])
  assert not np.allclose(changed[..., 8:16], features[..., 8:16])


def test_image_encoder_crops_randomly_in_training_only(image_setup):
  encoder, obs, params, apply = image_setup
  eval_a = apply(params, obs, train=False)
  np.testing.assert_array_equal(eval_a, apply(params, obs, train=False))
  train_a = apply(params, obs, train=True, rngs={"crop": _key(3)})
  train_b = apply(params, obs, train=True, rngs={"crop": _key(4)})
  assert not np.allclose(train_a, train_b)


def test_no_crop_when_crop_shape_is_none_or_the_image_size():
  shapes = (("image", (36, 36, 3)),)
  obs = {"image": jnp.zeros((1, 2, 36, 36, 3))}
  for crop_shape in (None, (36, 36)):
    encoder = obs_encoder.ObservationEncoder(obs_shapes=shapes, crop_shape=crop_shape, **TINY)
    # Without a "crop" rng these would raise if the encoder tried to crop.
    params = jax.eval_shape(lambda: encoder.init(_key(1), obs, train=True))
    out = jax.eval_shape(lambda p: encoder.apply(p, obs, train=True), params)
    assert out.shape == (1, 2, 8)


def test_bad_observations_name_the_key_and_shape(image_setup):
  encoder, obs, params, _ = image_setup
  with pytest.raises(AssertionError, match=r"obs\['cam_a'\].*\(40, 40, 3\)"):
    encoder.apply(params, {**obs, "cam_a": obs["cam_a"][..., :38, :, :]}, train=False)
  with pytest.raises(KeyError, match="cam_b"):
    encoder.apply(params, {k: v for k, v in obs.items() if k != "cam_b"}, train=False)


def test_pusht_image_encoder_param_count():
  shapes = (("agent_pos", (2,)), ("image", (96, 96, 3)))
  encoder = obs_encoder.ObservationEncoder(obs_shapes=shapes)
  obs = {"image": jnp.zeros((1, 2, 96, 96, 3)), "agent_pos": jnp.zeros((1, 2, 2))}
  abstract = jax.eval_shape(lambda: encoder.init({"params": jax.random.key(0), "crop": jax.random.key(1)}, obs,
                                                 train=True))
  assert _count(abstract) == 11_197_088  # torchvision resnet18 w/o fc + 1x1 conv 512->32 + Dense 64->64
  out = jax.eval_shape(lambda p: encoder.apply(p, obs, train=False), abstract)
  chex.assert_shape(out, (1, 2, 66))
