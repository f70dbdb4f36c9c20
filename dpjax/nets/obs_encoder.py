"""Observation encoder: normalised observation dict -> per-step features [B, To, F].

Each camera (a key whose per-step shape has 3 dims, H x W x C) gets its own ResNet18GN, named by its key, as
Diffusion Policy (`share_rgb_model=False`); training uses a random crop per image (rng stream "crop"), evaluation
the centre crop; each camera's feature goes through a ReLU (robomimic's ObservationEncoder). Low-dim keys pass
through unchanged. Per-step output: image features in sorted key order, then low-dim values in sorted key order.
With no camera the encoder is a parameter-free concat.
"""
from typing import Any, Optional, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from dpjax.data.normalizer import is_image
from dpjax.nets import crop
from dpjax.nets.vision import ResNet18GN

ObsShapes = Tuple[Tuple[str, Tuple[int, ...]], ...]


def split_keys(obs_shapes: ObsShapes) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
  """(sorted image keys, sorted low-dim keys)."""
  image_keys = sorted(key for key, shape in obs_shapes if is_image(shape))
  low_dim_keys = sorted(key for key, shape in obs_shapes if not is_image(shape))
  return tuple(image_keys), tuple(low_dim_keys)


def _crop_needed(image_shape: Sequence[int], crop_shape: Optional[Sequence[int]]) -> bool:
  return crop_shape is not None and tuple(crop_shape) != tuple(image_shape[:2])


class ObservationEncoder(nn.Module):
  """Normalised observations -> features.

  Attributes:
    obs_shapes: ((key, per-step shape), ...), hashable; e.g. (("image", (96, 96, 3)), ("agent_pos", (2,))).
    crop_shape: (h, w) image crop; None (or the image size) disables cropping.
    width: ResNet18GN stem width.
    num_keypoints: spatial-softmax keypoints per camera.
    feature_dim: features per camera.
    dtype: compute dtype of the image networks (float32 or bfloat16); features are float32.
  """
  obs_shapes: ObsShapes
  crop_shape: Optional[Tuple[int, int]] = (84, 84)
  width: int = 64
  num_keypoints: int = 32
  feature_dim: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, obs: dict, train: bool) -> jax.Array:
    """obs: {key: [B, To, *shape]} normalised (images float in [-1, 1]) -> [B, To, F]."""
    shapes = dict(self.obs_shapes)
    missing = sorted(set(shapes) - set(obs))
    if missing:
      raise KeyError(f"Observation keys {missing} missing; expected keys {sorted(shapes)}, got {sorted(obs)}")
    first = obs[sorted(shapes)[0]]
    batch, steps = first.shape[:2]
    for key, shape in shapes.items():
      chex.assert_shape(obs[key], (batch, steps, *shape),
                        custom_message=f"obs[{key!r}] must be [B={batch}, To={steps}, *{shape}]")

    image_keys, low_dim_keys = split_keys(self.obs_shapes)
    features = []
    for key in image_keys:
      images = obs[key].reshape(batch * steps, *shapes[key])
      if _crop_needed(shapes[key], self.crop_shape):
        # One crop per image of the flattened B*To batch, as the original CropRandomizer.
        images = (crop.random_crop(self.make_rng("crop"), images, self.crop_shape) if train
                  else crop.center_crop(images, self.crop_shape))
      # robomimic's ObservationEncoder applies its feature activation (ReLU, kept by Diffusion Policy's hybrid
      # policies) to each camera's feature; low-dim keys have no net and pass unchanged.
      encoded = nn.relu(ResNet18GN(self.width, self.num_keypoints, self.feature_dim, self.dtype, name=key)(images))
      features.append(encoded.reshape(batch, steps, self.feature_dim))
    for key in low_dim_keys:
      features.append(obs[key].reshape(batch, steps, -1))
    return jnp.concatenate(features, axis=-1)
