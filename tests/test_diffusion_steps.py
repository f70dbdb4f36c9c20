"""Tests for dpjax.diffusion.steps: single DDPM / DDIM steps against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.diffusion import schedules, steps
from tests import schedule_oracles

K = 100
SCHEDULE = schedules.make_schedule("squaredcos_cap_v2", K)
ORACLE = {name: np.float32(table) for name, table in schedule_oracles.tables(SCHEDULE).items()}


def _inputs(shape=(4, 8, 2), seed=0):
  x_key, eps_key = jax.random.split(jax.random.key(seed))
  return jax.random.normal(x_key, shape), jax.random.normal(eps_key, shape)


def _x0_hat(x_k, eps, k):
  return ORACLE["sqrt_recip_alphas_cumprod"][k] * x_k - ORACLE["sqrt_recipm1_alphas_cumprod"][k] * eps


def test_ddpm_step_is_posterior_mean_plus_fixed_small_noise():
  k = 37
  x_k, eps = _inputs((5000, 4, 2))
  mu = ORACLE["posterior_mean_coef1"][k] * _x0_hat(x_k, eps, k) + ORACLE["posterior_mean_coef2"][k] * x_k
  out = steps.ddpm_step(SCHEDULE, x_k, eps, k, k - 1, jax.random.key(1), prediction_type="epsilon",
                        clip_sample=False)
  residual = np.asarray(out - mu)
  np.testing.assert_allclose(residual.mean(), 0.0, atol=3e-3)
  np.testing.assert_allclose(residual.var(), float(ORACLE["posterior_variance"][k]), rtol=0.05)


def test_ddpm_last_step_is_noiseless_and_clipped():
  x_k, eps = _inputs()
  eps = 50 * eps  # pushes x0_hat far outside [-1, 1]
  outs = [steps.ddpm_step(SCHEDULE, x_k, eps, 0, -1, jax.random.key(s), prediction_type="epsilon",
                          clip_sample=True) for s in (1, 2)]
  np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
  # At k = 0 the posterior mean is x0_hat itself (abar_prev = 1).
  np.testing.assert_allclose(np.asarray(outs[0]), np.clip(np.asarray(_x0_hat(x_k, eps, 0)), -1, 1),
                             atol=1e-4)
  assert np.abs(np.asarray(outs[0])).max() <= 1.0


@pytest.mark.parametrize("k, t_prev", [(37, 36), (50, 40), (5, -5)])
def test_ddpm_equals_ddim_with_eta_one(k, t_prev):
  """The DDPM posterior is DDIM's eta = 1 member: sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps + s z.

  Holds for spaced steps too (t_prev = k - K // n), which checks the DDPM abar-ratio form.
  """
  x_k, eps = _inputs()
  key = jax.random.key(3)
  ddpm = steps.ddpm_step(SCHEDULE, x_k, eps, k, t_prev, key, prediction_type="epsilon", clip_sample=False)
  # DDIM with eta = 1 (diffusers' formula; dpjax's DDIM is the eta = 0 member), with DDPM's noise draw.
  abar = float(SCHEDULE.alphas_cumprod[k])
  abar_prev = float(SCHEDULE.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
  s2 = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
  x0 = (np.asarray(x_k) - np.sqrt(1 - abar) * np.asarray(eps)) / np.sqrt(abar)
  z = np.asarray(jax.random.normal(key, x_k.shape))
  ddim_eta_one = np.sqrt(abar_prev) * x0 + np.sqrt(max(1 - abar_prev - s2, 0.0)) * np.asarray(eps) + np.sqrt(s2) * z
  np.testing.assert_allclose(np.asarray(ddpm), ddim_eta_one, atol=1e-5)


@pytest.mark.parametrize("k, t_prev", [(99, 98), (50, 40), (10, 0)])
def test_ddim_deterministic_closed_form(k, t_prev):
  x_k, eps = _inputs()
  x0_hat = np.clip(np.asarray(_x0_hat(x_k, eps, k)), -1, 1)
  abar_prev = float(SCHEDULE.alphas_cumprod[t_prev])
  expected = np.sqrt(abar_prev) * x0_hat + np.sqrt(1 - abar_prev) * np.asarray(eps)
  out = steps.ddim_step(SCHEDULE, x_k, eps, k, t_prev, jax.random.key(0), prediction_type="epsilon",
                        clip_sample=True)
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


def test_ddim_final_step_goes_to_alpha_one():
  x_k, eps = _inputs()
  out = steps.ddim_step(SCHEDULE, x_k, eps, 9, -1, jax.random.key(0), prediction_type="epsilon",
                        clip_sample=False)
  np.testing.assert_allclose(np.asarray(out), np.asarray(_x0_hat(x_k, eps, 9)), atol=1e-5)


def test_sample_prediction_matches_epsilon_prediction():
  """Predicting x_0 directly gives the same step as predicting the eps that implies it."""
  x_k, eps = _inputs()
  k, t_prev = 40, 30
  x0_hat = _x0_hat(x_k, eps, k)
  key = jax.random.key(4)
  for step in (steps.ddpm_step, steps.ddim_step):
    from_eps = step(SCHEDULE, x_k, eps, k, t_prev, key, prediction_type="epsilon", clip_sample=False)
    from_x0 = step(SCHEDULE, x_k, x0_hat, k, t_prev, key, prediction_type="sample", clip_sample=False)
    np.testing.assert_allclose(np.asarray(from_eps), np.asarray(from_x0), atol=1e-4)


def test_per_example_steps_broadcast():
  x_k, eps = _inputs((3, 4, 2))
  k = jnp.array([90, 50, 10])
  batched = steps.ddim_step(SCHEDULE, x_k, eps, k, k - 10, jax.random.key(0), clip_sample=False)
  for i in range(3):
    single = steps.ddim_step(SCHEDULE, x_k[i:i + 1], eps[i:i + 1], int(k[i]), int(k[i]) - 10,
                             jax.random.key(0), clip_sample=False)
    np.testing.assert_allclose(np.asarray(batched[i:i + 1]), np.asarray(single), atol=1e-6)
