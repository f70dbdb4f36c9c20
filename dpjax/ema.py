"""Exponential moving average of the weights, with the warm-up schedule of the original Diffusion Policy.

decay(step) = clip(1 - (1 + step / inv_gamma) ** -power, min_decay, max_decay), and 0 (copy the weights)
while step <= 0, where step = optimiser step - update_after_step - 2: the original `EMAModel.step` evaluates its
decay with its counter before incrementing it (0 at the first update), then subtracts 1, so the first two updates
copy. With power 0.75 the decay reaches 0.999 after ~10k steps and 0.9999 after ~215k steps.
"""
import jax
import jax.numpy as jnp


def ema_decay(optimizer_step, *, power: float, inv_gamma: float, min_decay: float, max_decay: float,
              update_after_step: int) -> jax.Array:
  """Decay used for the EMA update made after optimiser step `optimizer_step` (1-based, int array ok)."""
  step = jnp.asarray(optimizer_step, jnp.float32) - update_after_step - 2
  decay = 1.0 - (1.0 + step / inv_gamma) ** -power
  decay = jnp.clip(decay, min_decay, max_decay)
  return jnp.where(step <= 0, 0.0, decay)


def ema_update(ema_params, params, decay: jax.Array):
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def decay_from_config(optimizer_step, ema_config) -> jax.Array:
  return ema_decay(optimizer_step, power=ema_config.power, inv_gamma=ema_config.inv_gamma,
                   min_decay=ema_config.min_decay, max_decay=ema_config.max_decay,
                   update_after_step=ema_config.update_after_step)
