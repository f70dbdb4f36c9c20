r"""Sampling latency of the Push-T low-dim CNN denoiser (random weights), jitted, compile excluded.

    python -m dpjax.diffusion.bench_sampling
    python -m dpjax.diffusion.bench_sampling --batch_sizes=1 --repeats=5

Times the whole reverse chain (`sample_chain`: one lax.scan) for each batch size and sampler;
compile time is reported separately. Latency is the median over --repeats runs, each ended by
`block_until_ready`.
"""
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from dpjax.diffusion import sampler, schedules
from dpjax.nets import unet1d

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "50"], "Batch sizes to time.")
_SAMPLERS = flags.DEFINE_list("samplers", ["ddpm:100", "ddim:10"], "method:num_inference_steps pairs.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per setting (the median is reported).")

# Push-T low-dim (configs/pusht.py): horizon 16, To = 2, 20-d observations, 2-d actions, K = 100.
HORIZON, N_OBS_STEPS, OBS_DIM, ACTION_DIM, NUM_TRAIN_STEPS = 16, 2, 20, 2, 100
NET = unet1d.ConditionalUnet1D(down_dims=(256, 512, 1024), kernel_size=5, n_groups=8, step_embed_dim=256)


def param_shapes():
  return jax.eval_shape(NET.init, jax.random.key(0), jnp.zeros((1, HORIZON, ACTION_DIM)),
                        jnp.zeros((1,), jnp.int32), jnp.zeros((1, N_OBS_STEPS, OBS_DIM)))


def random_params():
  """Parameters with PyTorch-init scale, drawn in NumPy.

  Latency does not depend on the values; `NET.init` would spend its time compiling a random
  kernel per parameter shape.
  """
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    if getattr(path[-1], "key", "") == "scale":
      return np.ones(leaf.shape, np.float32)
    fan_in = np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else leaf.shape[-1]
    return (rng.uniform(-1, 1, leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, param_shapes())


def make_sample_fn(method, num_inference_steps, batch_size):
  schedule = schedules.make_schedule("squaredcos_cap_v2", NUM_TRAIN_STEPS)

  @jax.jit
  def sample(params, obs_features, key):
    def denoise_fn(x, k):
      return NET.apply(params, x, k, obs_features)
    return sampler.sample_chain(denoise_fn, schedule, (batch_size, HORIZON, ACTION_DIM), key, method=method,
                                num_inference_steps=num_inference_steps)
  return sample


def bench(method, num_inference_steps, batch_size, repeats):
  """Returns (compile seconds, median latency seconds)."""
  params = jax.device_put(random_params())
  obs = jax.random.normal(jax.random.key(1), (batch_size, N_OBS_STEPS, OBS_DIM))
  sample = make_sample_fn(method, num_inference_steps, batch_size)
  start = time.perf_counter()
  compiled = sample.lower(params, obs, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - start
  compiled(params, obs, jax.random.key(0)).block_until_ready()  # warm-up run
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    compiled(params, obs, jax.random.key(i + 2)).block_until_ready()
    times.append(time.perf_counter() - start)
  return compile_s, statistics.median(times)


def main(argv):
  del argv
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes()))
  print(f"ConditionalUnet1D{NET.down_dims}, dsed {NET.step_embed_dim}: {num_params:,} parameters; "
        f"device {jax.devices()[0]}")
  print("| sampler | steps | batch | compile (s) | latency median (ms) | per step (ms) |")
  print("|---|---|---|---|---|---|")
  for batch_size in map(int, _BATCH_SIZES.value):
    for spec in _SAMPLERS.value:
      method, steps = spec.split(":")
      compile_s, latency = bench(method, int(steps), batch_size, _REPEATS.value)
      print(f"| {method} | {steps} | {batch_size} | {compile_s:.1f} | {latency * 1e3:.1f} | "
            f"{latency * 1e3 / int(steps):.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
