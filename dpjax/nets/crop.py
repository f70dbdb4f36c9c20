"""Image crops: random (training augmentation) and centred (evaluation), as Diffusion Policy's CropRandomizer.

Offsets follow the original: top-left corner uniform in [0, H - h) x [0, W - w) (the last offset, H - h, is
never drawn: the original samples `int(rand * (H - h))`), one independent offset per image, so a [B, To, ...]
batch gets B * To different crops; the centre crop's corner is round((H - h) / 2) as torchvision's.
"""
from typing import Sequence

import jax


def _check_crop(image_hw: Sequence[int], crop_hw: Sequence[int]) -> None:
  if len(crop_hw) != 2 or any(c > s or c < 1 for c, s in zip(crop_hw, image_hw)):
    raise ValueError(f"crop_hw {tuple(crop_hw)} must be two sizes within the image size {tuple(image_hw)}")


def random_crop(key: jax.Array, images: jax.Array, crop_hw: Sequence[int]) -> jax.Array:
  """Crops each image at its own random offset.

  Args:
    key: PRNG key.
    images: [..., H, W, C]; every leading index is a separate image.
    crop_hw: (h, w).

  Returns:
    [..., h, w, C].
  """
  *lead, height, width, channels = images.shape
  _check_crop((height, width), crop_hw)
  crop_h, crop_w = crop_hw
  flat = images.reshape(-1, height, width, channels)
  key_h, key_w = jax.random.split(key)
  # maxval is exclusive, as the original's floor(rand * (H - h)); max(., 1) keeps a full-size "crop" valid.
  top = jax.random.randint(key_h, (flat.shape[0],), 0, max(height - crop_h, 1))
  left = jax.random.randint(key_w, (flat.shape[0],), 0, max(width - crop_w, 1))

  def crop_one(image, row, col):
    return jax.lax.dynamic_slice(image, (row, col, 0), (crop_h, crop_w, channels))

  crops = jax.vmap(crop_one)(flat, top, left)
  return crops.reshape(*lead, crop_h, crop_w, channels)


def center_crop(images: jax.Array, crop_hw: Sequence[int]) -> jax.Array:
  """Centre crop (torchvision's offsets): [..., H, W, C] -> [..., h, w, C]."""
  height, width = images.shape[-3:-1]
  _check_crop((height, width), crop_hw)
  crop_h, crop_w = crop_hw
  top = int(round((height - crop_h) / 2.0))
  left = int(round((width - crop_w) / 2.0))
  return images[..., top:top + crop_h, left:left + crop_w, :]
