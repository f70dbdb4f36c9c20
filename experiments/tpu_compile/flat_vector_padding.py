"""Why flat Adam moments made the transformer's TPU train step compile for minutes (session 28): a minimal case.

    PYTHONPATH=. .venv-tpu-aot/bin/python experiments/tpu_compile/flat_vector_padding.py

`optax.flatten(optax.scale_by_adam())` (what `config.optim.flat_moments=True` builds) on a few parameter trees,
compiled for one TPU v5e chip without a TPU (libtpu's compile-only devices). Per tree it prints the compile
seconds, XLA's temporaries and generated code, and the reshape of the whole flat vector that XLA:TPU makes when a
leaf is [n, 2]: unravelling slices the updated vector and reshapes each slice, and XLA rewrites the [n, 2] leaf's
reshape(slice(vector)) into slice(reshape(vector, [N / 2, 2])), whose tiled layout pads the minor dimension 2 to 128,
64-fold for the whole vector. The transformer's output head kernel is [256, 2] (Push-T's 2-D actions). Which trees
trigger it is XLA's choice: a [1, 256, 2] leaf after four [256, 1024] ones does, the low-dim U-Net's tree (its final
convolution's kernel is [1, 256, 2]) does not. Nothing runs; no dataset is read.
"""
import math
import os
import pathlib
import re
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")   # compile-only TPU devices; nothing looks for an attached one

import jax  # noqa: E402  (after JAX_PLATFORMS)
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from dpjax import bench, config_files, policy  # noqa: E402
from dpjax.data import pusht  # noqa: E402

TPU_COMPILE = config_files.load_module(pathlib.Path(__file__).resolve().parents[1] / "bench" / "tpu_compile.py")


def parameter_shapes(variant: str, num_layers: int = 8) -> list:
  """A Push-T variant's parameter shapes, in the flat vector's order (a transformer with `num_layers` layers)."""
  config = bench.load_config(variant)
  config.policy.transformer.num_layers = num_layers
  spec = policy.spec_from_config(config, pusht.OBS_SHAPES[config.data.obs_type], bench.ACTION_DIM)
  return [leaf.shape for leaf in jax.tree.leaves(jax.eval_shape(lambda: policy.init_params(spec, jax.random.key(0))))]


def compile_flat_adam(shapes: list, chip) -> str:
  """One line: compile seconds, temporaries, code and the whole-vector reshapes of flat Adam over `shapes`."""
  grads = TPU_COMPILE.abstract([jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes], chip)
  optimizer = optax.flatten(optax.scale_by_adam())
  state = TPU_COMPILE.abstract(jax.eval_shape(optimizer.init, grads), chip)
  start = time.perf_counter()
  compiled = jax.jit(optimizer.update).lower(grads, state).compile()
  seconds = time.perf_counter() - start
  memory = compiled.memory_analysis()
  total = sum(math.prod(shape) for shape in shapes)
  whole = sorted({dims for dims in re.findall(r"f32\[([0-9,]+)\]", compiled.as_text())
                  if "," in dims and math.prod(int(d) for d in dims.split(",")) == total})
  return (f"compile {seconds:5.1f} s, temporaries {memory.temp_size_in_bytes / 2**20:6.1f} MiB, code "
          f"{memory.generated_code_size_in_bytes / 2**20:5.1f} MiB, flat vector {total:,} floats "
          f"({total * 4 / 2**20:.1f} MiB){', reshaped to ' + ' and '.join(f'[{d}]' for d in whole) if whole else ''}")


def main():
  chip = jax.sharding.SingleDeviceSharding(TPU_COMPILE.compile_only_devices("v5e:2x2")[0])
  one_layer = parameter_shapes("transformer", num_layers=1)
  cases = {
      "[256, 1024] x 4": [(256, 1024)] * 4,
      "[256, 1024] x 4, then [256, 2]": [(256, 1024)] * 4 + [(256, 2)],
      "[256, 2], then [256, 1024] x 4": [(256, 2)] + [(256, 1024)] * 4,
      "[256, 1024] x 4, then [1, 256, 2]": [(256, 1024)] * 4 + [(1, 256, 2)],
      "transformer, 1 layer (40 arrays)": one_layer,
      "the same without the head's [256, 2]": [s for s in one_layer if s != (256, 2)],
      "low-dim U-Net (148 arrays)": parameter_shapes("lowdim"),
  }
  for name, shapes in cases.items():
    print(f"{name:40s} {compile_flat_adam(shapes, chip)}", flush=True)


if __name__ == "__main__":
  main()
