"""Multi-host training, simulated on one machine: 2 JAX processes x 4 CPU devices, joined by
`jax.distributed` (gloo collectives), through the real CLI (`--distributed --coordinator_address ...`).

Checks what only several processes exercise: per-process data shards assembled into one global batch, orbax
saves and grain-iterator checkpoints from every process, metrics and environment evaluation on process 0 only
(its score saved with the checkpoint by every process), a training state split over the processes' devices, and
resuming. The losses must equal a single-process 8-device run of the same config.
"""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

from dpjax import checkpoint, metrics, train
from dpjax.data import synthetic
from tests import smoke, xla_env

NUM_PROCESSES, DEVICES_PER_PROCESS = 2, 4
TIMEOUT_S = 420
REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _fields(data_path, num_steps) -> dict:
  """Config fields set on top of the smoke config, for the processes (as flags) and this process alike."""
  return {"data.path": str(data_path), "data.val_ratio": 0.2, "train.num_steps": num_steps,
          "optim.schedule": "constant",   # so a 4-step run resumed to 6 steps equals a 6-step run
          "train.rollout_every": 4, "train.rollout_episodes": 2, "rollout.max_steps": 8,
          "train.keep_best_checkpoints": 1}   # process 0's rollout score saved with checkpoint 4 by both processes


def _overrides(data_path, num_steps):
  return [f"--config.{name}={value}" for name, value in _fields(data_path, num_steps).items()]


def _config(data_path, num_steps):
  config = smoke.smoke_config(data_path)
  config.update_from_flattened_dict(_fields(data_path, num_steps))
  return config


def _run_processes(workdir, data_path, num_steps, log_dir, extra=()):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=xla_env.xla_flags(DEVICES_PER_PROCESS), JAX_PLATFORMS="cpu")
  procs, logs = [], []
  for i in range(NUM_PROCESSES):
    log = open(log_dir / f"process_{i}_{num_steps}.log", "w")
    logs.append(log)
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "dpjax.train", "--config=configs/pusht.py:smoke", f"--workdir={workdir}",
         "--distributed", f"--coordinator_address=localhost:{port}", f"--num_processes={NUM_PROCESSES}",
         f"--process_id={i}", *_overrides(data_path, num_steps), *extra],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  try:
    codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      p.kill()
    for log in logs:
      log.close()
  for i, code in enumerate(codes):
    assert code == 0, (log_dir / f"process_{i}_{num_steps}.log").read_text()[-3000:]


def _losses(run_dir):
  return {s: m["train/loss"] for s, m in sorted(metrics.read_metrics(run_dir).items()) if "train/loss" in m}


def test_two_processes_train_resume_and_match_one_process(tmp_path):
  data_path = synthetic.write_synthetic_pusht(tmp_path / "pusht.zarr", smoke.SMOKE_EPISODE_LENGTHS, image=False,
                                              values="random_walk")
  multi = tmp_path / "multi"
  # The EMA weights and Adam's moments split over the 8 devices of both processes: each process saves and restores
  # its shards, and validation and process 0's rollout gather the EMA weights from both. (Resuming on another
  # setting compiles a second step: tested in one process, tests/test_sharding.py.)
  split = ["--config.train.shard_ema_and_moments=True"]
  _run_processes(multi, data_path, 4, tmp_path, extra=split)
  assert sorted(int(p.name) for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
  assert (multi / "eval" / "step_4" / "eval.json").exists()   # evaluated by process 0 only
  assert "split over the 8 devices" in (tmp_path / "process_0_4.log").read_text()
  _run_processes(multi, data_path, 6, tmp_path, extra=split)   # resumes from step 4 in both processes

  single = tmp_path / "single"
  train.train_and_evaluate(_config(data_path, 6), single)      # this pytest process: 8 devices
  got, want = _losses(multi), _losses(single)
  assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([got[s] for s in want], [want[s] for s in want], rtol=1e-5, atol=1e-6)
  logged = metrics.read_metrics(multi)
  assert 0.0 <= logged[4]["rollout/mean_score"] <= 1.0
  scores = checkpoint.make_manager(multi, keep=None, read_only=True).metrics(4)
  assert scores == {checkpoint.SCORE_METRIC: np.float32(logged[4]["rollout/mean_score"]).item()}
  assert "val/loss" in logged[6]
