"""XLA_FLAGS of every test process: this pytest process (tests/conftest.py) and the subprocesses tests start.

No jax import here: conftest sets the environment before jax is first imported.
"""

# The suite is bound by XLA:CPU compile time, so the programs tests compile are emitted cheaply: LLVM's machine-code
# optimisation off (-O0; three heavy tests 154 s -> 101 s from a cold cache) and each fusion emitted by XLA:CPU's
# older elemental emitter instead of its MLIR fusion emitters (whole suite 569.5 s -> 416.7 s). Neither changes the
# HLO (fusions, layouts, what is computed), only the machine code; the older emitter rounds a few fused operations
# differently in the last bits (golden outputs: 6 of 10 bit-identical, the rest within 9.2e-5, tolerance 1e-2).
# BUILD_NOTES.md, Decisions: "Tests compile with LLVM -O0 and the older fusion emitter".
TEST_XLA_OPTIMIZATION = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def xla_flags(device_count: int) -> str:
  """XLA_FLAGS for a test process with `device_count` virtual CPU devices."""
  return f"--xla_force_host_platform_device_count={device_count} {TEST_XLA_OPTIMIZATION}"
