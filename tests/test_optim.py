import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dpjax import optim


def _optim_config(**kw):
  c = ml_collections.ConfigDict(dict(learning_rate=1e-4, b1=0.95, b2=0.999, eps=1e-8, weight_decay=1e-6,
                                     encoder_weight_decay=1e-6, warmup_steps=10, schedule="cosine",
                                     grad_clip_norm=0.0, flat_moments=True))
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


@pytest.mark.parametrize("grad_clip_norm", [0.0, 0.5])
def test_flat_moments_give_the_per_array_optimiser_s_steps(grad_clip_norm):
  """optax.flatten keeps Adam's moments as one vector: the same arithmetic element by element, so the same
  parameters after several steps (the transformer's masks: decay on some arrays only)."""
  import jax
  params = {"encoder": {"conv": {"kernel": jnp.linspace(-1, 1, 6).reshape(2, 3)}},
            "denoiser": {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.arange(2.0)},
                         "LayerNorm_0": {"scale": jnp.ones(2), "bias": jnp.zeros(2)}}}
  runs = {}
  for flat in (False, True):
    config = _optim_config(weight_decay=0.1, warmup_steps=2, learning_rate=0.05, flat_moments=flat,
                           grad_clip_norm=grad_clip_norm)
    opt = optim.make_optimizer(config, params, "transformer", 10)
    p, state = params, opt.init(params)
    for i in range(5):
      grads = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1)) + 0.3, p)
      updates, state = opt.update(grads, state, p)
      p = optax.apply_updates(p, updates)
    runs[flat] = p
    assert (len(jax.tree.leaves(state)) < len(jax.tree.leaves(params))) == flat   # one vector per moment
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), runs[False], runs[True])
  assert not np.allclose(runs[True]["denoiser"]["Dense_0"]["kernel"], params["denoiser"]["Dense_0"]["kernel"])


def test_the_gradient_norm_follows_the_optimiser_s_layout():
  from dpjax import train_step
  params = {"denoiser": {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": -jnp.ones(4)}}}
  for flat in (False, True):
    opt = optim.make_optimizer(_optim_config(flat_moments=flat), params, "unet1d", 10)
    state = opt.init(params)
    assert optim.moments_are_flat(state) is flat
    np.testing.assert_allclose(train_step.grad_norm_like_optimizer(params, state), np.sqrt(55.0 + 4.0), rtol=1e-6)


def test_the_global_norm_is_the_norm_of_every_leaf_together():
  from dpjax import train_step
  tree = {"a": jnp.arange(6.0).reshape(2, 3), "b": {"c": -jnp.ones(4)}}
  np.testing.assert_allclose(train_step.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
  np.testing.assert_allclose(train_step.global_norm(tree), np.sqrt(55.0 + 4.0), rtol=1e-6)


def test_the_step_reports_the_learning_rate_it_applied():
  import jax
  from dpjax import train_step
  from tests import smoke
  pol = smoke.random_policy()
  config = _optim_config(learning_rate=0.03, warmup_steps=0, weight_decay=0.0, encoder_weight_decay=0.0)
  schedule = optim.learning_rate_schedule(config, num_steps=20)
  opt = optim.make_optimizer(config, pol.params, "unet1d", 20)
  state = train_step.create_train_state(pol.params, opt)
  ema_config = ml_collections.ConfigDict(dict(power=0.75, inv_gamma=1.0, min_decay=0.0, max_decay=0.9999,
                                              update_after_step=0))
  batch = smoke.random_batch(pol.spec, batch_size=2, seed=0)
  step = jax.jit(lambda s, b, k, n: train_step.train_step(s, b, k, n, spec=pol.spec, optimizer=opt,
                                                          ema_config=ema_config, learning_rate=schedule))
  new, metrics = step(state, batch, jax.random.key(0), pol.normalizer)
  # Adam's first update is lr * g / |g| for every weight with a gradient: the largest move is the rate applied
  # (lr(0) = 0.03 here; lr(1) would be 0.6 % lower).
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(pol.params)))
  np.testing.assert_allclose(metrics["learning_rate"], moved, rtol=1e-3)
  np.testing.assert_allclose(metrics["learning_rate"], 0.03, rtol=1e-6)


@pytest.mark.parametrize("variant, backend, flat", [
    ("lowdim", "cpu", True), ("lowdim", "gpu", True), ("lowdim", "tpu", True),
    ("transformer", "gpu", True), ("transformer", "tpu", False), ("image,transformer", "tpu", False),
    ("image", "gpu", False), ("image", "tpu", False)])
def test_left_to_the_library_the_moments_layout_follows_the_network_and_backend(variant, backend, flat):
  """None (the configs' default): flat where fewer kernels pay, per array for the image U-Net (bytes dominate) and
  for a transformer on a TPU (XLA:TPU pads the whole flat vector like the [width, 2] output head's kernel); a set
  value is kept."""
  import jax
  from dpjax import bench, config_files, policy
  from dpjax.data import pusht
  config = config_files.get_config(variant + ",smoke")
  spec = policy.spec_from_config(config, pusht.OBS_SHAPES[config.data.obs_type], bench.ACTION_DIM)
  params = jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0))
  assert optim.resolve_flat_moments(config.optim, params, spec.denoiser, backend) is flat
  opt = optim.make_optimizer(config.optim, params, spec.denoiser, 10, backend)
  assert optim.moments_are_flat(jax.eval_shape(opt.init, params)) is flat
  for value in (True, False):
    config.optim.flat_moments = value
    assert optim.resolve_flat_moments(config.optim, params, spec.denoiser, backend) is value


def test_clipping_is_optax_s_and_leaves_the_state_as_it_was():
  """Clipping keeps no state, so a run resumes with it turned on or off (the NaN error suggests turning it on)."""
  import jax
  params = {"denoiser": {"w": jnp.linspace(-1.0, 1.0, 5), "v": jnp.ones((2, 3))}}
  grads = jax.tree.map(lambda x: 3.0 * jnp.cos(x), params)
  adam = optax.scale_by_adam(b1=0.95, b2=0.999)
  reference = optax.chain(optax.clip_by_global_norm(0.5), adam)
  clipped = optim.clip_then(adam, 0.5)
  want, _ = reference.update(grads, reference.init(params), params)
  got, _ = clipped.update(grads, clipped.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
  for flat in (False, True):
    states = [optim.make_optimizer(_optim_config(grad_clip_norm=c, flat_moments=flat), params, "unet1d", 10)
              .init(params) for c in (0.0, 1.0)]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
  with pytest.raises(ValueError, match=r"grad_clip_norm=-1.0: give a global norm > 0, or 0 to disable"):
    optim.make_optimizer(_optim_config(grad_clip_norm=-1.0), params, "unet1d", 10)
