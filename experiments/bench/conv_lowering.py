"""U-Net Conv1d lowerings compared on one machine: full train step (fwd + bwd + AdamW + EMA) and DDIM-10 latency.

    .venv/bin/python experiments/bench/conv_lowering.py lowdim 64     # variant, train batch size

Swaps `dpjax.nets.unet1d.conv1d` for each lowering in turn (same parameters, same results); "ops" counts the
convolution, dot, fusion and custom-call instructions of the compiled train step (a proxy for kernels).
BUILD_NOTES.md, "Convolution lowering".
"""
import sys, time
sys.path.insert(0, ".")
import jax, jax.numpy as jnp, numpy as np
from dpjax.nets import unet1d
from dpjax import bench, policy, optim, train_step, sharding
from dpjax.data import pusht

def conv_lax(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(x, kernel, (stride,), [(padding, padding)], dimension_numbers=("NWC", "WIO", "NWC"))
def conv_shifted(x, kernel, stride, padding):
  k = kernel.shape[0]
  x = jnp.pad(x, ((0, 0), (padding, padding), (0, 0)))
  out_length = (x.shape[1] - k) // stride + 1
  span = stride * (out_length - 1) + 1
  return sum(x[:, j:j + span:stride] @ kernel[j] for j in range(k))
def conv_auto(x, kernel, stride, padding):
  return conv_lax(x, kernel, stride, padding) if x.shape[1] >= kernel.shape[0] else conv_shifted(x, kernel, stride, padding)
IMPLS = {"auto (lax.conv, shifted when L<k)": conv_auto, "lax.conv": conv_lax, "shifted": conv_shifted, "im2col (dpjax)": unet1d.conv1d}

variant = sys.argv[1] if len(sys.argv) > 1 else "lowdim"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
config = bench.load_config(variant)
config.train.batch_size = batch
rng = np.random.default_rng(0)
spec = policy.spec_from_config(config, pusht.OBS_SHAPES[config.data.obs_type], 2)
params = bench.random_params(spec, rng)
normalizer = bench.synthetic_normalizer(pusht.OBS_SHAPES[config.data.obs_type], rng)
mesh = sharding.make_mesh()
for name, impl in IMPLS.items():
  unet1d.conv1d = impl
  opt = optim.make_optimizer(config.optim, params, spec.denoiser, 1000)
  state = sharding.put_replicated(train_step.create_train_state(params, opt), mesh)
  b = sharding.put_global_stack([bench.synthetic_batch(spec, batch, rng)], mesh)
  fn = train_step.jit_train_steps(spec, opt, config.ema, sharding.replicated(mesh), sharding.stacked_batch_sharding(mesh), sharding.replicated(mesh))
  t0 = time.perf_counter(); c = fn.lower(state, b, jax.random.key(0), normalizer, None, None).compile(); tc = time.perf_counter() - t0
  state, m = c(state, b, jax.random.key(0), normalizer, None, None); jax.block_until_ready(m)
  t0 = time.perf_counter(); n = 3
  for _ in range(n): state, m = c(state, b, jax.random.key(0), normalizer, None, None)
  jax.block_until_ready(m); step = (time.perf_counter() - t0) / n
  pol = policy.Policy(params=jax.device_put(params), normalizer=normalizer, spec=spec)
  policy._sample_batched.clear_cache() if hasattr(policy._sample_batched, "clear_cache") else None
  jax.clear_caches()
  r = bench.bench_sampling(pol, "ddim", 10, 1, 3, rng)
  hlo = c.as_text()
  kernels = sum(1 for line in hlo.splitlines() if " fusion(" in line or "custom-call(" in line or " convolution(" in line or " dot(" in line)
  print(f"{name:36s} ops~{kernels:5d} train b{batch}: {step*1e3:8.1f} ms/step (compile {tc:.1f} s) | ddim10 b1 {r['median_ms']:.1f} ms", flush=True)
