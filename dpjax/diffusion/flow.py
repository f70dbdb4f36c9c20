"""Flow matching with the linear (rectified-flow) interpolant: loss, ODE steps and an ancestral step.

Time t runs from 0 (data) to 1 (noise): x_t = (1 - t) x_0 + t noise, and the network predicts the velocity
dx_t/dt = noise - x_0 (Lipman et al. 2023; Liu et al. 2023). Sampling integrates dx/dt = v(x, t) from t = 1 down to
t = 0 with Euler or Heun steps on a uniform grid, or takes DDPM's stochastic ancestral steps in the interpolant's
coordinates (`ancestral_step`). The network sees t * TIME_SCALE as its step input, so the
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


# How training draws t: "uniform" on [0, 1]; "logit_normal", t = sigmoid(n) with n ~ N(0, 1) (Esser et al. 2024,
# SD3: fewer samples at both ends); "beta", t = 0.001 + 0.999 u with u ~ Beta(1.5, 1) (Black et al. 2024, pi0:
# weighted towards noise, t = 1).
TIME_DISTRIBUTIONS = ("uniform", "logit_normal", "beta")


def sample_times(key: jax.Array, batch_size: int, fraction_at_noise: float = 0.0,
                 distribution: str = "uniform") -> jax.Array:
  """Training times [B] in [0, 1] from one of TIME_DISTRIBUTIONS, except a `fraction_at_noise` share set to exactly
  1 (pure noise), the only time a one-step sampler evaluates (used by distillation)."""
  if distribution not in TIME_DISTRIBUTIONS:
    raise ValueError(f"Unknown flow time distribution {distribution!r}; choose from {TIME_DISTRIBUTIONS}.")
  time_key, at_noise_key = jax.random.split(key)
  if distribution == "uniform":
    t = jax.random.uniform(time_key, (batch_size,))
  elif distribution == "logit_normal":
    t = jax.nn.sigmoid(jax.random.normal(time_key, (batch_size,)))
  else:
    t = 0.001 + 0.999 * jax.random.beta(time_key, 1.5, 1.0, (batch_size,))
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


def ancestral_step(denoise_fn: DenoiseFn, x: jax.Array, t: jax.Array, t_next: jax.Array, key: jax.Array, *,
                   clip_sample: bool = True) -> jax.Array:
  """One stochastic step t -> t_next < t: DDPM's ancestral step (`steps.ddpm_step`) for the linear interpolant.

  The velocity gives the clean-sample estimate x0_hat = x_t - t v (clipped to [-1, 1] like DDPM's), and x_{t_next}
  is drawn from the Gaussian posterior q(x_{t_next} | x_t, x0_hat) of the forward process x_t = a_t x_0 + s_t noise,
  a_t = 1 - t, s_t = t: with r = a_t / a_{t_next} and s^2 = s_t^2 - r^2 s_{t_next}^2 (the noise added from t_next to
  t), mean = (r s_{t_next}^2 x_t + a_{t_next} s^2 x0_hat) / s_t^2 and variance = s^2 s_{t_next}^2 / s_t^2. At
  t = 1 the mean is a_{t_next} x0_hat (x_t carries no signal); at t_next = 0 the step returns x0_hat. One network
  call; t, t_next float scalars with 0 <= t_next < t <= 1.
  """
  t = jnp.asarray(t, jnp.float32)
  t_next = jnp.asarray(t_next, jnp.float32)
  x0_hat = x - t * velocity(denoise_fn, x, t)
  if clip_sample:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
  a_t, a_next = 1.0 - t, 1.0 - t_next
  ratio = a_t / a_next
  added_variance = t ** 2 - (ratio * t_next) ** 2
  mean = (ratio * t_next ** 2 * x + a_next * added_variance * x0_hat) / t ** 2
  std = jnp.sqrt(jnp.maximum(added_variance * t_next ** 2 / t ** 2, 0.0))
  return mean + std * jax.random.normal(key, x.shape, x.dtype)
