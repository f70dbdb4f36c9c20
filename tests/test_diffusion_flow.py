"""Flow matching: the interpolant, the loss's minimiser, the training times, and the Euler/Heun/ancestral chains on
fields with known solutions."""
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


@pytest.mark.parametrize("distribution, mean, share_above_09", [
    ("uniform", 0.5, 0.1), ("logit_normal", 0.5, 0.014), ("beta", 0.6, 0.148)])
def test_training_time_distributions(distribution, mean, share_above_09):
  """uniform; sigmoid of a standard normal (P(t > 0.9) = P(n > logit 0.9 = 2.197) = 0.014); 0.001 + 0.999 u with
  u ~ Beta(1.5, 1) (mean 0.6, P(u > 0.9) = 1 - 0.9^1.5 = 0.146)."""
  t = flow.sample_times(jax.random.key(1), 100_000, distribution=distribution)
  assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
  np.testing.assert_allclose(float(t.mean()), mean, atol=0.005)
  np.testing.assert_allclose(float(jnp.mean(t > 0.9)), share_above_09, atol=0.004)
  with pytest.raises(ValueError, match="Unknown flow time distribution 'cosine'"):
    flow.sample_times(jax.random.key(1), 4, distribution="cosine")


def _gaussian_data_velocity(mean, std):
  """The exact flow-matching velocity E[noise - x0 | x_t] for data x0 ~ N(mean, std^2), elementwise."""
  def velocity(x, step_input):
    t = (step_input / flow.TIME_SCALE)[:, None, None]
    variance = (1 - t) ** 2 * std ** 2 + t ** 2            # of x_t
    centred = x - (1 - t) * mean
    x0 = mean + (1 - t) * std ** 2 / variance * centred     # E[x0 | x_t]
    noise = t / variance * centred                          # E[noise | x_t]
    return noise - x0
  return velocity


def test_ancestral_chain_samples_the_data_distribution_with_the_exact_field():
  """With the exact velocity of Gaussian data, a fine ancestral chain returns samples of N(mean, std^2) (a wrong
  posterior mean or variance would show in the moments); one step returns E[x0 | noise], the data mean."""
  mean, std, shape = 0.3, 0.2, (4096, 4, 2)
  fine = sampler.sample_chain(_gaussian_data_velocity(mean, std), None, shape, jax.random.key(0),
                              method="ancestral", num_inference_steps=200, clip_sample=False)
  np.testing.assert_allclose(float(fine.mean()), mean, atol=0.005)
  np.testing.assert_allclose(float(fine.std()), std, rtol=0.05)
  one = sampler.sample_chain(_gaussian_data_velocity(mean, std), None, shape, jax.random.key(0),
                             method="ancestral", num_inference_steps=1, clip_sample=False)
  np.testing.assert_allclose(one, np.full(shape, mean), atol=1e-6)
  assert sampler.network_calls("ancestral", 7) == 7


def test_ancestral_step_clips_the_clean_estimate_and_ends_at_it():
  noise, x0 = _noise_and_data()
  x_half = flow.interpolate(x0, noise, 0.5)
  exact = lambda x, step_input: noise - x0
  np.testing.assert_allclose(flow.ancestral_step(exact, x_half, 0.5, 0.0, jax.random.key(0)), x0, atol=1e-6)
  far = lambda x, step_input: -10.0 * jnp.ones_like(x)     # x0_hat = x + 5 at t = 0.5: clipped to 1
  np.testing.assert_allclose(flow.ancestral_step(far, x_half, 0.5, 0.0, jax.random.key(0)), np.ones(SHAPE))
  a = flow.ancestral_step(exact, x_half, 0.5, 0.25, jax.random.key(0))
  b = flow.ancestral_step(exact, x_half, 0.5, 0.25, jax.random.key(1))
  assert float(jnp.abs(a - b).max()) > 0.01   # stochastic between t = 0.5 and 0.25


def test_samplers_belong_to_their_objective():
  sampler.check_method("flow", "heun")
  sampler.check_method("flow", "ancestral")
  with pytest.raises(ValueError, match="does not apply to a 'ddpm' model"):
    sampler.check_method("ddpm", "euler")
  with pytest.raises(ValueError, match="Unknown diffusion objective"):
    sampler.check_method("score", "euler")
  with pytest.raises(ValueError, match="need num_inference_steps"):
    sampler.sample_chain(lambda x, k: x, None, SHAPE, jax.random.key(0), method="euler")
