"""Forward process q(x_k | x_0) and the denoising training loss (DDPM, Ho et al. 2020)."""
from typing import Callable

import chex
import jax
import jax.numpy as jnp

from dpjax.diffusion.schedules import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "sample")

# denoise_fn(x_noisy [B, T, Da], k int32 [B]) -> [B, T, Da]; the conditioning is closed over.
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def expand(values, ndim: int) -> jax.Array:
  """Per-example values shaped to broadcast against a rank-`ndim` batch: a scalar stays a scalar, [B] becomes
  [B, 1, ..., 1] with `ndim` dims."""
  values = jnp.asarray(values)
  if values.ndim == 0:
    return values
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def gather(table: jax.Array, k: jax.Array, ndim: int) -> jax.Array:
  """table[k] ([K] per-step constants at scalar or [B] int steps) shaped by `expand` for a rank-`ndim` batch."""
  return expand(table[k], ndim)


def q_sample(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, k: jax.Array) -> jax.Array:
  """x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) noise.

  Args:
    schedule: the noise schedule.
    x0: [B, ...] clean samples.
    noise: same shape as x0, standard normal.
    k: [B] (or scalar) int step indices in 0..K-1.

  Returns:
    x_k with the shape of x0.
  """
  chex.assert_equal_shape([x0, noise])
  return (gather(schedule.sqrt_alphas_cumprod, k, x0.ndim) * x0
          + gather(schedule.sqrt_one_minus_alphas_cumprod, k, x0.ndim) * noise)


def diffusion_loss(denoise_fn: DenoiseFn, schedule: NoiseSchedule, x0: jax.Array, key: jax.Array,
                   prediction_type: str = "epsilon") -> tuple[jax.Array, dict[str, jax.Array]]:
  """Simple DDPM loss: MSE between the denoiser output and the noise (or x_0).

  Args:
    denoise_fn: (x_noisy [B, T, Da], k int32 [B]) -> [B, T, Da].
    schedule: the noise schedule; k is drawn uniformly from 0..K-1 per example.
    x0: [B, T, Da] clean (normalised) action chunks.
    key: PRNG key for the step indices and the noise.
    prediction_type: "epsilon" (predict the noise, the paper's choice) or "sample" (predict x_0).

  Returns:
    The scalar loss, the mean squared error over every element.
  """
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; choose from {PREDICTION_TYPES}.")
  chex.assert_rank(x0, 3)
  step_key, noise_key = jax.random.split(key)
  batch = x0.shape[0]
  k = jax.random.randint(step_key, (batch,), 0, schedule.num_steps, dtype=jnp.int32)
  noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
  x_noisy = q_sample(schedule, x0, noise, k)
  prediction = denoise_fn(x_noisy, k)
  chex.assert_equal_shape([prediction, x0])
  target = noise if prediction_type == "epsilon" else x0
  return jnp.mean(jnp.square(prediction - target))
