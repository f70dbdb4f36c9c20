"""TransformerDenoiser: parameter counts against the original, masks, dropout, weight decay, end-to-end grads."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpjax.nets import obs_encoder
from dpjax.nets import transformer

TINY = dict(num_layers=2, num_heads=2, width=32)


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _original_param_count(width, num_layers, horizon, n_obs_steps, action_dim, cond_dim):
  """TransformerForDiffusion's parameter count (decoder, MLP condition encoder), term by term."""
  linear = lambda i, o: i * o + o
  attention = 3 * linear(width, width) + linear(width, width)  # in_proj (q, k, v) + out_proj
  layer = 2 * attention + linear(width, 4 * width) + linear(4 * width, width) + 3 * 2 * width  # + 3 LayerNorms
  return (linear(action_dim, width) + horizon * width  # input_emb, pos_emb
          + linear(cond_dim, width) + (1 + n_obs_steps) * width  # cond_obs_emb, cond_pos_emb
          + linear(width, 4 * width) + linear(4 * width, width)  # condition MLP
          + num_layers * layer + 2 * width + linear(width, action_dim))  # decoder, ln_f, head


def _init(model, batch=1, horizon=16, action_dim=2, steps=2, cond_dim=20, abstract=False):
  args = (jnp.zeros((batch, horizon, action_dim)), jnp.zeros((batch,), jnp.int32),
          jnp.zeros((batch, steps, cond_dim)))
  init = lambda: model.init(jax.random.key(0), *args, train=False)["params"]
  return jax.eval_shape(init) if abstract else init()


@pytest.mark.parametrize("cond_dim, attn_dropout, expected", [(20, 0.01, 8_965_122), (66, 0.3, 8_976_898)])
def test_pusht_param_count_matches_original(cond_dim, attn_dropout, expected):
  model = transformer.TransformerDenoiser(horizon=16, n_obs_steps=2, attn_dropout=attn_dropout)
  params = _init(model, cond_dim=cond_dim, abstract=True)
  assert _count(params) == expected == _original_param_count(256, 8, 16, 2, 2, cond_dim)


def test_masks_match_the_original():
  np.testing.assert_array_equal(transformer.causal_mask(3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
  # Condition token 0 is the time step: action t sees obs steps 0..t.
  np.testing.assert_array_equal(transformer.memory_mask(3, 4),
                                [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])


def _tiny_inputs(batch=2, horizon=6, steps=3):
  keys = jax.random.split(jax.random.key(7), 2)
  return (jax.random.normal(keys[0], (batch, horizon, 2)), jnp.array([3, 40])[:batch],
          jax.random.normal(keys[1], (batch, steps, 5)))


def _tiny_model(**kwargs):
  return transformer.TransformerDenoiser(horizon=6, n_obs_steps=3, **{**TINY, "attn_dropout": 0.0, **kwargs})


def _sensitive(variables):
  """Kernels x10: at the original's init (std 0.02) one input's effect is too close to float noise to test."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p * 10.0 if getattr(path[-1], "key", None) == "kernel" else p, variables)


@pytest.fixture(scope="module")
def causal_setup():
  """(inputs, sensitive params, jitted eval apply) of the tiny causal model, compiled once."""
  model = _tiny_model()
  x, k, obs = _tiny_inputs()
  params = _sensitive(jax.jit(lambda: model.init(jax.random.key(0), x, k, obs, train=False))())
  return (x, k, obs), params, jax.jit(lambda p, x, obs: model.apply(p, x, k, obs, train=False))


def test_causal_self_attention_hides_future_actions(causal_setup):
  (x, _, obs), params, apply = causal_setup
  base = apply(params, x, obs)
  assert base.shape == x.shape
  j = 3
  out = apply(params, x.at[:, j].add(1.0), obs)
  np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-6)
  assert not np.allclose(out[:, j], base[:, j], atol=1e-3)


def test_memory_mask_hides_later_observation_steps(causal_setup):
  (x, _, obs), params, apply = causal_setup
  base = apply(params, x, obs)
  s = 2  # obs step 2 is condition token 3: visible from action token 2 on
  out = apply(params, x, obs.at[:, s].add(1.0))
  np.testing.assert_allclose(out[:, :s], base[:, :s], atol=1e-6)
  assert not np.allclose(out[:, s], base[:, s], atol=1e-3)


def test_non_causal_attention_sees_everything():
  model = _tiny_model(causal_attn=False)
  x, k, obs = _tiny_inputs()
  params = _sensitive(model.init(jax.random.key(0), x, k, obs, train=False))
  base = model.apply(params, x, k, obs, train=False)
  assert not np.allclose(model.apply(params, x.at[:, -1].add(1.0), k, obs, train=False)[:, 0], base[:, 0])
  assert not np.allclose(model.apply(params, x, k, obs.at[:, -1].add(1.0), train=False)[:, 0], base[:, 0])


def test_dropout_only_in_training():
  model = _tiny_model(attn_dropout=0.3, embed_dropout=0.1)
  x, k, obs = _tiny_inputs()
  params = model.init(jax.random.key(0), x, k, obs, train=False)
  eval_out = model.apply(params, x, k, obs, train=False)
  np.testing.assert_array_equal(eval_out, model.apply(params, x, k, obs, train=False))
  train_a = model.apply(params, x, k, obs, train=True, rngs={"dropout": jax.random.key(1)})
  train_b = model.apply(params, x, k, obs, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(train_a, train_b)
  assert not np.allclose(train_a, eval_out)


def test_weight_decay_mask_follows_get_optim_groups():
  params = _init(_tiny_model(), horizon=6, steps=3, cond_dim=5)
  mask = transformer.weight_decay_mask(params)
  flat = {"/".join(p.key for p in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["input_emb/kernel"] and flat["layer0/self_attn/query/kernel"] and flat["layer1/ff/linear2/kernel"]
  assert flat["cond_mlp1/kernel"] and flat["head/kernel"]
  assert not any(flat[n] for n in ("pos_emb", "cond_pos_emb", "ln_f/scale", "ln_f/bias", "input_emb/bias",
                                   "layer0/norm1/scale", "layer0/cross_attn/out/bias"))
  decayed = sum(math.prod(leaf.shape) for leaf, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m)
  width, layers = 32, 2  # Linear weights: input, cond_obs, cond MLP, per layer 8 attention + 2 FF, head
  assert decayed == (2 * width + 5 * width + 8 * width * width
                     + layers * (8 * width * width + 8 * width * width) + width * 2)


def test_image_encoder_and_transformer_train_together():
  """A few Adam steps on a random regression: gradients reach the stem through spatial softmax and the crop."""
  # 36x36 crops leave a 2x2 final feature map: the smallest on which the soft-argmax is not constant.
  shapes = (("agent_pos", (2,)), ("image", (40, 40, 3)))
  encoder = obs_encoder.ObservationEncoder(obs_shapes=shapes, crop_shape=(36, 36), width=16, num_keypoints=4,
                                           feature_dim=8)
  denoiser = transformer.TransformerDenoiser(horizon=4, n_obs_steps=2, attn_dropout=0.01, num_layers=1,
                                             num_heads=2, width=32)
  keys = jax.random.split(jax.random.key(0, impl="rbg"), 8)  # rbg: the ResNet init compiles ~3x faster
  obs = {"image": jax.random.uniform(keys[0], (2, 2, 40, 40, 3), minval=-1.0, maxval=1.0),
         "agent_pos": jax.random.normal(keys[1], (2, 2, 2))}
  x = jax.random.normal(keys[2], (2, 4, 2))
  k = jnp.arange(2)
  target = jax.random.normal(keys[3], (2, 4, 2))
  rngs = {"params": keys[4], "crop": keys[5], "dropout": keys[5]}
  features = jnp.zeros((2, 2, 10))
  params = jax.jit(lambda: {"encoder": encoder.init(rngs, obs, train=True)["params"],
                            "denoiser": denoiser.init(rngs, x, k, features, train=False)["params"]})()

  def loss_fn(params, key, train):
    crop_key, dropout_key = jax.random.split(key)
    feats = encoder.apply({"params": params["encoder"]}, obs, train, rngs={"crop": crop_key})
    pred = denoiser.apply({"params": params["denoiser"]}, x, k, feats, train, rngs={"dropout": dropout_key})
    return jnp.mean((pred - target) ** 2)

  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, key):
    grads = jax.grad(loss_fn)(params, key, True)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, grads

  eval_loss = jax.jit(lambda params: loss_fn(params, keys[6], False))
  opt_state = optimizer.init(params)
  initial = eval_loss(params)
  for step_key in jax.random.split(keys[7], 8):
    params, opt_state, grads = step(params, opt_state, step_key)
    for name in ("stem_conv", "spatial_softmax"):
      assert jnp.any(jax.tree.leaves(grads["encoder"]["image"][name])[0] != 0), name
  assert eval_loss(params) < 0.7 * initial


def test_conditioning_split_equals_the_whole_call():
  # conditioning_only returns what depends on (k, obs) only; passing it back gives the whole call's output.
  x, k, obs = _tiny_inputs()
  for model in (_tiny_model(), _tiny_model(causal_attn=False)):
    params = model.init(jax.random.key(0), x, k, obs, train=False)
    conditioning = model.apply(params, None, k, obs, train=False, conditioning_only=True)
    assert conditioning.shape == (x.shape[0], 1 + 3, TINY["width"])
    np.testing.assert_array_equal(model.apply(params, x, None, None, train=False, conditioning=conditioning),
                                  model.apply(params, x, k, obs, train=False))
