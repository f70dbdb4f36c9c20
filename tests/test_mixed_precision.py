"""config.policy.compute_dtype: bfloat16 matmuls/convolutions track float32, weights and gradients stay float32;
"bfloat16" (bfloat16 layers) and "bfloat16_matmuls" (bfloat16 matmul operands only, `dpjax/nets/precision.py`)."""
import dataclasses
import functools
import re

import jax
import numpy as np
import pytest

import dpjax
from dpjax import optim, train, train_step
from dpjax import policy as policy_lib
from dpjax.nets import precision
from tests import smoke

# (variant, per-step observation shapes): every network (U-Net, transformer, ResNet-18 encoder) is covered.
VARIANTS = [("smoke", (("low_dim", (20,)),)),
            ("smoke,transformer", (("low_dim", (20,)),)),
            ("smoke,image", (("agent_pos", (2,)), ("image", (96, 96, 3))))]
# Measured on the fixed batch below (BUILD_NOTES.md, "Mixed precision"): relative loss difference <= 7.5e-4,
# relative gradient-norm difference of the difference <= 1.5e-2 ("bfloat16"; "bfloat16_matmuls" is closer).
BFLOAT16_MODES = ("bfloat16", "bfloat16_matmuls")
LOSS_RTOL = 1e-2
GRAD_RTOL = 5e-2


def _batch(spec: policy_lib.PolicySpec, batch_size: int = 16) -> dict:
  return smoke.random_batch(spec, batch_size, seed=0)


def _with_dtype(policy: policy_lib.Policy, dtype: str) -> policy_lib.Policy:
  return dataclasses.replace(policy, spec=dataclasses.replace(policy.spec, compute_dtype=dtype))


def _jitted_loss_and_grad(policy: policy_lib.Policy, batch: dict):
  spec = policy.spec
  return jax.jit(jax.value_and_grad(lambda p: policy_lib.loss_fn(p, spec, policy.normalizer, batch,
                                                                 jax.random.key(1), True)))


def _loss_and_grad(policy: policy_lib.Policy, batch: dict):
  fn = _jitted_loss_and_grad(policy, batch)
  return fn(policy.params), fn


def _global_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))))


@pytest.mark.parametrize("mode", BFLOAT16_MODES)
@pytest.mark.parametrize("variant,obs_shapes", VARIANTS)
def test_bfloat16_loss_and_gradients_track_float32(variant, obs_shapes, mode):
  base = smoke.random_policy(variant, obs_shapes)
  batch = _batch(base.spec)
  (loss32, grads32), _ = _loss_and_grad(_with_dtype(base, "float32"), batch)
  (loss16, grads16), fn16 = _loss_and_grad(_with_dtype(base, mode), batch)
  assert loss16.dtype == np.float32
  np.testing.assert_allclose(float(loss16), float(loss32), rtol=LOSS_RTOL)
  assert all(g.dtype == np.float32 for g in jax.tree.leaves(grads16)), "gradients must stay float32"
  difference = jax.tree.map(lambda a, b: a - b, grads32, grads16)
  assert _global_norm(difference) <= GRAD_RTOL * _global_norm(grads32)
  assert _global_norm(difference) > 0, "bfloat16 changed nothing: the compute dtype is not reaching the network"
  # The compiled step really computes in bfloat16: its dots/convolutions take bf16 operands.
  hlo = fn16.lower(base.params).as_text()
  assert "bf16" in hlo


@pytest.mark.parametrize("mode", ("float32",) + BFLOAT16_MODES)
@pytest.mark.parametrize("variant,obs_shapes", VARIANTS[:2])
def test_the_train_step_takes_the_gradients_of_the_float32_weights(variant, obs_shapes, mode):
  # The step differentiates at the weights with their kernels cast once (`train_step.training_compute_params`), the
  # cast each layer would make: the gradients must be the float32 weights' bit for bit. "bfloat16_matmuls" once cast
  # its kernels too, and its rounded matmul returned their gradients in bfloat16 (0.16 % off).
  policy = _with_dtype(smoke.random_policy(variant, obs_shapes), mode)
  spec, batch = policy.spec, _batch(policy.spec)
  grad = jax.jit(jax.grad(lambda p: policy_lib.loss_fn(p, spec, policy.normalizer, batch, jax.random.key(1), True)))
  want = grad(policy.params)
  got = jax.tree.map(lambda g, p: g.astype(p.dtype), grad(train_step.training_compute_params(policy.params, spec)),
                     policy.params)
  jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("mode", BFLOAT16_MODES)
@pytest.mark.parametrize("variant,obs_shapes", VARIANTS)
def test_sampling_works_in_bfloat16(variant, obs_shapes, mode):
  """float32 sampling is what every other sampling test runs; here bfloat16 for each network."""
  base = smoke.random_policy(variant, obs_shapes)
  obs = _batch(base.spec, batch_size=3)["obs"]
  actions = np.asarray(dpjax.sample(_with_dtype(base, mode), obs, jax.random.key(0)))
  assert actions.dtype == np.float32 and actions.shape == (3, base.spec.horizon, 2)
  assert np.all(np.isfinite(actions))
  if variant == "smoke":
    # Same noise, near-equal denoisers: the chains stay close (actions are pixels of a 512 px workspace).
    reference = np.asarray(dpjax.sample(_with_dtype(base, "float32"), obs, jax.random.key(0)))
    assert np.max(np.abs(actions - reference)) < 32.0


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_accelerators():
  assert policy_lib.resolve_compute_dtype("auto", "cpu") == np.float32
  assert policy_lib.resolve_compute_dtype("auto", "gpu") == jax.numpy.bfloat16
  assert policy_lib.resolve_compute_dtype("auto", "tpu") == jax.numpy.bfloat16
  assert policy_lib.resolve_compute_dtype("float32", "gpu") == np.float32
  with pytest.raises(ValueError, match="compute_dtype='float16' is not one of"):
    policy_lib.resolve_compute_dtype("float16")
  assert policy_lib.resolve_compute_dtype("bfloat16_matmuls", "cpu") == jax.numpy.bfloat16
  assert policy_lib.compute_dtype_name("auto", "cpu") == "float32"
  assert policy_lib.compute_dtype_name("bfloat16_matmuls", "gpu") == "bfloat16_matmuls"
  assert policy_lib.network_dtypes("bfloat16_matmuls") == (np.float32, jax.numpy.bfloat16)
  assert policy_lib.network_dtypes("auto", "gpu") == (jax.numpy.bfloat16, None)


def _dot_operand_and_result_types(hlo_text: str) -> set:
  """{(lhs type, rhs type, result type)} of every dot in an (unoptimised, StableHLO) module's text."""
  return set(re.findall(r"stablehlo\.dot_general.*?:\s*\(tensor<[\dx]*(\w+)>, tensor<[\dx]*(\w+)>\)\s*->\s*"
                        r"tensor<[\dx]*(\w+)>", hlo_text))


def test_rounded_matmul_is_float32_arithmetic_on_bfloat16_operands_forward_and_backward():
  """`precision.matmul`: x [..., K] @ w [K, N] on operands rounded to bfloat16, float32 products and result; its
  gradients are the float32 products of the rounded cotangent and operands, and every dot of the compiled gradient
  multiplies bfloat16 by bfloat16 into float32 (JAX's own transpose would multiply the float32 cotangent by a
  bfloat16 operand: a float32 matmul, which XLA:CPU runs at a third of the rate)."""
  rng = np.random.default_rng(0)
  x, w, g = (jax.numpy.asarray(rng.normal(size=shape), np.float32) for shape in ((3, 5, 24), (24, 7), (3, 5, 7)))
  rounded = lambda a: np.asarray(a.astype(jax.numpy.bfloat16).astype(np.float32), np.float64)
  out, vjp = jax.vjp(lambda x, w: precision.matmul(x, w, jax.numpy.bfloat16), x, w)
  assert out.dtype == np.float32 and out.shape == (3, 5, 7)
  np.testing.assert_allclose(out, rounded(x) @ rounded(w), rtol=1e-5, atol=1e-5)
  dx, dw = vjp(g)
  assert dx.dtype == np.float32 and dw.dtype == np.float32
  np.testing.assert_allclose(dx, rounded(g) @ rounded(w).T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, rounded(x).reshape(-1, 24).T @ rounded(g).reshape(-1, 7), rtol=1e-5, atol=1e-5)
  assert not np.allclose(out, np.asarray(x, np.float64) @ np.asarray(w, np.float64), rtol=1e-6, atol=1e-6)
  loss = lambda x, w: jax.numpy.sum(jax.numpy.sin(precision.matmul(x, w, jax.numpy.bfloat16)))
  dots = _dot_operand_and_result_types(jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).as_text())
  assert dots == {("bf16", "bf16", "f32")}, dots
  assert precision.matmul(x, w).dtype == np.float32 and precision.dot_general(None) is None


@pytest.mark.parametrize("variant,obs_shapes", VARIANTS)
def test_bfloat16_matmuls_keep_activations_float32_and_round_only_matmul_operands(variant, obs_shapes):
  """In the "bfloat16_matmuls" step every dot takes bfloat16 operands and gives a float32 result, and nothing else
  computes in bfloat16 (the ResNet encoder's convolutions stay float32); with "bfloat16" the dots give bfloat16."""
  base = smoke.random_policy(variant, obs_shapes)
  batch = _batch(base.spec, batch_size=4)
  text = _jitted_loss_and_grad(_with_dtype(base, "bfloat16_matmuls"), batch).lower(base.params).as_text()
  assert _dot_operand_and_result_types(text) <= {("bf16", "bf16", "f32"), ("f32", "f32", "f32")}
  assert ("bf16", "bf16", "f32") in _dot_operand_and_result_types(text)
  bf16_ops = {op for op in re.findall(r"(stablehlo\.[a-z_]+)[^\n]*tensor<[\dx]*bf16>", text)
              if op not in ("stablehlo.convert", "stablehlo.dot_general", "stablehlo.reshape", "stablehlo.transpose",
                            "stablehlo.broadcast_in_dim", "stablehlo.concatenate", "stablehlo.slice")}
  assert not bf16_ops, f"bfloat16 arithmetic outside the matmuls: {sorted(bf16_ops)}"
  assert not any("convolution" in line and "bf16" in line for line in text.splitlines())
  text16 = _jitted_loss_and_grad(_with_dtype(base, "bfloat16"), batch).lower(base.params).as_text()
  assert ("bf16", "bf16", "bf16") in _dot_operand_and_result_types(text16)


def test_resume_may_change_inference_and_training_fields_but_not_the_network(tmp_path):
  spec = smoke.random_policy().spec
  train._check_same_spec(spec, dataclasses.replace(spec, compute_dtype="bfloat16", sampler="ddim",
                                                   num_inference_steps=5, flow_time_distribution="beta",
                                                   timestep_spacing="trailing"), tmp_path)
  with pytest.raises(ValueError, match="horizon: checkpoint 16 vs config 8"):
    train._check_same_spec(spec, dataclasses.replace(spec, horizon=8), tmp_path)


@pytest.mark.parametrize("mode", BFLOAT16_MODES)
@pytest.mark.parametrize("variant,obs_shapes", VARIANTS)
def test_bfloat16_inference_weights_are_cast_once_without_changing_the_outputs(variant, obs_shapes, mode):
  """Sampling casts the kernels (and, in "bfloat16", the transformer's layer biases) to bfloat16 before the chain;
  each layer would cast them anyway, so one denoiser call gives bit-identical outputs with the float32 or the
  pre-cast weights. Norm scales and biases stay float32, and so does the encoder in "bfloat16_matmuls"."""
  base = _with_dtype(smoke.random_policy(variant, obs_shapes), mode)
  cast = policy_lib.inference_params(base.params, base.spec)
  dtypes = {jax.tree_util.keystr(path): leaf.dtype for path, leaf in jax.tree_util.tree_leaves_with_path(cast)}
  kernel_dtype = lambda p: np.float32 if mode == "bfloat16_matmuls" and p.startswith("['encoder']") else (
      jax.numpy.bfloat16)
  assert all(d == kernel_dtype(p) for p, d in dtypes.items() if p.endswith("['kernel']"))
  layer_biases = [p[:-len("['kernel']")] + "['bias']" for p in dtypes if p.endswith("['kernel']")]
  bias_dtype = jax.numpy.bfloat16 if base.spec.denoiser == "transformer" and mode == "bfloat16" else np.float32
  assert any(p in dtypes for p in layer_biases)
  assert all(dtypes[p] == bias_dtype for p in layer_biases if p in dtypes)
  norms = [p for p in dtypes if p.endswith("['scale']")]
  assert norms and all(dtypes[p] == np.float32 and dtypes[p[:-len("['scale']")] + "['bias']"] == np.float32
                       for p in norms)
  net = policy_lib.PolicyNet(base.spec)
  batch = _batch(base.spec, batch_size=2)
  obs = policy_lib.normalizer_lib.normalize_obs(base.normalizer, {k: v[:, :base.spec.n_obs_steps]
                                                                  for k, v in batch["obs"].items()})
  x = jax.random.normal(jax.random.key(1), (2, base.spec.horizon, 2))
  k = jax.numpy.array([3, 7])
  outputs = [np.asarray(net.apply({"params": p}, obs, x, k)) for p in (base.params, cast)]
  np.testing.assert_array_equal(*outputs)
  assert policy_lib.inference_params(base.params, _with_dtype(base, "float32").spec) is base.params


def test_a_controller_holds_weights_cast_once_and_samples_the_same_chunks():
  """`policy.for_sampling` casts once what every chunk would cast (`inference_params`); sampling from it gives the
  same chunks bit for bit, and the receding-horizon controller holds it (no casts per chunk)."""
  from dpjax import control
  base = _with_dtype(smoke.random_policy(), "bfloat16")
  cast = policy_lib.for_sampling(base)
  kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cast.params)
             if jax.tree_util.keystr(path).endswith("['kernel']")]
  assert kernels and all(k.dtype == jax.numpy.bfloat16 for k in kernels)
  obs = {"low_dim": np.random.default_rng(4).uniform(0, 512, (2, 2, 20)).astype(np.float32)}
  np.testing.assert_array_equal(np.asarray(policy_lib.sample(cast, obs, jax.random.key(5))),
                                np.asarray(policy_lib.sample(base, obs, jax.random.key(5))))
  controller = control.RecedingHorizonController(base, jax.random.key(0))
  assert jax.tree.map(lambda a: a.dtype, controller.policy.params) == jax.tree.map(lambda a: a.dtype, cast.params)


@pytest.mark.parametrize("variant,obs_shapes,mode", [(*VARIANTS[0], "bfloat16"), (*VARIANTS[1], "bfloat16"),
                                                      (*VARIANTS[0], "bfloat16_matmuls")],
                         ids=["unet-bfloat16", "transformer-bfloat16", "unet-bfloat16_matmuls"])
def test_several_steps_per_dispatch_carry_the_cast_kernels_and_equal_single_steps(variant, obs_shapes, mode):
  """`train_steps` carries the bfloat16 kernels from one step's update to the next step's forward; its weights,
  EMA and losses are those of as many `train_step` calls, bit for bit, and it carries only the cast leaves (none
  with "bfloat16_matmuls", whose kernels stay float32 for their float32 gradients)."""
  base = _with_dtype(smoke.random_policy(variant, obs_shapes), mode)
  config = smoke.smoke_config("unused", variant)
  optimizer = optim.make_optimizer(config.optim, base.params, base.spec.denoiser, 100)
  state = train_step.create_train_state(base.params, optimizer)
  stack = jax.tree.map(lambda *x: np.stack(x), *[smoke.random_batch(base.spec, 8, seed=s) for s in range(3)])
  kwargs = dict(spec=base.spec, optimizer=optimizer, ema_config=config.ema)
  key = jax.random.key(2)
  scanned, metrics = jax.jit(functools.partial(train_step.train_steps, **kwargs))(state, stack, key,
                                                                                 base.normalizer, None)
  one = jax.jit(functools.partial(train_step.train_step, **kwargs))
  for i in range(3):
    state, step_metrics = one(state, jax.tree.map(lambda x: x[i], stack), key, base.normalizer)
    assert float(step_metrics["loss"]) == float(metrics["loss"][i])
  jax.tree.map(np.testing.assert_array_equal, (scanned.params, scanned.ema_params), (state.params, state.ema_params))
  carried = [leaf for leaf in train_step._cast_leaves(base.params, base.spec) if leaf is not None]
  assert all(leaf.dtype == jax.numpy.bfloat16 for leaf in carried)
  assert bool(carried) == (mode == "bfloat16")
