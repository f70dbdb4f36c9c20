import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dpjax import optim


def _optim_config(**kw):
  c = ml_collections.ConfigDict(dict(learning_rate=1e-4, b1=0.95, b2=0.999, eps=1e-8, weight_decay=1e-6,
                                     encoder_weight_decay=1e-6, warmup_steps=10, schedule="cosine",
                                     grad_clip_norm=0.0))
  c.update(kw)
  return c


def test_schedule_warms_up_then_decays_to_zero():
  lr = optim.learning_rate_schedule(_optim_config(), num_steps=100)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(10)), 1e-4, rtol=1e-6)
  assert float(lr(55)) < 1e-4
  np.testing.assert_allclose(float(lr(100)), 0.0, atol=1e-12)
  with pytest.raises(ValueError, match="schedule"):
    optim.learning_rate_schedule(_optim_config(schedule="step"), 100)


def test_transformer_masks_exclude_biases_and_split_encoder():
  params = {"encoder": {"conv": {"kernel": jnp.ones((3, 3))}},
            "denoiser": {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
                         "LayerNorm_0": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}}
  main, enc = optim.weight_decay_masks(params, "transformer")
  assert main["encoder"]["conv"]["kernel"] is False and enc["encoder"]["conv"]["kernel"] is True
  assert enc["denoiser"]["Dense_0"]["kernel"] is False
  assert main["denoiser"]["Dense_0"]["bias"] is False
  assert main["denoiser"]["LayerNorm_0"]["scale"] is False


def test_adamw_step_applies_decoupled_weight_decay():
  params = {"denoiser": {"w": jnp.ones(2)}}
  opt = optim.make_optimizer(_optim_config(weight_decay=0.5, warmup_steps=0, schedule="constant",
                                           learning_rate=0.1), params, "unet1d", 10)
  # A zero gradient leaves only the decay term: w <- w - lr * wd * w.
  updates, _ = opt.update({"denoiser": {"w": jnp.zeros(2)}}, opt.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["denoiser"]["w"], 0.95 * np.ones(2), rtol=1e-6)
