"""The reverse chain as one `lax.scan`: x_K ~ N(0, I) -> ... -> x_0.

The step indices are a static NumPy array (their count fixes the scan length), so a jitted
caller compiles the whole chain once per (shape, method, num_inference_steps) and never runs a
Python loop over steps.
"""
import functools

import chex
import jax
import jax.numpy as jnp

from dpjax.diffusion import steps
from dpjax.diffusion.objective import DenoiseFn
from dpjax.diffusion.schedules import NoiseSchedule, inference_timesteps

SAMPLING_METHODS = ("ddpm", "ddim")


def sample_chain(denoise_fn: DenoiseFn, schedule: NoiseSchedule, shape: tuple[int, ...],
                 key: jax.Array, *, method: str = "ddpm", num_inference_steps: int | None = None,
                 clip_sample: bool = True, prediction_type: str = "epsilon",
                 eta: float = 0.0) -> jax.Array:
  """Samples x_0 by running the whole reverse chain.

  Args:
    denoise_fn: (x [B, T, Da], k int32 [B]) -> [B, T, Da]; conditioning is closed over.
    schedule: the training noise schedule (K = schedule.num_steps).
    shape: static (B, T, Da) of the samples.
    key: PRNG key for the initial noise and every step's noise.
    method: static, "ddpm" or "ddim".
    num_inference_steps: static int in [1, K]; None means K. Fewer steps use diffusers'
      "leading" spacing (k = K // n * i).
    clip_sample: clip each predicted x_0 to [-1, 1].
    prediction_type: "epsilon" or "sample", as trained.
    eta: DDIM noise scale (ignored by DDPM).

  Returns:
    x_0: [B, T, Da].
  """
  if method not in SAMPLING_METHODS:
    raise ValueError(f"Unknown sampling method {method!r}; choose from {SAMPLING_METHODS}.")
  if num_inference_steps is None:
    num_inference_steps = schedule.num_steps
  timesteps = inference_timesteps(schedule.num_steps, num_inference_steps)
  prev_timesteps = timesteps - schedule.num_steps // num_inference_steps
  if method == "ddpm":
    step_fn = functools.partial(steps.ddpm_step, prediction_type=prediction_type,
                                clip_sample=clip_sample)
  else:
    step_fn = functools.partial(steps.ddim_step, prediction_type=prediction_type,
                                clip_sample=clip_sample, eta=eta)
  batch = shape[0]

  def body(carry, step):
    x, key = carry
    k, t_prev = step
    key, step_key = jax.random.split(key)
    model_output = denoise_fn(x, jnp.full((batch,), k, jnp.int32))
    x = step_fn(schedule, x, model_output, k, t_prev, step_key)
    return (x, key), None

  init_key, key = jax.random.split(key)
  x = jax.random.normal(init_key, shape, jnp.float32)
  (x, _), _ = jax.lax.scan(body, (x, key), (jnp.asarray(timesteps), jnp.asarray(prev_timesteps)))
  chex.assert_shape(x, shape)
  return x
