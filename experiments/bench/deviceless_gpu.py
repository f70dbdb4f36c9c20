"""Compiling for an NVIDIA GPU on a machine without one (XLA's deviceless ahead-of-time compilation).

Needs jax's CUDA plugin next to jax (it compiles; nothing runs): `make gpu-aot` installs it into `.venv-gpu-aot`.
Then, e.g.:

    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/train_step_parts.py --target=h100
    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/kernels_per_call.py --target=h100
    PYTHONPATH=. .venv-gpu-aot/bin/python experiments/bench/chain_body_kernels.py --target=h100 --sampler=ddpm:100

`JAX_PLATFORMS=cpu` (set below, before jax is imported) keeps jax from looking for a GPU to run on. The program is
XLA:GPU's for the target below with its untuned GEMM and convolution choices (autotuning needs the device): kernel
counts and fusion decisions, no timings. Checked against the one H100 the project had (session 5, commit 2380ac8,
BUILD_NOTES.md "GPU kernels without a GPU"): U-Net call 178 / 171 kernels (batch 1 / 50) against 177 / 171 measured,
float32 142 against 142, image U-Net 172 against 171; the transformer's differs (269 against 245: its GEMM choices
depend on autotuning), and its train step compiles only with `XLA_FLAGS=--xla_gpu_enable_triton_gemm=false`.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after JAX_PLATFORMS)
from jax.experimental import topologies  # noqa: E402

_HOPPER = """gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth}
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: {memory}
  shared_memory_per_block_optin: 232448
  cuda_compute_capability {{
    major: 9
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 7
}}
runtime_version {{
  major: 13
  minor: 0
}}
device_description_str: "{name}"
"""

# GpuTargetConfig protos (text format) of the two cards the device tool lends; they differ only in memory.
TARGETS = {
    "h100": _HOPPER.format(bandwidth=3352320000000, memory=84929347584, name="NVIDIA H100 80GB HBM3"),
    "h200": _HOPPER.format(bandwidth=4800000000000, memory=150109880320, name="NVIDIA H200"),
}


def replicated_sharding(target: str = "h100") -> jax.sharding.NamedSharding:
  """A sharding that places an abstract array on one (compile-only) GPU of kind `target`."""
  if target not in TARGETS:
    raise ValueError(f"Unknown GPU target {target!r}; choose from {list(TARGETS)}.")
  topology = topologies.get_topology_desc(platform="cuda", target_config=TARGETS[target], topology="1x1x1")
  mesh = topologies.make_mesh(topology, (1,), ("data",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def abstract(tree, sharding):
  """Arrays or ShapeDtypeStructs -> ShapeDtypeStructs placed by `sharding` (keys stay keys)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
