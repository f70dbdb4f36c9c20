"""Tests for dpjax.diffusion.sampler: the scanned reverse chain."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.diffusion import sampler, schedules

K = 20
SCHEDULE = schedules.make_schedule("squaredcos_cap_v2", K)
SHAPE = (3, 4, 2)
POINT = jnp.array([[0.5, -0.25]] * 4)  # [T, Da], inside [-1, 1]


def _true_eps(schedule, point):
  """The exact eps-predictor of a data distribution that is the single point `point`."""
  def denoise_fn(x, k):
    sqrt_abar = schedule.sqrt_alphas_cumprod[k][:, None, None]
    return (x - sqrt_abar * point) / schedule.sqrt_one_minus_alphas_cumprod[k][:, None, None]
  return denoise_fn


@pytest.mark.parametrize("method, num_inference_steps, spacing", [
    ("ddpm", K, "leading"), ("ddpm", 5, "leading"), ("ddim", K, "leading"), ("ddim", 4, "leading"),
    ("ddpm", 3, "trailing"), ("ddim", 1, "trailing"), ("ddim", 4, "trailing")])
def test_chain_recovers_a_single_point(method, num_inference_steps, spacing):
  x0 = sampler.sample_chain(_true_eps(SCHEDULE, POINT), SCHEDULE, SHAPE, jax.random.key(0), method=method,
                            num_inference_steps=num_inference_steps, timestep_spacing=spacing)
  np.testing.assert_allclose(np.asarray(x0), np.broadcast_to(POINT, SHAPE), atol=1e-4)


def test_sample_prediction_recovers_a_single_point():
  x0 = sampler.sample_chain(lambda x, k: jnp.broadcast_to(POINT, x.shape), SCHEDULE, SHAPE, jax.random.key(0),
                            method="ddpm", prediction_type="sample")
  np.testing.assert_allclose(np.asarray(x0), np.broadcast_to(POINT, SHAPE), atol=1e-5)


def test_ddim_is_deterministic_given_the_key_and_ddpm_is_not():
  denoise_fn = lambda x, k: 0.1 * x  # noqa: E731
  run = lambda method, key: sampler.sample_chain(denoise_fn, SCHEDULE, SHAPE, key, method=method,  # noqa: E731
                                                 num_inference_steps=5, clip_sample=False)
  np.testing.assert_array_equal(np.asarray(run("ddim", jax.random.key(0))), np.asarray(run("ddim", jax.random.key(0))))
  assert not np.allclose(np.asarray(run("ddim", jax.random.key(0))), np.asarray(run("ddim", jax.random.key(1))))
  # Same x_K (same first split) but DDPM adds noise at every step, so the two chains part.
  assert not np.allclose(np.asarray(run("ddpm", jax.random.key(0))), np.asarray(run("ddim", jax.random.key(0))))


def test_compiles_once_and_is_one_scan():
  chex.clear_trace_counter()

  @chex.assert_max_traces(n=1)
  def denoise_fn(x, k):
    return 0.5 * x + 0.01 * k[:, None, None]

  sample = jax.jit(functools.partial(sampler.sample_chain, denoise_fn),
                   static_argnames=("shape", "method", "num_inference_steps"))
  out_a = sample(SCHEDULE, SHAPE, jax.random.key(0), method="ddpm", num_inference_steps=K)
  other = schedules.make_schedule("squaredcos_cap_v2", K)  # new arrays, same structure
  out_b = sample(other, SHAPE, jax.random.key(1), method="ddpm", num_inference_steps=K)
  assert out_a.shape == out_b.shape == SHAPE
  assert not np.allclose(np.asarray(out_a), np.asarray(out_b))
  # The whole chain is a single scan of length K; the denoiser appears once, inside it.
  jaxpr = jax.make_jaxpr(lambda key: sampler.sample_chain(lambda x, k: 0.5 * x, SCHEDULE, SHAPE, key,
                                                          num_inference_steps=K))(jax.random.key(0))
  scans = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["length"] == K


@pytest.mark.parametrize("method, num_inference_steps", [("ddpm", K), ("ddim", 4), ("euler", 6), ("ancestral", 6)])
def test_unrolled_chain_takes_the_same_steps(method, num_inference_steps):
  denoise_fn = lambda x, k: 0.3 * x + 0.01 * k[:, None, None]  # noqa: E731
  run = lambda unroll: sampler.sample_chain(denoise_fn, SCHEDULE, SHAPE, jax.random.key(3), method=method,  # noqa
                                            num_inference_steps=num_inference_steps, unroll=unroll)
  np.testing.assert_allclose(np.asarray(run(4)), np.asarray(run(1)), atol=1e-6)
  jaxpr = jax.make_jaxpr(lambda: sampler.sample_chain(denoise_fn, SCHEDULE, SHAPE, jax.random.key(3), method=method,
                                                      num_inference_steps=num_inference_steps, unroll=4))()
  scans = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "scan"]
  assert len(scans) == 1 and scans[0].params["unroll"] == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_inference_steps=0), r"\[1, 20\]"),
    (dict(num_inference_steps=K + 1), r"\[1, 20\]"),
    (dict(method="dpm_solver"), "Unknown sampling method"),
    (dict(prediction_type="v"), "prediction_type"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sampler.sample_chain(lambda x, k: x, SCHEDULE, SHAPE, jax.random.key(0), **kwargs)


def test_a_conditioned_denoiser_is_conditioned_once_before_the_loop():
  # The conditioning (here the only op using sin) is computed for every step before the scan, not inside it.
  denoiser = sampler.ConditionedDenoiser(condition=lambda k: jnp.sin(k.astype(jnp.float32))[:, None, None],
                                         apply=lambda x, c: 0.1 * x + c)
  plain = lambda x, k: 0.1 * x + jnp.sin(k.astype(jnp.float32))[:, None, None]  # noqa: E731
  chain = lambda fn: sampler.sample_chain(fn, SCHEDULE, SHAPE, jax.random.key(0), method="ddim",  # noqa: E731
                                          num_inference_steps=5)
  np.testing.assert_allclose(chain(denoiser), chain(plain), rtol=1e-6)
  jaxpr = jax.make_jaxpr(lambda: chain(denoiser))()
  scans = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
  assert len(scans) == 1
  assert "sin" not in {e.primitive.name for e in scans[0].params["jaxpr"].eqns}
  assert "sin" in {e.primitive.name for e in jaxpr.eqns}
