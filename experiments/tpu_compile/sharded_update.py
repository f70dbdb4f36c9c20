"""Prototype (no library change): what sharding the EMA weights and Adam's moments over the chips would save per
chip, compiled for a TPU slice without one (ZeRO stage 1 plus the EMA; the weights stay replicated).

    PYTHONPATH=. .venv-tpu-aot/bin/python experiments/tpu_compile/sharded_update.py --layout=flat   # the library today
    PYTHONPATH=. .venv-tpu-aot/bin/python experiments/tpu_compile/sharded_update.py --layout=tree   # moments per array
    PYTHONPATH=. .venv-tpu-aot/bin/python experiments/tpu_compile/sharded_update.py --layout=sharded

dpjax replicates the whole training state on every chip (`sharding.py`), so every chip runs the whole optimiser
and EMA update: the same bytes per chip whatever the number of chips. `--layout=sharded` keeps Adam's moments per
array (`config.optim.flat_moments=False`: the flat vector's length, 65,783,298 for the low-dim U-Net, divides by no
mesh) and splits each EMA and moment array over the chips along its largest axis that the chip count divides
(replicated when none does); the jitted step's output shardings say so and XLA's partitioner places the
collectives. Host-fed batches, 10 steps per dispatch, bfloat16 compute, the library's train step unchanged.
Prints XLA's memory plan and cost model per chip and the collectives of the loop body (`tpu_compile.py`).
"""
import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import tpu_compile  # noqa: E402
from dpjax import bench, optim, policy, sharding, train_step  # noqa: E402


def split_over_chips(shape, mesh) -> NamedSharding:
  """The array split along its largest axis that the chip count divides; replicated if none does."""
  chips = mesh.devices.size
  axes = [i for i, size in enumerate(shape) if size % chips == 0]
  if not axes:
    return sharding.replicated(mesh)
  axis = max(axes, key=lambda i: shape[i])
  return NamedSharding(mesh, P(*[sharding.DATA_AXIS if i == axis else None for i in range(len(shape))]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--topology", default="v5e:2x4")
  parser.add_argument("--variant", default="lowdim")
  parser.add_argument("--layout", default="sharded", choices=("flat", "tree", "sharded"))
  args = parser.parse_args()
  mesh = sharding.make_mesh(tpu_compile.compile_only_devices(args.topology))
  replicated, stacked = sharding.replicated(mesh), sharding.stacked_batch_sharding(mesh)
  config, obs_shapes, spec = tpu_compile.bfloat16_setup(args.variant)
  config.optim.flat_moments = args.layout == "flat"
  params = jax.eval_shape(lambda key: policy.init_params(spec, key), jax.random.key(0))
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, int(config.train.num_steps))
  shapes = jax.eval_shape(lambda p: train_step.create_train_state(p, optimizer), params)
  split = (lambda x: split_over_chips(x.shape, mesh)) if args.layout == "sharded" else (lambda x: replicated)
  shardings = train_step.TrainState(step=replicated, params=jax.tree.map(lambda _: replicated, shapes.params),
                                    ema_params=jax.tree.map(split, shapes.ema_params),
                                    opt_state=jax.tree.map(split, shapes.opt_state))
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  normalizer = tpu_compile.abstract(bench.synthetic_normalizer(obs_shapes, np.random.default_rng(0)), replicated)
  key = tpu_compile.abstract(jax.random.key(0), replicated)
  batches = tpu_compile.host_batches(spec, int(config.train.batch_size), train_step.AUTO_STEPS_PER_DISPATCH, stacked)
  steps_fn = train_step.jit_train_steps(spec, optimizer, config.ema, shardings, stacked, replicated)
  start = time.perf_counter()
  compiled = steps_fn.lower(state, batches, key, normalizer, None, None).compile()
  record = tpu_compile.program_record(compiled, time.perf_counter() - start)
  print(f"{args.variant} on {args.topology}, layout {args.layout}: peak {record['peak_per_chip_bytes'] / 2**30:.2f} "
        f"GiB per chip, {record['bytes_accessed'] / 1e9:.2f} GB accessed and {record['flops'] / 1e9:.1f} GFLOP per "
        f"step per chip (XLA's cost model), memory {record['memory_per_chip_bytes']}")
  print("loop body collectives:", tpu_compile.loop_body_collectives(compiled.as_text()))


if __name__ == "__main__":
  main()
