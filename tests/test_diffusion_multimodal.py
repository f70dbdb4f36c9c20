"""The paper's central claim on a toy task: diffusion keeps both modes, MSE regression averages them.

One observation, two equally likely expert action chunks: all +1 ("go right") or all -1 ("go left").
A small denoiser trained with `diffusion_loss` and sampled with `sample_chain` (DDPM), or trained with
`flow.flow_loss` and sampled with Euler or ancestral steps (flow matching), puts a real share of samples on each
mode; a regressor trained with MSE on the same data predicts their average, 0, an action no expert ever took.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpjax.diffusion import flow, objective, sampler, schedules
from dpjax.nets.embeddings import sinusoidal_embedding

T, DA = 4, 1
BATCH, TRAIN_STEPS, NUM_SAMPLES = 256, 600, 200
OBS = jnp.array([0.3, -0.7])  # the single observation, closed over by the denoiser


class MLP(nn.Module):
  """A small eps-predictor (or regressor): concat(inputs) -> 2 hidden layers -> [B, T, Da]."""
  width: int = 64

  @nn.compact
  def __call__(self, *inputs):
    h = jnp.concatenate(inputs, axis=-1)
    for _ in range(2):
      h = nn.Dense(self.width)(h)
      h = jax.nn.mish(h)
    return nn.Dense(T * DA)(h).reshape(-1, T, DA)


def _expert_actions(key, batch):
  """[B, T, Da] chunks of all +1 or all -1, each with probability 1/2."""
  sign = jnp.where(jax.random.bernoulli(key, 0.5, (batch, 1, 1)), 1.0, -1.0)
  return jnp.broadcast_to(sign, (batch, T, DA))


def _obs(batch):
  return jnp.broadcast_to(OBS, (batch, OBS.shape[0]))


def _denoiser(net, params):
  def denoise_fn(x, k):
    batch = x.shape[0]
    return net.apply(params, x.reshape(batch, -1), sinusoidal_embedding(k, 16), _obs(batch))
  return denoise_fn


def _train(loss_fn, params, key, learning_rate=3e-3):
  """Adam for TRAIN_STEPS steps, as one jitted scan."""
  optimizer = optax.adam(learning_rate)

  def step(carry, step_key):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, step_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  @jax.jit
  def run(params, key):
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, TRAIN_STEPS))
    return params, losses

  return run(params, key)


def _ddpm_loss(denoise_fn, schedule, x0, key):
  return objective.diffusion_loss(denoise_fn, schedule, x0, key)


def _flow_loss(denoise_fn, schedule, x0, key):
  del schedule
  time_key, noise_key = jax.random.split(key)
  return flow.flow_loss(denoise_fn, x0, jax.random.normal(noise_key, x0.shape), flow.sample_times(time_key, len(x0)))


def _mode_shares(samples):
  samples = np.asarray(samples)
  return (np.mean(np.abs(samples - 1.0).max(axis=(1, 2)) < 0.3), np.mean(np.abs(samples + 1.0).max(axis=(1, 2)) < 0.3))


@pytest.mark.parametrize("loss, method, num_inference_steps", [(_ddpm_loss, "ddpm", 100), (_flow_loss, "euler", 10),
                                                               (_flow_loss, "ancestral", 10)])
def test_diffusion_keeps_both_modes(loss, method, num_inference_steps, seed=0):
  schedule = schedules.make_schedule("squaredcos_cap_v2", 100)  # the paper's K
  init_key, train_key, sample_key, *_ = jax.random.split(jax.random.key(seed), 5)

  # Diffusion (or flow) policy.
  net = MLP()
  params = net.init(init_key, jnp.zeros((1, T * DA)), jnp.zeros((1, 16)), _obs(1))

  def diffusion_loss(params, key):
    data_key, loss_key = jax.random.split(key)
    x0 = _expert_actions(data_key, BATCH)
    return loss(_denoiser(net, params), schedule, x0, loss_key)

  params, losses = _train(diffusion_loss, params, train_key)
  assert float(losses[-50:].mean()) < float(losses[:50].mean())
  samples = jax.jit(lambda p, key: sampler.sample_chain(_denoiser(net, p), schedule, (NUM_SAMPLES, T, DA), key,
                                                        method=method, num_inference_steps=num_inference_steps))(
                                                            params, sample_key)
  samples = np.asarray(samples)
  near_right, near_left = _mode_shares(samples)
  print(f"seed {seed}: right {near_right:.2f} left {near_left:.2f} mean {samples.mean():+.3f}")
  assert near_right > 0.2 and near_left > 0.2, (near_right, near_left)
  assert near_right + near_left > 0.8, (near_right, near_left)
  assert abs(samples.mean()) < 0.5


def test_regression_averages_the_modes(seed=0):
  """Explicit regression on the same data: the MSE optimum is the mean of the modes, an action no expert took."""
  *_, reg_init_key, reg_train_key = jax.random.split(jax.random.key(seed), 5)   # the keys this test always used
  regressor = MLP()
  reg_params = regressor.init(reg_init_key, _obs(1))

  def mse_loss(params, key):
    actions = _expert_actions(key, BATCH)
    return jnp.mean(jnp.square(regressor.apply(params, _obs(BATCH)) - actions))

  reg_params, _ = _train(mse_loss, reg_params, reg_train_key)
  prediction = np.asarray(regressor.apply(reg_params, _obs(1)))
  print(f"regression prediction {prediction.ravel()}")
  assert np.abs(prediction).max() < 0.2, prediction
  assert np.abs(prediction - 1.0).min() > 0.7 and np.abs(prediction + 1.0).min() > 0.7


def test_reflow_student_keeps_both_modes_in_one_step(seed=1):
  """A flow teacher sampled in one Euler step averages the modes (its velocity at t = 1 points at their mean); a
  student trained on the teacher's 10-step (noise, chunk) pairs (distillation by reflow) lands on the teacher's
  own chunk for each noise in one step, so both modes survive."""
  teacher_key, student_key, noise_key = jax.random.split(jax.random.key(seed), 3)
  init_key, train_key = jax.random.split(teacher_key)
  net = MLP()
  teacher = net.init(init_key, jnp.zeros((1, T * DA)), jnp.zeros((1, 16)), _obs(1))

  def teacher_loss(params, key):
    data_key, loss_key = jax.random.split(key)
    return _flow_loss(_denoiser(net, params), None, _expert_actions(data_key, BATCH), loss_key)

  teacher, _ = _train(teacher_loss, teacher, train_key)

  def chain(params, noise, steps):
    return sampler.sample_chain(_denoiser(net, params), None, noise.shape, jax.random.key(0), method="euler",
                                num_inference_steps=steps, noise=noise)

  def student_loss(params, key):
    noise_key, time_key = jax.random.split(key)
    noise = jax.random.normal(noise_key, (BATCH, T, DA))
    target = jax.lax.stop_gradient(chain(teacher, noise, 10))
    return flow.flow_loss(_denoiser(net, params), target, noise, flow.sample_times(time_key, BATCH, 0.5))

  student, _ = _train(student_loss, teacher, student_key)
  noise = jax.random.normal(noise_key, (NUM_SAMPLES, T, DA))
  teacher_10, teacher_1, student_1 = (np.asarray(jax.jit(chain, static_argnums=2)(p, noise, n))
                                      for p, n in ((teacher, 10), (teacher, 1), (student, 1)))
  print("teacher 10 steps", _mode_shares(teacher_10), "teacher 1 step", _mode_shares(teacher_1),
        "student 1 step", _mode_shares(student_1), "student vs teacher", np.abs(student_1 - teacher_10).mean())
  assert min(_mode_shares(teacher_10)) > 0.2
  assert sum(_mode_shares(teacher_1)) < 0.5          # one step of the teacher: mostly between the modes
  assert min(_mode_shares(student_1)) > 0.2 and sum(_mode_shares(student_1)) > 0.8
  assert np.abs(student_1 - teacher_10).mean() < 0.2  # the same mode as the teacher for the same noise
