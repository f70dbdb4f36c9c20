"""Tests for dpjax.diffusion.objective: forward process and training loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.diffusion import objective, schedules

SCHEDULE = schedules.make_schedule("squaredcos_cap_v2", 100)


def test_q_sample_statistics():
  n, k_value = 20000, 60
  x0 = jnp.full((n, 2, 1), 0.7)
  noise = jax.random.normal(jax.random.key(0), x0.shape)
  k = jnp.full((n,), k_value, jnp.int32)
  xk = np.asarray(objective.q_sample(SCHEDULE, x0, noise, k))
  abar = float(SCHEDULE.alphas_cumprod[k_value])
  np.testing.assert_allclose(xk.mean(), np.sqrt(abar) * 0.7, atol=0.02)
  np.testing.assert_allclose(xk.var(), 1 - abar, rtol=0.03)


def test_q_sample_per_example_steps():
  x0 = jnp.ones((3, 4, 2))
  noise = jnp.zeros_like(x0)
  k = jnp.array([0, 50, 99])
  xk = objective.q_sample(SCHEDULE, x0, noise, k)
  np.testing.assert_allclose(np.asarray(xk[:, 0, 0]), np.asarray(SCHEDULE.sqrt_alphas_cumprod[k]), rtol=1e-6)


def _x0():
  return jax.random.uniform(jax.random.key(1), (64, 4, 2), minval=-1, maxval=1)


def test_loss_is_zero_for_the_exact_noise():
  """A denoiser that inverts q_sample exactly has zero loss: k and noise are passed consistently."""
  x0 = _x0()

  def exact_eps(x_noisy, k):
    assert k.shape == (64,) and k.dtype == jnp.int32
    sqrt_abar = SCHEDULE.sqrt_alphas_cumprod[k][:, None, None]
    return (x_noisy - sqrt_abar * x0) / SCHEDULE.sqrt_one_minus_alphas_cumprod[k][:, None, None]

  loss = jax.jit(lambda key: objective.diffusion_loss(exact_eps, SCHEDULE, x0, key))(jax.random.key(2))
  assert loss.shape == () and float(loss) < 1e-6


def test_loss_targets():
  x0 = _x0()
  zeros = lambda x, k: jnp.zeros_like(x)  # noqa: E731
  eps_loss = objective.diffusion_loss(zeros, SCHEDULE, x0, jax.random.key(3), "epsilon")
  sample_loss = objective.diffusion_loss(zeros, SCHEDULE, x0, jax.random.key(3), "sample")
  np.testing.assert_allclose(float(eps_loss), 1.0, atol=0.15)  # E[noise^2] over 512 elements
  np.testing.assert_allclose(float(sample_loss), float(jnp.mean(x0**2)), rtol=1e-6)
  with pytest.raises(ValueError, match="prediction_type"):
    objective.diffusion_loss(zeros, SCHEDULE, x0, jax.random.key(3), "v_prediction")
