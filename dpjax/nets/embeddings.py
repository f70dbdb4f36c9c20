"""Sinusoidal embedding of the diffusion step (Diffusion Policy's `SinusoidalPosEmb`)."""
import math

import chex
import jax
import jax.numpy as jnp


def sinusoidal_embedding(k: jax.Array, dim: int) -> jax.Array:
  """Embeds steps as [sin(k w_i) ..., cos(k w_i) ...] with w_i = exp(-i log(10000) / (dim/2 - 1)).

  Args:
    k: [B] diffusion steps (int or float).
    dim: embedding width; even and >= 4 (dim/2 - 1 is a divisor).

  Returns:
    [B, dim] float32: the first half sines, the second half cosines.
  """
  if dim % 2 or dim < 4:
    raise ValueError(f"Sinusoidal embedding width must be even and >= 4, got {dim}.")
  chex.assert_rank(k, 1)
  half = dim // 2
  frequencies = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -(math.log(10000.0) / (half - 1)))
  angles = k.astype(jnp.float32)[:, None] * frequencies[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
