"""Ctrl-C / SIGTERM checkpoint and exit, a second Ctrl-C exits at once, wall-clock checkpoints."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from dpjax import checkpoint, metrics, preemption, train
from dpjax.data import synthetic
from tests import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
  return synthetic.write_synthetic_pusht(tmp_path_factory.mktemp("data") / "pusht.zarr", smoke.SMOKE_EPISODE_LENGTHS,
                                         image=False, values="random_walk")


def test_checkpoint_timer_and_single_process_agreement():
  now = [100.0]
  timer = preemption.CheckpointTimer(2.0, clock=lambda: now[0])
  assert not timer.due()
  now[0] += 119.0
  assert not timer.due()
  now[0] += 1.0
  assert timer.due()
  timer.reset()
  assert not timer.due()
  assert not preemption.CheckpointTimer(0.0, clock=lambda: now[0] + 1e9).due()
  assert preemption.agree((True, False)) == (True, False)


def test_signal_catcher_records_the_first_signal_and_restores_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.SignalCatcher() as catcher:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert catcher.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_wall_clock_checkpoints_between_step_checkpoints(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 5
  config.train.checkpoint_every = 100
  config.train.checkpoint_every_minutes = 1e-9     # due after every dispatch
  config.train.val_every = 0
  train.train_and_evaluate(config, tmp_path)
  # keep_checkpoints = 3 of the five timed ones.
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [3, 4, 5]
  blocking = [m["train/checkpoint_blocking_s"] for m in metrics.read_metrics(tmp_path).values()
              if "train/checkpoint_blocking_s" in m]
  assert len(blocking) == 5 and all(b >= 0 for b in blocking)


def _start(data_path, workdir):
  command = [sys.executable, "-m", "dpjax.train", "--config=configs/pusht.py:smoke", f"--workdir={workdir}",
             f"--config.data.path={data_path}", "--config.data.val_ratio=0.2", "--config.train.num_steps=100000",
             "--config.train.checkpoint_every=100000", "--config.train.log_every=1", "--config.train.val_every=0"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(proc, workdir, deadline_s=240):
  deadline = time.time() + deadline_s
  while time.time() < deadline and proc.poll() is None:
    if len(metrics.read_metrics(workdir)) >= 2:
      return
    time.sleep(0.05)
  proc.kill()
  raise AssertionError(f"training did not start: {proc.communicate()[1][-2000:]}")


def test_ctrl_c_saves_a_checkpoint_and_exits(data_path, tmp_path):
  proc = _start(data_path, tmp_path)
  _wait_for_training(proc, tmp_path)
  sent = time.time()
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=60)
  took = time.time() - sent
  assert proc.returncode == 128 + signal.SIGINT, stderr[-2000:]
  assert "stopped by SIGINT at step" in stdout and "KeyboardInterrupt" not in stderr
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(steps) == 1 and steps[0] == max(metrics.read_metrics(tmp_path)), (steps, stdout)
  assert checkpoint.load_policy(tmp_path).spec.horizon == 16
  assert took < 30, took


def test_second_ctrl_c_exits_at_once(data_path, tmp_path):
  proc = _start(data_path, tmp_path)
  _wait_for_training(proc, tmp_path)
  proc.send_signal(signal.SIGINT)
  seen = ""
  while "SIGINT received" not in seen:   # the first signal was handled (two at once would merge into one)
    line = proc.stderr.readline()
    assert line, seen[-2000:]
    seen += line
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=30)
  assert proc.returncode == 128 + signal.SIGINT
  assert "second Ctrl-C, exiting now" in seen + stderr
