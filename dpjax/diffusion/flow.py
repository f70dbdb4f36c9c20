"""Flow matching with the linear (rectified-flow) interpolant: loss and ODE steps.

Time t runs from 0 (data) to 1 (noise): x_t = (1 - t) x_0 + t noise, and the network predicts the velocity
dx_t/dt = noise - x_0 (Lipman et al. 2023; Liu et al. 2023). Sampling integrates dx/dt = v(x, t) from t = 1 down to
t = 0 with Euler or Heun steps on a uniform grid. The network sees t * TIME_SCALE as its step input, so the
sinusoidal step embedding spans the same range as DDPM's step index with the paper's K = 100.

Shapes: x, noise, velocities [B, T, Da]; t scalar or [B].
"""
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from dpjax.diffusion.objective import expand

TIME_SCALE = 100.0

# denoise_fn(x [B, T, Da], step_input float [B]) -> velocity [B, T, Da]; the conditioning is closed over. The
# step input is t * TIME_SCALE; only `velocity` below converts.
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def velocity(denoise_fn: DenoiseFn, x: jax.Array, t: jax.Array) -> jax.Array:
  """v(x, t) for x [B, T, Da] and t scalar or [B] in [0, 1]."""
  t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
  return denoise_fn(x, t * TIME_SCALE)


def interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = (1 - t) x_0 + t noise; t scalar or [B]."""
  chex.assert_equal_shape([x0, noise])
  t = expand(jnp.asarray(t, jnp.float32), x0.ndim)
  return (1.0 - t) * x0 + t * noise


def sample_times(key: jax.Array, batch_size: int, fraction_at_noise: float = 0.0) -> jax.Array:
  """Training times [B]: uniform on [0, 1], except a `fraction_at_noise` share set to exactly 1 (pure noise), the
  only time a one-step sampler evaluates (used by distillation)."""
  time_key, at_noise_key = jax.random.split(key)
  t = jax.random.uniform(time_key, (batch_size,))
  if fraction_at_noise:
    t = jnp.where(jax.random.uniform(at_noise_key, (batch_size,)) < fraction_at_noise, 1.0, t)
  return t


def flow_loss(denoise_fn: DenoiseFn, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Conditional flow-matching loss: mean squared error between v(x_t, t) and noise - x_0.

  Args:
    denoise_fn: the network, (x_t [B, T, Da], t [B] * TIME_SCALE) -> [B, T, Da].
    x0: [B, T, Da] clean (normalised) action chunks, or a teacher's samples (distillation).
    noise: [B, T, Da] the noise paired with x0 (fresh standard normal, or the teacher's starting noise).
    t: [B] times in [0, 1].

  Returns:
    The scalar loss, averaged over every element.
  """
  chex.assert_rank(x0, 3)
  chex.assert_shape(t, (x0.shape[0],))
  prediction = velocity(denoise_fn, interpolate(x0, noise, t), t)
  chex.assert_equal_shape([prediction, x0])
  return jnp.mean(jnp.square(prediction - (noise - x0)))


def validate_num_steps(num_steps: int, name: str = "num_inference_steps") -> None:
  """Raises ValueError unless `num_steps` is an int >= 1 (a flow's time is continuous: no upper bound)."""
  if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
    raise ValueError(f"{name} must be an int >= 1, got {num_steps!r}.")


def time_grid(num_steps: int) -> np.ndarray:
  """[num_steps + 1] float32 times 1, 1 - 1/n, ..., 0 (static: it fixes the scan length)."""
  validate_num_steps(num_steps)
  return np.linspace(1.0, 0.0, int(num_steps) + 1, dtype=np.float32)


def euler_step(denoise_fn: DenoiseFn, x: jax.Array, t: jax.Array, t_next: jax.Array) -> jax.Array:
  """x_{t_next} = x_t + (t_next - t) v(x_t, t): one network call. t, t_next: float scalars."""
  return x + (t_next - t) * velocity(denoise_fn, x, t)


def heun_step(denoise_fn: DenoiseFn, x: jax.Array, t: jax.Array, t_next: jax.Array) -> jax.Array:
  """Heun's (trapezoidal) step: an Euler predictor, then the mean of both slopes; two network calls."""
  slope = velocity(denoise_fn, x, t)
  predicted = x + (t_next - t) * slope
  return x + (t_next - t) * 0.5 * (slope + velocity(denoise_fn, predicted, t_next))
