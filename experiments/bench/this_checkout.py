"""This checkout's modules loaded by file path, for the scripts here that measure another checkout's dpjax (the one
on PYTHONPATH, which may predate them), and the `--target` the kernel-counting scripts share. A script's own folder
is on sys.path, so they `import this_checkout`."""
import argparse
import functools
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGETS = ("local", "h100", "h200")


@functools.cache
def load(path):
  """The module at `path` (relative to this checkout's root, e.g. "dpjax/hlo.py", or absolute), loaded once under
  its file name."""
  path = ROOT / path
  module_spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def add_target_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--target", default="local", choices=TARGETS,
                      help="local backend, or h100 / h200: compile for that GPU without one (kernels only)")
  parser.add_argument("--compute_dtype", default=None, help="float32 | bfloat16 (default: auto for the target)")


def target_sharding(args):
  """None for the local backend, else where abstract arrays live on the compile-only GPU (`deviceless_gpu.py`;
  call this before importing jax, which it configures)."""
  if args.target == "local":
    return None
  return load("experiments/bench/deviceless_gpu.py").replicated_sharding(args.target)


def compute_dtype(args, sharding) -> str:
  """--compute_dtype, else `auto` locally and bfloat16 (what `auto` picks on a GPU) for a GPU target."""
  return args.compute_dtype or ("auto" if sharding is None else "bfloat16")


def place(tree, sharding):
  """`tree` (arrays or ShapeDtypeStructs) as abstract arrays on the GPU target; unchanged for the local backend."""
  return tree if sharding is None else load("experiments/bench/deviceless_gpu.py").abstract(tree, sharding)
