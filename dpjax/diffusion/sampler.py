"""The reverse chain as one `lax.scan`: x_K ~ N(0, I) -> ... -> x_0.

The step indices (DDPM/DDIM) or times (flow matching's Euler/Heun) are a static NumPy array (their count fixes the
scan length), so a jitted caller compiles the whole chain once per (shape, method, num_inference_steps) and never
runs a Python loop over steps.
"""
import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from dpjax.diffusion import flow, steps
from dpjax.diffusion.objective import DenoiseFn
from dpjax.diffusion.schedules import (NoiseSchedule, inference_timesteps, previous_timesteps,
                                       validate_num_inference_steps)

# The samplers that apply to each training objective ("ddpm": noise prediction; "flow": velocity prediction).
METHODS_BY_OBJECTIVE = {"ddpm": ("ddpm", "ddim"), "flow": ("euler", "heun", "ancestral")}
SAMPLING_METHODS = tuple(m for methods in METHODS_BY_OBJECTIVE.values() for m in methods)
OBJECTIVES = tuple(METHODS_BY_OBJECTIVE)


class ConditionedDenoiser(NamedTuple):
  """A denoiser split at what depends on x: `condition(k [B]) -> conditioning` (any pytree; the step embedding and
  whatever else depends only on the step and the observations) and `apply(x [B, T, Da], conditioning) -> [B, T, Da]`.
  A DDPM/DDIM chain conditions every step in one batched pass before its loop, so each loop iteration runs only
  `apply` (fewer kernels per network call). A plain `denoise_fn(x, k)` is the split whose conditioning is k."""
  condition: Callable[[jax.Array], Any]
  apply: Callable[[jax.Array, Any], jax.Array]


def check_method(objective: str, method: str) -> None:
  """Raises ValueError unless `method` samples a model trained with `objective`."""
  if objective not in METHODS_BY_OBJECTIVE:
    raise ValueError(f"Unknown diffusion objective {objective!r}; choose from {OBJECTIVES}.")
  if method not in METHODS_BY_OBJECTIVE[objective]:
    raise ValueError(f"Sampler {method!r} does not apply to a {objective!r} model; use one of "
                     f"{METHODS_BY_OBJECTIVE[objective]}.")


def check_num_inference_steps(objective: str, num_diffusion_steps: int, num_inference_steps: int,
                              name: str = "num_inference_steps") -> None:
  """DDPM/DDIM chains take 1..K steps of the training schedule; flow chains any number >= 1."""
  if objective == "ddpm":
    validate_num_inference_steps(num_diffusion_steps, num_inference_steps, name)
  else:
    flow.validate_num_steps(num_inference_steps, name)


def network_calls(method: str, num_inference_steps: int) -> int:
  """Denoiser calls per action chunk: Heun calls the network twice per step, the others once."""
  return 2 * num_inference_steps if method == "heun" else num_inference_steps


def sample_chain(denoise_fn: DenoiseFn | ConditionedDenoiser, schedule: NoiseSchedule, shape: tuple[int, ...],
                 key: jax.Array, *, method: str = "ddpm", num_inference_steps: int | None = None,
                 clip_sample: bool = True, prediction_type: str = "epsilon",
                 noise: jax.Array | None = None, timestep_spacing: str = "leading", unroll: int = 1) -> jax.Array:
  """Samples x_0 by running the whole reverse chain.

  Args:
    denoise_fn: (x [B, T, Da], k [B]) -> [B, T, Da]; conditioning is closed over. k is the int32 step index for
      DDPM/DDIM, the float t * flow.TIME_SCALE for Euler/Heun. Or a `ConditionedDenoiser`: DDPM/DDIM then
      condition every step before the loop (Euler/Heun, with few steps, condition at each call).
    schedule: the training noise schedule (K = schedule.num_steps); unused by the flow samplers.
    shape: static (B, T, Da) of the samples.
    key: PRNG key for the initial noise and every step's noise.
    method: static, "ddpm" or "ddim" (a noise-prediction model); "euler", "heun" (the ODE) or "ancestral"
      (stochastic, DDPM's step in the interpolant's coordinates) for a flow-matching model.
    num_inference_steps: static int; DDPM/DDIM: in [1, K], None means K, fewer steps visit the training steps
      `timestep_spacing` picks. Euler/Heun/ancestral: >= 1 uniform steps from t = 1 to 0 (required).
    clip_sample: clip each predicted x_0 (DDPM/DDIM/ancestral) or the final sample (Euler/Heun) to [-1, 1].
    prediction_type: "epsilon" or "sample", as trained (DDPM/DDIM only).
    noise: [B, T, Da] the starting x_K (default: drawn from `key`). DDIM, Euler and Heun are then
      deterministic maps from this noise to x_0 (what distillation learns).
    timestep_spacing: static, which training steps a DDPM/DDIM chain of fewer than K steps visits
      (`schedules.TIMESTEP_SPACINGS`: "leading", diffusers' default, or "trailing", which starts at pure noise).
    unroll: static, steps per iteration of the compiled loop (`lax.scan`'s unroll; the same results): fewer loop
      iterations and bigger loop bodies (experiments/bench/chain_unroll.py measures what that is worth).

  Returns:
    x_0: [B, T, Da].
  """
  if method not in SAMPLING_METHODS:
    raise ValueError(f"Unknown sampling method {method!r}; choose from {SAMPLING_METHODS}.")
  split = (denoise_fn if isinstance(denoise_fn, ConditionedDenoiser)
           else ConditionedDenoiser(condition=lambda k: k, apply=denoise_fn))
  init_key, key = jax.random.split(key)
  x = jax.random.normal(init_key, shape, jnp.float32) if noise is None else noise
  chex.assert_shape(x, shape)
  if method in METHODS_BY_OBJECTIVE["flow"]:
    if num_inference_steps is None:
      raise ValueError("The flow samplers need num_inference_steps (the number of steps from t = 1 to 0).")
    return _flow_chain(lambda x, t: split.apply(x, split.condition(t)), x, key, method, num_inference_steps,
                       clip_sample, unroll)
  if num_inference_steps is None:
    num_inference_steps = schedule.num_steps
  timesteps = inference_timesteps(schedule.num_steps, num_inference_steps, timestep_spacing)
  prev_timesteps = previous_timesteps(timesteps)
  if method == "ddpm":
    step_fn = functools.partial(steps.ddpm_step, prediction_type=prediction_type,
                                clip_sample=clip_sample)
  else:
    step_fn = functools.partial(steps.ddim_step, prediction_type=prediction_type, clip_sample=clip_sample)
  batch = shape[0]
  # Every step's conditioning in one batched pass: [S, ...] leaves, one slice per loop iteration.
  conditioning = jax.vmap(lambda k: split.condition(jnp.full((batch,), k, jnp.int32)))(jnp.asarray(timesteps))

  def body(carry, step):
    x, key = carry
    k, t_prev, step_conditioning = step
    step_key = key   # unused by DDIM (deterministic): no split in its loop
    if method == "ddpm":
      key, step_key = jax.random.split(key)
    model_output = split.apply(x, step_conditioning)
    x = step_fn(schedule, x, model_output, k, t_prev, step_key)
    return (x, key), None

  (x, _), _ = jax.lax.scan(body, (x, key), (jnp.asarray(timesteps), jnp.asarray(prev_timesteps), conditioning),
                           unroll=unroll)
  chex.assert_shape(x, shape)
  return x


def _flow_chain(denoise_fn, x, key, method, num_inference_steps, clip_sample, unroll):
  """Runs a flow model from t = 1 (x, noise) to t = 0 in one scan of uniform steps: the ODE (Euler, Heun) or the
  stochastic ancestral chain."""
  times = flow.time_grid(num_inference_steps)
  ode_step = {"euler": flow.euler_step, "heun": flow.heun_step}.get(method)

  def body(carry, step):
    x, key = carry
    t, t_next = step
    if ode_step is not None:   # deterministic: no key is split in the loop
      return (ode_step(denoise_fn, x, t, t_next), key), None
    key, step_key = jax.random.split(key)
    return (flow.ancestral_step(denoise_fn, x, t, t_next, step_key, clip_sample=clip_sample), key), None

  (x, _), _ = jax.lax.scan(body, (x, key), (jnp.asarray(times[:-1]), jnp.asarray(times[1:])), unroll=unroll)
  return jnp.clip(x, -1.0, 1.0) if clip_sample else x
