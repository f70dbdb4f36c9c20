"""Tests for dpjax.nets.unet1d: shapes, parameter count, conditioning, torch-exact resampling."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpjax.nets import gpu_branches, unet1d

TINY = dict(down_dims=(8, 16), kernel_size=3, n_groups=4, step_embed_dim=8)
B, T, DA, TO, F = 2, 8, 2, 2, 3


def _torch_param_count(action_dim, down_dims, dsed, kernel_size, global_cond_dim):
  """Parameters of the original PyTorch ConditionalUnet1D, counted from its constructor."""
  cond_dim = dsed + global_cond_dim
  film = 2   # cond_predict_scale: scale and bias

  def conv(c_in, c_out, k):
    return c_in * c_out * k + c_out

  def res(c_in, c_out):
    blocks = conv(c_in, c_out, kernel_size) + conv(c_out, c_out, kernel_size) + 2 * (2 * c_out)  # + GroupNorms
    residual = conv(c_in, c_out, 1) if c_in != c_out else 0
    return blocks + (cond_dim * film * c_out + film * c_out) + residual

  count = (dsed * 4 * dsed + 4 * dsed) + (4 * dsed * dsed + dsed)
  dims = [action_dim] + list(down_dims)
  in_out = list(zip(dims[:-1], dims[1:]))
  for i, (c_in, c_out) in enumerate(in_out):
    count += res(c_in, c_out) + res(c_out, c_out) + (conv(c_out, c_out, 3) if i < len(in_out) - 1 else 0)
  count += 2 * res(dims[-1], dims[-1])
  for c_in, c_out in reversed(in_out[1:]):
    count += res(2 * c_out, c_in) + res(c_in, c_in) + conv(c_in, c_in, 4)  # ConvTranspose1d: same count
  start = down_dims[0]
  return count + conv(start, start, kernel_size) + 2 * start + conv(start, action_dim, 1)


def _count(tree):
  return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _inputs(horizon=T):
  return jnp.zeros((B, horizon, DA)), jnp.zeros((B,), jnp.int32), jnp.zeros((B, TO, F))


def _random_params(net, horizon=T):
  """Shapes from `eval_shape`, values from NumPy.

  `net.init` would compile a threefry kernel per parameter shape (tens of seconds on a loaded CPU);
  these tests need parameters with sensible scale, not the initialiser.
  """
  shapes = jax.eval_shape(net.init, jax.random.key(0), *_inputs(horizon))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = getattr(path[-1], "key", "")
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    fan_in = np.prod(leaf.shape[:-1]) if name == "kernel" else leaf.shape[-1]
    return rng.uniform(-1, 1, leaf.shape).astype(np.float32) / np.sqrt(fan_in)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def test_pusht_lowdim_parameter_count():
  """Push-T low-dim: the original logs "number of parameters: 6.5e+07"; the count matches layer for layer."""
  net = unet1d.ConditionalUnet1D(down_dims=(256, 512, 1024), kernel_size=5, n_groups=8, step_embed_dim=256)
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 16, 2)), jnp.zeros((1,), jnp.int32),
                          jnp.zeros((1, 2, 20)))
  expected = _torch_param_count(2, (256, 512, 1024), 256, 5, global_cond_dim=2 * 20)
  assert _count(shapes) == expected == 65_783_298


def test_tiny_parameter_count_and_output():
  net = unet1d.ConditionalUnet1D(**TINY)
  params = _random_params(net)
  assert _count(params) == _torch_param_count(DA, (8, 16), 8, 3, global_cond_dim=TO * F)
  x = jax.random.normal(jax.random.key(1), (B, T, DA))
  obs = jax.random.normal(jax.random.key(2), (B, TO, F))
  apply = jax.jit(net.apply)
  out = apply(params, x, jnp.array([3, 7]), obs)
  assert out.shape == (B, T, DA) and bool(jnp.all(jnp.isfinite(out)))
  # Conditioning matters: other observations or another step change the output.
  assert not np.allclose(np.asarray(out), np.asarray(apply(params, x, jnp.array([3, 7]), obs + 1.0)))
  assert not np.allclose(np.asarray(out), np.asarray(apply(params, x, jnp.array([4, 7]), obs)))
  # A scalar step is broadcast over the batch.
  np.testing.assert_allclose(np.asarray(apply(params, x, jnp.int32(5), obs)),
                             np.asarray(apply(params, x, jnp.array([5, 5]), obs)), atol=1e-6)


def test_bad_horizon_and_shapes():
  net = unet1d.ConditionalUnet1D(down_dims=(8, 16, 32), kernel_size=3, n_groups=4, step_embed_dim=8)
  with pytest.raises(ValueError, match="divisible by 2 \\*\\* \\(len\\(down_dims\\) - 1\\) = 4"):
    jax.eval_shape(net.init, jax.random.key(0), *_inputs(horizon=6))
  with pytest.raises(AssertionError):
    jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((B, 8)), jnp.zeros((B,), jnp.int32),
                   jnp.zeros((B, TO, F)))


def _torch_conv1d(x, w, b, stride, padding):
  """torch.nn.functional.conv1d on channels-last x [B, L, C_in]; w [C_out, C_in, k]."""
  x = np.pad(x, ((0, 0), (padding, padding), (0, 0)))
  k = w.shape[-1]
  length = (x.shape[1] - k) // stride + 1
  return np.stack([np.einsum("bjc,ocj->bo", x[:, i * stride:i * stride + k], w) for i in range(length)], 1) + b


def _torch_conv_transpose1d(x, w, b, stride, padding):
  """torch.nn.functional.conv_transpose1d on channels-last x [B, L, C_in]; w [C_in, C_out, k]."""
  batch, length, _ = x.shape
  k = w.shape[-1]
  full = np.zeros((batch, (length - 1) * stride + k, w.shape[1]))
  for i in range(length):
    full[:, i * stride:i * stride + k] += np.einsum("bc,coj->bjo", x[:, i], w)
  return full[:, padding:full.shape[1] - padding] + b


@pytest.mark.parametrize("length", [1, 4, 5])
def test_resampling_matches_torch(length):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, length, 3)).astype(np.float32)
  w_up, w_down = rng.normal(size=(3, 3, 4)), rng.normal(size=(3, 3, 3))
  b = rng.normal(size=(3,))

  up = unet1d.Upsample1d()
  assert jax.eval_shape(up.init, jax.random.key(0), x)["params"]["conv"]["kernel"].shape == (4, 3, 3)
  # torch ConvTranspose1d weight [C_in, C_out, k] -> kernel [k, C_out, C_in].
  y = up.apply({"params": {"conv": {"kernel": w_up.transpose(2, 1, 0), "bias": b}}}, x)
  assert y.shape == (2, 2 * length, 3)
  np.testing.assert_allclose(np.asarray(y), _torch_conv_transpose1d(x, w_up, b, 2, 1), atol=1e-4)

  down = unet1d.Downsample1d()
  # torch Conv1d weight [C_out, C_in, k] -> kernel [k, C_in, C_out].
  y = down.apply({"params": {"conv": {"kernel": w_down.transpose(2, 1, 0), "bias": b}}}, x)
  assert y.shape == (2, (length + 1) // 2, 3)
  np.testing.assert_allclose(np.asarray(y), _torch_conv1d(x, w_down, b, 2, 1), atol=1e-4)


@pytest.mark.parametrize("length", [3, 8])
def test_conv1d_matches_torch_for_long_and_short_inputs(length):
  """im2col equals torch's conv1d for inputs longer and shorter than the kernel."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, length, 3)).astype(np.float32)
  w, b = rng.normal(size=(4, 3, 5)), rng.normal(size=(4,))
  conv = unet1d.Conv1d(features=4, kernel_size=5, padding=2)
  y = conv.apply({"params": {"kernel": w.transpose(2, 1, 0), "bias": b}}, x)
  np.testing.assert_allclose(np.asarray(y), _torch_conv1d(x, w, b, 1, 2), atol=1e-4)


@pytest.mark.parametrize("stride,padding,length", [(1, 2, 3), (1, 2, 8), (2, 1, 1), (2, 1, 5), (1, 0, 4)])
def test_both_convolution_lowerings_match_torch(stride, padding, length):
  """im2col (training, CPUs) and taps (accelerators at small batch) compute torch's conv1d, strided or not."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, length, 3)).astype(np.float32)
  k = 3 if padding == 1 else (1 if padding == 0 else 5)
  w = rng.normal(size=(4, 3, k)).astype(np.float32)
  expected = _torch_conv1d(x, w, 0.0, stride, padding)
  for lowering in (unet1d.conv1d_im2col, unet1d.conv1d_taps, unet1d.conv1d):
    y = lowering(jnp.asarray(x), jnp.asarray(w.transpose(2, 1, 0)), stride, padding)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4, err_msg=lowering.__name__)


@pytest.mark.parametrize("length", [1, 4])
def test_both_transposed_convolution_lowerings_match_torch(length):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, length, 3)).astype(np.float32)
  w = rng.normal(size=(3, 3, 4)).astype(np.float32)   # torch [C_in, C_out, 4]
  expected = _torch_conv_transpose1d(x, w, 0.0, 2, 1)
  for lowering in (unet1d.transposed_conv1d_x2_phases, unet1d.transposed_conv1d_x2_taps, unet1d.transposed_conv1d_x2):
    y = lowering(jnp.asarray(x), jnp.asarray(w.transpose(2, 1, 0)))
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4, err_msg=lowering.__name__)


def test_taps_sum_in_float32_under_bfloat16():
  """The taps' shifted sum is float32, so bfloat16 taps round once, like im2col's single matmul."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(1, 16, 64)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(5, 64, 32)) / 8, jnp.bfloat16)
  im2col = unet1d.conv1d_im2col(x, kernel, 1, 2)
  taps = unet1d.conv1d_taps(x, kernel, 1, 2)
  assert taps.dtype == jnp.bfloat16
  exact = unet1d.conv1d_im2col(x.astype(jnp.float32), kernel.astype(jnp.float32), 1, 2)
  error = lambda y: float(jnp.max(jnp.abs(y.astype(jnp.float32) - exact)))
  assert error(taps) <= 1.5 * error(im2col) + 1e-6, (error(taps), error(im2col))


def test_film_width_and_residual_conv():
  """FiLM predicts 2C values (scale and bias, the paper's cond_predict_scale); 1x1 residual only if C changes."""
  block = unet1d.ConditionalResidualBlock1D(features=8, kernel_size=3, n_groups=4)
  x, cond = jnp.ones((1, 4, 8)), jnp.ones((1, 5))
  params = jax.eval_shape(block.init, jax.random.key(0), x, cond)["params"]
  assert params["cond_encoder"]["kernel"].shape == (5, 16)
  assert "residual_conv" not in params
  params_wider = jax.eval_shape(unet1d.ConditionalResidualBlock1D(8, 3, 4).init,
                                jax.random.key(0), jnp.ones((1, 4, 6)), cond)["params"]
  assert params_wider["residual_conv"]["kernel"].shape == (1, 6, 8)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_every_film_embedding_from_one_matmul_equals_each_block_s_dense(dtype):
  """With one_film_matmul the applied U-Net computes all residual blocks' FiLM embeddings as one matmul over their
  side-by-side kernels; initialising, each block runs its own `cond_encoder` Dense (which creates its parameters).
  Same numbers (the GPU kernel counts of experiments/gpu_kernels/ come from the one-matmul path)."""
  net = unet1d.ConditionalUnet1D(**TINY, dtype=dtype, one_film_matmul=True)
  x, _, obs = _inputs()
  k = jnp.array([3, 17])
  obs = jnp.asarray(np.random.default_rng(1).normal(size=obs.shape), jnp.float32)
  per_block, variables = net.init_with_output(jax.random.key(0), x, k, obs, conditioning_only=True)
  merged = net.apply(variables, x, k, obs, conditioning_only=True)
  per_block_applied = net.clone(one_film_matmul=False).apply(variables, x, k, obs, conditioning_only=True)
  jax.tree.map(np.testing.assert_array_equal, per_block_applied, per_block)
  platform_choice = net.clone(one_film_matmul=None).apply(variables, x, k, obs, conditioning_only=True)
  jax.tree.map(np.testing.assert_array_equal, platform_choice, per_block)   # a CPU runs the separate Dense layers
  assert list(merged) == list(per_block) == list(unet1d.block_widths(TINY["down_dims"]))
  for name, width in unet1d.block_widths(TINY["down_dims"]).items():
    assert merged[name].shape == (B, 1, 2 * width) and merged[name].dtype == per_block[name].dtype == dtype
    np.testing.assert_allclose(np.asarray(merged[name], np.float32), np.asarray(per_block[name], np.float32),
                               rtol=1e-6 if dtype == jnp.float32 else 1e-2, atol=1e-6)


def _chain_inputs():
  """(x, k, obs): random inputs of one sampling-chain call, the same in every test."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(B, T, DA)), jnp.float32)
  obs = jnp.asarray(rng.normal(size=(B, TO, F)), jnp.float32)
  return x, jnp.array([3, 17]), obs


@functools.partial(jax.jit, static_argnums=0)
def _chain_call(net, params, x, k, obs):
  """The sampling chain's call of `net`: the conditioning computed first, then the network on it. Compiled as one
  program, as the chain runs it (op by op, the interpreted Pallas kernels took these tests 2-3x as long)."""
  conditioning = net.apply({"params": params}, None, k, obs, conditioning_only=True)
  return net.apply({"params": params}, x, None, conditioning=conditioning)


@functools.partial(jax.jit, static_argnums=0)
def _train_call(net, params, x, k, obs):
  """A training call of `net` (no conditioning passed), compiled as one program."""
  return net.apply({"params": params}, x, k, obs)


def _conditioned_outputs(fused_net, plain_net, params):
  """(fused, plain) outputs of the sampling chain's call on `_chain_inputs`, and those inputs."""
  x, k, obs = _chain_inputs()
  return [_chain_call(net, params, x, k, obs) for net in (fused_net, plain_net)], (x, k, obs)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fused_sampling_off_cuda_is_the_unfused_network(dtype):
  """On a CPU `fused_sampling` runs the XLA layers (lax.platform_dependent): the chain's call gives the numbers of
  the unfused network with one FiLM matmul bit for bit (every block's embedding side by side in one array, as the
  kernels read it); training (no conditioning passed) is the unfused network itself."""
  plain = unet1d.ConditionalUnet1D(**TINY, dtype=dtype, one_film_matmul=True)
  fused = plain.clone(fused_sampling=True)
  params = _random_params(plain)["params"]
  (got, want), (x, k, obs) = _conditioned_outputs(fused, plain, params)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  films = fused.apply({"params": params}, None, k, obs, conditioning_only=True)
  assert list(films) == ["films"]
  assert films["films"].shape == (B, 1, 2 * sum(unet1d.block_widths(TINY["down_dims"]).values()))
  np.testing.assert_array_equal(np.asarray(fused.apply({"params": params}, x, k, obs)),
                                np.asarray(plain.apply({"params": params}, x, k, obs)))


def test_fused_sampling_kernel_path_matches_the_unfused_network(monkeypatch):
  """The program a CUDA device runs (every lax.platform_dependent taking its GPU branch, the Pallas kernels in
  Pallas' interpreter): the whole U-Net's output equals the unfused network's to float32 rounding."""
  from dpjax.nets import conv_block_kernel
  plain = unet1d.ConditionalUnet1D(**TINY)
  params = _random_params(plain)["params"]
  (_, want), _ = _conditioned_outputs(plain.clone(fused_sampling=True), plain, params)
  epilogue = conv_block_kernel.conv_block_epilogue
  calls = []

  def counted(*args, **kwargs):
    calls.append(args[0].shape)
    assert kwargs["interpret"]
    return epilogue(*args, **kwargs)

  monkeypatch.setattr(conv_block_kernel, "conv_block_epilogue", counted)
  with gpu_branches.as_on_cuda():
    (got, _), _ = _conditioned_outputs(plain.clone(fused_sampling=True), plain, params)
  assert len(calls) == 2 * len(unet1d.block_widths(TINY["down_dims"])) + 1   # every conv block, the final one too
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_the_sampling_chain_runs_taps_on_an_accelerator_at_a_rollout_s_batch_and_training_does_not(monkeypatch):
  """With every lax.platform_dependent taking its accelerator branch: the chain's calls (given conditioning) run
  every convolution as taps at a 50-environment rollout's batch too (at most TAPS_MAX_ROWS rows, since session 15;
  session 14 stopped at 64); a training call of the same size runs im2col. Both give the CPU program's numbers to
  float32 rounding."""
  assert 50 * T <= unet1d.TAPS_MAX_ROWS
  net = unet1d.ConditionalUnet1D(**TINY)
  params = _random_params(net)["params"]
  rng = np.random.default_rng(3)
  x, obs, k = (jnp.asarray(rng.normal(size=(50, T, DA)), jnp.float32),
               jnp.asarray(rng.normal(size=(50, TO, F)), jnp.float32), jnp.arange(50))
  cpu = {"chain": _chain_call(net, params, x, k, obs), "train": _train_call(net, params, x, k, obs)}
  calls = []
  for name in ("conv1d_taps", "transposed_conv1d_x2_taps"):
    original = getattr(unet1d, name)
    monkeypatch.setattr(unet1d, name,
                        lambda *args, original=original, name=name: calls.append(name) or original(*args))
  with gpu_branches.as_on_cuda():
    chain = _chain_call(net, params, x, k, obs)
    assert calls.count("conv1d_taps") > 0 and calls.count("transposed_conv1d_x2_taps") == len(TINY["down_dims"]) - 1
    calls.clear()
    train = _train_call(net, params, x, k, obs)
  assert calls == []
  np.testing.assert_allclose(np.asarray(chain), np.asarray(cpu["chain"]), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(train), np.asarray(cpu["train"]), rtol=1e-5, atol=1e-5)


def test_bfloat16_matmuls_reach_every_convolution_form_and_they_agree():
  """With matmul_dtype=bfloat16 (the "bfloat16_matmuls" compute dtype) the chain's call on an accelerator (taps,
  and with fused_sampling the Pallas conv blocks) gives the CPU program's numbers (im2col) to float32 rounding: all
  round the same operands and accumulate in float32. And the rounding is there: float32 operands differ by more."""
  net = unet1d.ConditionalUnet1D(**TINY, matmul_dtype=jnp.bfloat16)
  params = _random_params(net)["params"]
  inputs = _chain_inputs()
  cpu = _chain_call(net, params, *inputs)
  with gpu_branches.as_on_cuda():
    taps, fused = _chain_call(net, params, *inputs), _chain_call(net.clone(fused_sampling=True), params, *inputs)
  for got in (taps, fused):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(cpu), rtol=1e-4, atol=1e-4)
  float32 = _chain_call(unet1d.ConditionalUnet1D(**TINY), params, *inputs)
  assert np.max(np.abs(np.asarray(float32) - np.asarray(cpu))) > 1e-3
