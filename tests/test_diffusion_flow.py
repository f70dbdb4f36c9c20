"""Flow matching: the interpolant, the loss's minimiser, and the Euler/Heun chains on fields with known solutions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.diffusion import flow, sampler

SHAPE = (3, 4, 2)


def _noise_and_data(seed=0):
  noise_key, data_key = jax.random.split(jax.random.key(seed))
  return jax.random.normal(noise_key, SHAPE), jax.random.uniform(data_key, SHAPE, minval=-0.9, maxval=0.9)


def test_interpolant_ends_at_data_and_noise():
  noise, x0 = _noise_and_data()
  np.testing.assert_allclose(flow.interpolate(x0, noise, jnp.zeros(3)), x0)
  np.testing.assert_allclose(flow.interpolate(x0, noise, jnp.ones(3)), noise)
  half = flow.interpolate(x0, noise, jnp.array([0.5, 0.5, 0.5]))
  np.testing.assert_allclose(half, 0.5 * (x0 + noise), rtol=1e-6)


def test_loss_is_zero_for_the_true_velocity_and_sees_the_scaled_time():
  noise, x0 = _noise_and_data()
  seen = []

  def true_velocity(x, step_input):
    seen.append(step_input)
    return noise - x0

  loss = flow.flow_loss(true_velocity, x0, noise, jnp.array([0.0, 0.3, 1.0]))
  assert float(loss) == 0.0
  np.testing.assert_allclose(seen[0], np.array([0.0, 0.3, 1.0]) * flow.TIME_SCALE, rtol=1e-6)
  assert float(flow.flow_loss(lambda x, s: jnp.zeros_like(x), x0, noise, jnp.full((3,), 0.5))) > 0.1


def test_one_euler_step_follows_a_straight_path_exactly():
  noise, x0 = _noise_and_data()
  straight = lambda x, step_input: noise - x0   # the velocity of the straight path from x0 to noise
  out = sampler.sample_chain(straight, None, SHAPE, jax.random.key(0), method="euler", num_inference_steps=1,
                             noise=noise, clip_sample=False)
  np.testing.assert_allclose(out, x0, atol=1e-6)


@pytest.mark.parametrize("method, steps, tolerance", [("euler", 50, 0.05), ("heun", 5, 1e-3)])
def test_chains_integrate_a_curved_field(method, steps, tolerance):
  """dx/dt = x t has the solution x(0) = x(1) exp(-1/2); Heun is second order, Euler first."""
  noise, _ = _noise_and_data()
  field = lambda x, step_input: x * (step_input / flow.TIME_SCALE)[:, None, None]
  out = sampler.sample_chain(field, None, SHAPE, jax.random.key(0), method=method, num_inference_steps=steps,
                             noise=noise, clip_sample=False)
  np.testing.assert_allclose(out, noise * np.exp(-0.5), atol=tolerance)


def test_chain_clips_and_counts_calls():
  field = lambda x, step_input: -10.0 * jnp.ones_like(x)
  out = sampler.sample_chain(field, None, SHAPE, jax.random.key(0), method="heun", num_inference_steps=3)
  assert float(out.max()) == 1.0   # x1 + 10 clipped to the normalised action range
  assert sampler.network_calls("heun", 3) == 6 and sampler.network_calls("euler", 3) == 3
  assert sampler.network_calls("ddim", 10) == 10


def test_time_grid_and_training_times():
  np.testing.assert_allclose(flow.time_grid(4), [1.0, 0.75, 0.5, 0.25, 0.0])
  with pytest.raises(ValueError, match="int >= 1"):
    flow.time_grid(0)
  t = flow.sample_times(jax.random.key(0), 10_000, fraction_at_noise=0.5)
  assert 0.45 < float(jnp.mean(t == 1.0)) < 0.55 and float(t.min()) >= 0.0
  assert float(jnp.mean(flow.sample_times(jax.random.key(0), 10_000) == 1.0)) == 0.0


def test_samplers_belong_to_their_objective():
  sampler.check_method("flow", "heun")
  with pytest.raises(ValueError, match="does not apply to a 'ddpm' model"):
    sampler.check_method("ddpm", "euler")
  with pytest.raises(ValueError, match="Unknown diffusion objective"):
    sampler.check_method("score", "euler")
  with pytest.raises(ValueError, match="need num_inference_steps"):
    sampler.sample_chain(lambda x, k: x, None, SHAPE, jax.random.key(0), method="euler")
