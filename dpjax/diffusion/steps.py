"""One reverse-diffusion step each for DDPM and DDIM, as pure functions.

The math follows HF diffusers' `DDPMScheduler.step` (variance_type "fixed_small") and
`DDIMScheduler.step`, which the original Diffusion Policy uses, including their handling of
spaced inference steps: a step goes from index k to t_prev = k - K // num_inference_steps,
and t_prev < 0 means "to the clean sample", where abar is taken as 1.

Shapes: x_k and model_output are [B, ...] (usually [B, T, Da]); k and t_prev are int scalars
(the whole batch at one step, as in sampling) or int [B].
"""
import chex
import jax
import jax.numpy as jnp

from dpjax.diffusion.objective import PREDICTION_TYPES, expand, gather
from dpjax.diffusion.schedules import NoiseSchedule

# diffusers clamps the "fixed_small" variance before the square root; it is 0 at k = 0.
_MIN_VARIANCE = 1e-20


def _alphas_cumprod_pair(schedule, k, t_prev, ndim, final_alpha_cumprod):
  """(abar_k, abar_{t_prev}) shaped to broadcast over a rank-`ndim` batch."""
  abar_t = gather(schedule.alphas_cumprod, k, ndim)
  # Gather at a clamped index so it stays in range; `where` then substitutes the final value.
  abar_prev = jnp.where(expand(t_prev, ndim) >= 0,
                        gather(schedule.alphas_cumprod, jnp.maximum(t_prev, 0), ndim),
                        final_alpha_cumprod)
  return abar_t, abar_prev


def _check(x_k, model_output, prediction_type):
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(f"Unknown prediction_type {prediction_type!r}; choose from {PREDICTION_TYPES}.")
  chex.assert_equal_shape([x_k, model_output])


def ddpm_step(schedule: NoiseSchedule, x_k: jax.Array, model_output: jax.Array, k: jax.Array,
              t_prev: jax.Array, key: jax.Array, *, prediction_type: str = "epsilon",
              clip_sample: bool = True) -> jax.Array:
  """One ancestral DDPM step x_k -> x_{t_prev} (diffusers `DDPMScheduler.step`, fixed_small).

  Args:
    schedule: the noise schedule the model was trained with.
    x_k: [B, ...] current noisy sample.
    model_output: [B, ...] predicted noise ("epsilon") or clean sample ("sample").
    k: int scalar or [B], current step index.
    t_prev: int scalar or [B], next step index (k - 1 without spacing; may be negative).
    key: PRNG key for the added noise.
    prediction_type: "epsilon" or "sample".
    clip_sample: clip the predicted x_0 to [-1, 1] (actions are normalised to that range).

  Returns:
    x_{t_prev}, same shape as x_k. No noise is added at k == 0.
  """
  _check(x_k, model_output, prediction_type)
  ndim = x_k.ndim
  abar_t, abar_prev = _alphas_cumprod_pair(schedule, k, t_prev, ndim, 1.0)
  beta_prod_t = 1.0 - abar_t
  beta_prod_prev = 1.0 - abar_prev
  # With spacing, one step spans several training steps: the effective alpha is a ratio of abars.
  current_alpha = abar_t / abar_prev
  current_beta = 1.0 - current_alpha

  if prediction_type == "epsilon":
    x0_hat = (x_k - jnp.sqrt(beta_prod_t) * model_output) / jnp.sqrt(abar_t)
  else:
    x0_hat = model_output
  if clip_sample:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)

  # Mean of the posterior q(x_{t_prev} | x_k, x0_hat).
  mean = (jnp.sqrt(abar_prev) * current_beta / beta_prod_t * x0_hat
          + jnp.sqrt(current_alpha) * beta_prod_prev / beta_prod_t * x_k)
  variance = jnp.maximum(beta_prod_prev / beta_prod_t * current_beta, _MIN_VARIANCE)
  noise = jax.random.normal(key, x_k.shape, x_k.dtype)
  add_noise = expand(jnp.asarray(k) > 0, ndim)
  return mean + jnp.where(add_noise, jnp.sqrt(variance) * noise, 0.0)


def ddim_step(schedule: NoiseSchedule, x_k: jax.Array, model_output: jax.Array, k: jax.Array,
              t_prev: jax.Array, key: jax.Array, *, prediction_type: str = "epsilon",
              clip_sample: bool = True) -> jax.Array:
  """One deterministic DDIM step x_k -> x_{t_prev} (diffusers `DDIMScheduler.step` with eta = 0 and
  set_alpha_to_one, as Diffusion Policy runs it; Song et al. 2021).

  Args:
    schedule: the noise schedule the model was trained with.
    x_k: [B, ...] current noisy sample.
    model_output: [B, ...] predicted noise ("epsilon") or clean sample ("sample").
    k: int scalar or [B], current step index.
    t_prev: int scalar or [B], next step index (negative at the final step, which goes to abar = 1).
    key: unused (DDIM is deterministic); the argument keeps one signature for every step function.
    prediction_type: "epsilon" or "sample".
    clip_sample: clip the predicted x_0 to [-1, 1].

  Returns:
    x_{t_prev}, same shape as x_k.
  """
  del key
  _check(x_k, model_output, prediction_type)
  abar_t, abar_prev = _alphas_cumprod_pair(schedule, k, t_prev, x_k.ndim, 1.0)
  beta_prod_t = 1.0 - abar_t

  if prediction_type == "epsilon":
    x0_hat = (x_k - jnp.sqrt(beta_prod_t) * model_output) / jnp.sqrt(abar_t)
    eps_hat = model_output
  else:
    x0_hat = model_output
    eps_hat = (x_k - jnp.sqrt(abar_t) * x0_hat) / jnp.sqrt(beta_prod_t)
  # As in diffusers (use_clipped_model_output=False), clipping changes x0_hat but not eps_hat.
  if clip_sample:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
  return jnp.sqrt(abar_prev) * x0_hat + jnp.sqrt(1.0 - abar_prev) * eps_hat
