"""Test setup: 8 virtual CPU devices so multi-device code is exercised on any machine.

Must run before jax is imported anywhere.
"""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, shared by both xdist workers and the subprocesses tests start (they inherit
# the environment): many tests compile the same smoke programs, and a cache hit skips XLA. Measured: three
# training tests 123 s -> 76 s from a cold cache (BUILD_NOTES.md, "Setup and versions").
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))

import pytest  # noqa: E402

# The tests measured at >= 30 s on the 2-core CI machine (`PYTEST_ADDOPTS=--durations=60 bash .ci/run`, session 7),
# slowest first. They run before all others, and the Makefile hands tests to the two xdist workers one at a time
# (`--maxschedchunk=1`), so the workers share the long tests and finish together: without this a 2.5-minute test
# collected late can run alone at the end. Only tests without module-scoped fixtures are listed (moving one of
# those away from its module would set the fixture up twice). A renamed test only loses its place in the queue.
SLOWEST_FIRST = (
    "tests/test_multiprocess.py::test_two_processes_train_resume_and_match_one_process",                   # 158 s
    "tests/test_train.py::test_sigkill_then_resume_matches_uninterrupted_run",                              # 63 s
    "tests/test_golden.py::test_outputs_match_the_golden_file",                                             # 56 s
    "tests/test_bench.py::test_quick_bench_writes_positive_finite_numbers",                                 # 47 s
    "tests/test_train.py::test_host_and_device_data_and_steps_per_dispatch_train_identically",              # 44 s
    "tests/test_train.py::test_every_variant_trains_end_to_end[image,smoke]",                               # 38 s
    "tests/test_mixed_precision.py::test_bfloat16_loss_and_gradients_track_float32[smoke,image-obs_shapes2]",  # 38 s
    "tests/test_distill.py::test_student_equal_to_a_one_step_teacher_has_zero_loss_at_noise",               # 33 s
    "tests/test_bench.py::test_flow_policies_bench_with_their_samplers",                                    # 32 s
)


def pytest_collection_modifyitems(items):
  """Moves SLOWEST_FIRST to the front, in its order; every other test keeps its collection order."""
  rank = {nodeid: i for i, nodeid in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
REAL_PUSHT = REPO_ROOT.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"


@pytest.fixture(scope="session")
def real_pusht_path():
  """Path of the real Push-T replay buffer. Fails (never skips) when it is absent in CI."""
  path = pathlib.Path(os.environ.get("DPJAX_PUSHT_ZARR", REAL_PUSHT))
  if not path.exists():
    message = (f"Real Push-T data not found at {path}. Set DPJAX_PUSHT_ZARR or place the data at {REAL_PUSHT}.")
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)
  return path


@pytest.fixture(scope="session")
def data_path(tmp_path_factory):
  """A small low-dim replay buffer of random-walk episodes (tests.smoke.SMOKE_EPISODE_LENGTHS), written once per
  test process; the end-to-end training tests read it."""
  from dpjax.data import synthetic
  from tests import smoke
  return synthetic.write_synthetic_pusht(tmp_path_factory.mktemp("data") / "pusht.zarr", smoke.SMOKE_EPISODE_LENGTHS,
                                         image=False, values="random_walk")
