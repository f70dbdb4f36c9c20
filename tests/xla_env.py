"""XLA_FLAGS of every test process: this pytest process (tests/conftest.py) and the subprocesses tests start.

No jax import here: conftest sets the environment before jax is first imported.
"""

# LLVM's machine-code optimisation off (-O0) for the programs tests compile. The suite is bound by XLA:CPU compile
# time; -O0 leaves the HLO (fusions, layouts, hence the numbers) as it is and only makes the emitted code slower.
# Measured on a cold cache: three heavy tests 154 s -> 101 s (BUILD_NOTES.md, "Setup and versions").
TEST_XLA_OPTIMIZATION = "--xla_backend_optimization_level=0"


def xla_flags(device_count: int) -> str:
  """XLA_FLAGS for a test process with `device_count` virtual CPU devices."""
  return f"--xla_force_host_platform_device_count={device_count} {TEST_XLA_OPTIMIZATION}"
