"""Tests for dpjax.diffusion.schedules: values against closed forms."""
import jax
import numpy as np
import pytest

from dpjax.diffusion import schedules
from tests import schedule_oracles


def _abar(t):
  return np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2


def test_cosine_betas_are_alpha_bar_ratios_capped():
  num_steps = 100
  s = schedules.make_schedule("squaredcos_cap_v2", num_steps)
  t = np.arange(num_steps)
  expected = np.minimum(1 - _abar((t + 1) / num_steps) / _abar(t / num_steps), 0.999)
  np.testing.assert_allclose(np.asarray(s.betas), expected, rtol=1e-5)
  assert np.asarray(s.betas).max() <= np.float32(0.999)
  # abar(1) = 0, so the last beta is the one the cap binds.
  np.testing.assert_allclose(float(s.betas[-1]), 0.999, rtol=1e-6)
  # Where the cap does not bind, abar_k telescopes to abar((k+1)/K) / abar(0).
  np.testing.assert_allclose(np.asarray(s.alphas_cumprod[:-1]), _abar((t[:-1] + 1) / num_steps) / _abar(0),
                             rtol=1e-4)


def test_linear_betas_endpoints_and_spacing():
  s = schedules.make_schedule("linear", 10, beta_start=1e-4, beta_end=2e-2)
  betas = np.asarray(s.betas)
  np.testing.assert_allclose([betas[0], betas[-1]], [1e-4, 2e-2], rtol=1e-6)
  np.testing.assert_allclose(np.diff(betas), (2e-2 - 1e-4) / 9, rtol=1e-4)


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
def test_derived_quantities(kind):
  num_steps = 50
  s = schedules.make_schedule(kind, num_steps)
  # Float64 references: float32 rounding of beta = 0.999 alone shifts 1 - beta by 1e-5 relative.
  t = np.arange(num_steps)
  if kind == "linear":
    betas = np.linspace(1e-4, 2e-2, num_steps)
  else:
    betas = np.minimum(1 - _abar((t + 1) / num_steps) / _abar(t / num_steps), 0.999)
  abar = np.cumprod(1 - betas)
  np.testing.assert_allclose(np.asarray(s.alphas_cumprod), abar, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(s.sqrt_alphas_cumprod) ** 2, abar, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(s.sqrt_one_minus_alphas_cumprod) ** 2, 1 - abar, rtol=1e-5)
  # The test oracles' posterior (tests/schedule_oracles.py): zero variance at k = 0, and its mean reproduces x_0
  # when x_k is the noiseless forward sample of x_0.
  oracle = schedule_oracles.tables(s)
  np.testing.assert_allclose(oracle["posterior_variance"], (1 - oracle["alphas_cumprod_prev"]) / (1 - abar) * betas,
                             rtol=1e-5)
  assert oracle["posterior_variance"][0] == 0.0
  np.testing.assert_allclose(oracle["posterior_mean_coef1"] + oracle["posterior_mean_coef2"] * np.sqrt(abar),
                             np.sqrt(oracle["alphas_cumprod_prev"]), rtol=1e-5)


def test_num_steps_is_static():
  s = schedules.make_schedule("squaredcos_cap_v2", 20)
  assert s.num_steps == 20 and isinstance(s.num_steps, int)
  assert all(leaf.shape == (20,) for leaf in jax.tree.leaves(s))
  # A jitted function can use it as a Python int (shapes, ranges).
  out = jax.jit(lambda sched: sched.alphas_cumprod[sched.num_steps - 1])(s)
  np.testing.assert_allclose(float(out), float(s.alphas_cumprod[-1]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="cosine", num_steps=10), "Unknown beta schedule"),
    (dict(kind="linear", num_steps=0), "num_steps"),
    (dict(kind="linear", num_steps=2.5), "num_steps"),
    (dict(kind="linear", num_steps=10, beta_end=1.0), r"\(0, 1\)"),
    (dict(kind="linear", num_steps=10, beta_start=0.0), r"\(0, 1\)"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    schedules.make_schedule(**kwargs)


def test_inference_timesteps_leading_spacing():
  np.testing.assert_array_equal(schedules.inference_timesteps(100, 10), np.arange(90, -1, -10))
  np.testing.assert_array_equal(schedules.inference_timesteps(100, 100), np.arange(99, -1, -1))
  np.testing.assert_array_equal(schedules.inference_timesteps(10, 3), [6, 3, 0])
  for bad in (0, 101):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an int in \[1, 100\]"):
      schedules.inference_timesteps(100, bad)


def test_inference_timesteps_trailing_spacing_starts_at_pure_noise():
  np.testing.assert_array_equal(schedules.inference_timesteps(100, 1, "trailing"), [99])
  np.testing.assert_array_equal(schedules.inference_timesteps(100, 2, "trailing"), [99, 49])
  np.testing.assert_array_equal(schedules.inference_timesteps(100, 10, "trailing"), np.arange(99, 0, -10))
  np.testing.assert_array_equal(schedules.inference_timesteps(100, 100, "trailing"), np.arange(99, -1, -1))
  np.testing.assert_array_equal(schedules.inference_timesteps(10, 3, "trailing"), [9, 6, 2])
  with pytest.raises(ValueError, match="Unknown timestep spacing 'linspace'"):
    schedules.inference_timesteps(100, 2, "linspace")


@pytest.mark.parametrize("spacing", schedules.TIMESTEP_SPACINGS)
def test_inference_timesteps_are_n_distinct_training_steps_for_every_n(spacing):
  # K = 100, n = 29 once gave trailing a 30th step at k = -1 (arange's float step), whose x0 estimate divides by
  # sqrt(abar) of the noisiest step: every action clipped to a corner of the action range.
  for num_diffusion_steps in (10, 100, 1000):
    for n in range(1, num_diffusion_steps + 1):
      timesteps = schedules.inference_timesteps(num_diffusion_steps, n, spacing)
      assert len(timesteps) == n and len(np.unique(timesteps)) == n, (num_diffusion_steps, n)
      assert timesteps.min() >= 0 and timesteps.max() <= num_diffusion_steps - 1, (num_diffusion_steps, n)
      assert np.all(np.diff(timesteps) < 0), (num_diffusion_steps, n)


def test_previous_timesteps_end_at_the_clean_sample():
  np.testing.assert_array_equal(schedules.previous_timesteps(np.array([99, 49])), [49, -1])
  np.testing.assert_array_equal(schedules.previous_timesteps(np.array([0])), [-1])
