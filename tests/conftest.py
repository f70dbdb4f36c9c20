"""Test setup: 8 virtual CPU devices so multi-device code is exercised on any machine.

Must run before jax is imported anywhere.
"""
import os
import pathlib

from tests import xla_env

os.environ.setdefault("XLA_FLAGS", xla_env.xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, shared by both xdist workers and the subprocesses tests start (they inherit
# the environment): many tests compile the same smoke programs, and a cache hit skips XLA. Measured: three
# training tests 123 s -> 76 s from a cold cache (BUILD_NOTES.md, "Setup and versions").
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax"))

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def trained_run(data_path, tmp_path_factory):
  """A finished 4-step smoke run (checkpoints at steps 2 and 4, no validation), trained once per test process and
  shared: tests that write into a run (rollout, export, damage) copy it first (tests.smoke.copy_run)."""
  from dpjax import train
  from tests import smoke
  config = smoke.smoke_config(data_path)
  config.train.val_every = 0
  run_dir = tmp_path_factory.mktemp("trained") / "run"
  train.train_and_evaluate(config, run_dir)
  return run_dir
