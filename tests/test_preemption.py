"""Ctrl-C / SIGTERM checkpoint and exit, a second Ctrl-C exits at once, wall-clock checkpoints."""
import os
import signal
import time

import pytest

from dpjax import checkpoint, metrics, preemption, train
from tests import smoke

def test_checkpoint_timer():
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


def test_signal_catcher_records_the_first_signal_and_restores_handlers():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.SignalCatcher() as catcher:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert catcher.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_and_the_timer_checkpoint_during_training(data_path, tmp_path, monkeypatch):
  """A real SIGINT during `train_and_evaluate`: the timer has checkpointed every step so far, the signal makes the
  loop checkpoint the step it is at and stop; nothing else of the run is lost."""
  due_calls = []

  def due_and_ctrl_c_at_step_3(timer):
    due_calls.append(1)
    if len(due_calls) == 3:
      os.kill(os.getpid(), signal.SIGINT)     # as a user's Ctrl-C, arriving during the third dispatch's checks
    return True                               # checkpoint_every_minutes elapsed after every dispatch

  monkeypatch.setattr(preemption.CheckpointTimer, "due", due_and_ctrl_c_at_step_3)
  before = signal.getsignal(signal.SIGINT)   # default_int_handler, or SIG_IGN in a pytest-xdist worker
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 100
  config.train.checkpoint_every = 100
  config.train.val_every = 0
  sent = time.time()
  with pytest.raises(preemption.StopRequested, match="stopped by SIGINT at step 4 after saving a checkpoint"):
    train.train_and_evaluate(config, tmp_path)
  assert time.time() - sent < 120
  # keep_checkpoints = 3: the timed ones at 2 and 3, the stop at 4.
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 3, 4]
  assert max(metrics.read_metrics(tmp_path)) == 4
  blocking = [m["train/checkpoint_blocking_s"] for m in metrics.read_metrics(tmp_path).values()
              if "train/checkpoint_blocking_s" in m]
  assert len(blocking) == 4 and all(b >= 0 for b in blocking)
  assert checkpoint.load_policy(tmp_path).spec.horizon == 16
  assert signal.getsignal(signal.SIGINT) is before


def test_second_ctrl_c_exits_at_once(monkeypatch, capsys):
  exits = []
  monkeypatch.setattr(preemption.os, "_exit", exits.append)
  with preemption.SignalCatcher() as catcher:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
    assert catcher.signum == signal.SIGINT and not exits
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.01)
  assert exits == [128 + signal.SIGINT]
  assert "second Ctrl-C, exiting now" in capsys.readouterr().err
