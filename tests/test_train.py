"""End-to-end training: smoke run, 1-vs-8-device equality, kill-and-resume equality, NaN stop."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from dpjax import checkpoint, config_json, metrics, train, train_step, wall_time
from dpjax import policy as policy_lib
from dpjax.data import synthetic
from tests import smoke, xla_env

REPO = pathlib.Path(__file__).resolve().parents[1]


def _losses(run_dir):
  return {s: m["train/loss"] for s, m in sorted(metrics.read_metrics(run_dir).items()) if "train/loss" in m}


def test_smoke_trains_and_checkpoints(data_path, tmp_path, capsys):
  config = smoke.smoke_config(data_path)
  started = time.perf_counter()
  final = train.train_and_evaluate(config, tmp_path)
  took = time.perf_counter() - started
  said = capsys.readouterr().out
  assert "4 steps of batch 8, Adam's moments flat" in said   # the layout a CPU picks (optim.resolve_flat_moments)
  assert "the remaining 2 steps take about" in said   # estimated after step 2
  assert np.isfinite(final["train/loss"])
  assert (tmp_path / "config.json").exists() and (tmp_path / "policy_spec.json").exists()
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  logged = metrics.read_metrics(tmp_path)
  assert sorted(_losses(tmp_path)) == [1, 2, 3, 4]
  assert "val/loss" in logged[2] and "val/loss_ema" in logged[4]
  policy = checkpoint.load_policy(tmp_path)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(policy.params))
  spent = wall_time.read(tmp_path)
  assert (spent["start_step"], spent["end_step"]) == (0, 4)
  assert 0 <= spent["first_dispatch_compile_s"] <= min(spent["compile_s"], spent["first_dispatch_s"]), spent
  assert spent["setup_s"] > 0 and spent["first_dispatch_s"] > 0 and spent["validation_s"] > 0, spent
  in_call = sum(spent[f"{p}_s"] for p in wall_time.PHASES if p != "before_train")
  assert in_call <= took and spent["rollouts_s"] == 0.0, (in_call, took, spent)


def test_validation_loss_decreases_over_short_run(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.batch_size = 32
  config.train.num_steps = 150
  config.train.log_every = 10
  config.train.val_every = 10
  config.train.val_batches = 2
  config.train.checkpoint_every = 150
  config.optim.learning_rate = 1e-3
  train.train_and_evaluate(config, tmp_path)
  val = {s: m["val/loss"] for s, m in metrics.read_metrics(tmp_path).items() if "val/loss" in m}
  # Validation uses a fixed noise draw, so the drop is signal, not batch noise.
  assert val[150] < 0.8 * val[10], val


def test_one_device_equals_eight_devices(data_path, tmp_path):
  assert jax.device_count() == 8, "conftest sets 8 host devices"
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 3
  train.train_and_evaluate(config, tmp_path / "one", devices=jax.devices()[:1])
  train.train_and_evaluate(config, tmp_path / "eight", devices=jax.devices())
  one, eight = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
  assert sorted(one) == sorted(eight) == [1, 2, 3]
  np.testing.assert_allclose([one[s] for s in one], [eight[s] for s in one], rtol=1e-5, atol=1e-6)
  p1 = checkpoint.load_policy(tmp_path / "one", use_ema=False).params
  p8 = checkpoint.load_policy(tmp_path / "eight", use_ema=False).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p8)


def test_host_and_device_data_and_steps_per_dispatch_train_identically(data_path, tmp_path):
  """Device-resident data with 3 steps per dispatch = host batches one step at a time, step for step."""
  runs = {"host_1": ("host", 1), "device_3": ("device", 3)}
  for name, (placement, steps_per_dispatch) in runs.items():
    config = smoke.smoke_config(data_path)
    config.data.placement = placement
    config.train.steps_per_dispatch = steps_per_dispatch
    config.train.num_steps = 5
    config.train.log_every = 3        # dispatches of 3 and 2 steps (the last ends on num_steps) ...
    config.train.checkpoint_every = 5
    config.train.val_every = 4        # ... and of 3, 1, 1 with validation at step 4 (scan and loop-free paths)
    train.train_and_evaluate(config, tmp_path / name)
  logged = {name: metrics.read_metrics(tmp_path / name) for name in runs}
  assert sorted(_losses(tmp_path / "device_3")) == [3, 5]
  reference = checkpoint.load_policy(tmp_path / "host_1", use_ema=False).params
  for name in runs:
    assert _losses(tmp_path / name) == _losses(tmp_path / "host_1"), name
    assert logged[name][4]["val/loss"] == logged["host_1"][4]["val/loss"], name
    params = checkpoint.load_policy(tmp_path / name, use_ema=False).params
    jax.tree.map(np.testing.assert_array_equal, params, reference)


def test_steps_in_next_dispatch_end_on_every_event():
  assert train.steps_in_next_dispatch(0, 10, (50, 1000, 0, 0), 210_000) == 10
  assert train.steps_in_next_dispatch(45, 10, (50, 1000, 0, 0), 210_000) == 5
  assert train.steps_in_next_dispatch(990, 10, (50, 1000, 300, 0), 210_000) == 10
  assert train.steps_in_next_dispatch(895, 10, (50, 1000, 300, 0), 210_000) == 5
  assert train.steps_in_next_dispatch(209_998, 10, (50, 1000, 0, 0), 209_999) == 1
  assert train_step.resolve_steps_per_dispatch(0, "cpu") == 1
  assert train_step.resolve_steps_per_dispatch(0, "gpu") == train_step.AUTO_STEPS_PER_DISPATCH
  assert train_step.resolve_steps_per_dispatch(4, "gpu") == 4
  with pytest.raises(ValueError, match="steps_per_dispatch=-1 must be >= 1, or 0 for auto"):
    train_step.resolve_steps_per_dispatch(-1)


def test_misaligned_intervals_name_the_events_that_cost_a_compile():
  # The H100 check's checkpoint_every=3474 with 10 steps per dispatch ran 4- and 6-step dispatches: two compiles.
  intervals = {"log_every": 50, "val_every": 3474, "checkpoint_every": 3474, "rollout_every": 0}
  assert train.misaligned_intervals(10, intervals) == ["val_every", "checkpoint_every"]
  assert {train.steps_in_next_dispatch(s, 10, (50, 3474), 34_740) for s in (3470, 3494)} == {4, 6}
  assert train.misaligned_intervals(1, intervals) == []


def test_batch_size_not_divisible_by_devices_is_clear_error(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.batch_size = 12
  with pytest.raises(ValueError, match="does not divide by the 8 devices"):
    train.train_and_evaluate(config, tmp_path)


def test_bad_config_values_are_clear_errors(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.num_steps = -1
  with pytest.raises(ValueError, match="num_steps"):
    train.train_and_evaluate(config, tmp_path)
  config.train.num_steps, config.train.num_epochs = 0, 0   # 0 steps means "count epochs": then epochs must be >= 1
  with pytest.raises(ValueError, match="num_epochs >= 1"):
    train.train_and_evaluate(config, tmp_path)
  config = smoke.smoke_config(data_path)
  config.policy.denoiser = "lstm"
  with pytest.raises(ValueError, match="config.policy.denoiser"):
    train.train_and_evaluate(config, tmp_path / "b")
  config = smoke.smoke_config(data_path)
  config.train.rollout_every, config.train.rollout_episodes = 2, 0
  with pytest.raises(ValueError, match=r"rollout_episodes=0 must be >= 1 while rollout_every=2"):
    train.train_and_evaluate(config, tmp_path / "c")
  config = smoke.smoke_config(data_path)
  config.optim.warmup_steps = -5
  with pytest.raises(ValueError, match=r"warmup_steps=-5 must be >= 0"):
    train.train_and_evaluate(config, tmp_path / "d")
  config = smoke.smoke_config(data_path)
  config.optim.grad_clip_norm = -1.0   # would flip every gradient
  with pytest.raises(ValueError, match=r"grad_clip_norm=-1.0: give a global norm > 0, or 0 to disable"):
    train.train_and_evaluate(config, tmp_path / "e")
  assert not (tmp_path / "e" / "checkpoints").exists() or not list((tmp_path / "e" / "checkpoints").iterdir())


def test_rollouts_without_the_simulator_stop_before_training(data_path, tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "dpjax.envs.pusht", None)   # `import` fails, as without the env extra
  config = smoke.smoke_config(data_path)
  config.train.rollout_every, config.train.rollout_episodes = 2, 2
  with pytest.raises(ValueError, match=r"In-training rollouts need the Push-T simulator .*pip install -e '.\[env\]',"
                     r" or set --config.train.rollout_every=0"):
    train.train_and_evaluate(config, tmp_path)
  assert not metrics.read_metrics(tmp_path)   # nothing trained


def test_resuming_with_a_different_policy_is_a_clear_error(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 2
  train.train_and_evaluate(config, tmp_path)
  config.policy.unet1d.down_dims = (16, 16)
  with pytest.raises(ValueError, match="different policy.*denoiser_kwargs"):
    train.train_and_evaluate(config, tmp_path)
  # The run's files still describe the run, not the rejected config.
  saved = policy_lib.PolicySpec.from_json((tmp_path / "policy_spec.json").read_text())
  assert dict(saved.denoiser_kwargs)["down_dims"] == (16, 32)


def test_resuming_with_a_longer_run_records_its_config_beside_the_first(data_path, tmp_path, monkeypatch):
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 2
  train.train_and_evaluate(config, tmp_path)
  steps_fns, jit_train_steps = [], train_step.jit_train_steps

  def recorded_jit_train_steps(*args, **kwargs):
    steps_fns.append(jit_train_steps(*args, **kwargs))
    return steps_fns[-1]

  monkeypatch.setattr(train_step, "jit_train_steps", recorded_jit_train_steps)
  config.train.num_steps = 4
  train.train_and_evaluate(config, tmp_path)
  # The restored state is placed as the step returns it, so the resumed run compiles its step once, not twice.
  assert [f._cache_size() for f in steps_fns] == [1]
  assert sorted(_losses(tmp_path)) == [1, 2, 3, 4]
  assert json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"] == 2
  assert json.loads((tmp_path / "config_resumed_step_2.json").read_text())["train"]["num_steps"] == 4


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.optim.learning_rate = 1e30
  config.optim.warmup_steps = 0
  config.optim.schedule = "constant"
  config.train.num_steps = 20
  config.train.checkpoint_every = 1
  config.train.log_every = 100
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
    train.train_and_evaluate(config, tmp_path)
  policy = checkpoint.load_policy(tmp_path, use_ema=False)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(policy.params))


def _train_command(data_path, workdir, num_steps, checkpoint_every=4):
  return [sys.executable, "-m", "dpjax.train", "--config=configs/pusht.py:smoke", f"--workdir={workdir}",
          f"--config.data.path={data_path}", "--config.data.val_ratio=0.2", f"--config.train.num_steps={num_steps}",
          f"--config.train.checkpoint_every={checkpoint_every}", "--config.train.log_every=1",
          "--config.train.val_every=0", "--config.optim.schedule=constant"]


def test_sigkill_then_resume_matches_uninterrupted_run(data_path, tmp_path):
  total = 40
  env = dict(os.environ, XLA_FLAGS=xla_env.xla_flags(8), JAX_PLATFORMS="cpu")
  # All three runs share a fresh compilation cache through the flag (it beats $JAX_COMPILATION_CACHE_DIR).
  cache = tmp_path / "xla_cache"

  def command(*args):
    return [*_train_command(*args), f"--compilation_cache_dir={cache}"]

  # Losses do not depend on how often a run checkpoints; the reference and the resumed run save only at the end.
  subprocess.run(command(data_path, tmp_path / "reference", total, total), cwd=REPO, env=env, check=True,
                 capture_output=True)
  workdir = tmp_path / "killed"
  # A run that would go on for a long time; killed as soon as its first checkpoint is complete.
  proc = subprocess.Popen(command(data_path, workdir, 100_000), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  ckpt_dir = workdir / "checkpoints"
  while time.time() < deadline and proc.poll() is None:
    if ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = max(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  assert killed_at < total, f"the run reached step {killed_at} before the kill; the test needs it mid-run"
  resumed = subprocess.run(command(data_path, workdir, total, total), cwd=REPO, env=env, check=True,
                           capture_output=True, text=True)
  reference, after = _losses(tmp_path / "reference"), _losses(workdir)
  assert sorted(after) == list(range(1, total + 1)), resumed.stderr[-2000:]
  np.testing.assert_allclose([after[s] for s in range(1, total + 1)], [reference[s] for s in range(1, total + 1)],
                             rtol=1e-6)
  assert any(p.name.startswith("jit_train_steps") for p in cache.iterdir()), sorted(cache.iterdir())


# The image transformer trains by flow matching here: one run covers both (the suite's time is bounded).
@pytest.mark.parametrize("variant", ["transformer,smoke", "image,smoke", "image,transformer,flow,smoke"])
def test_every_variant_trains_end_to_end(tmp_path, variant):
  data_path = synthetic.write_synthetic_pusht(tmp_path / "pusht.zarr", (20, 18, 22, 19, 21), image="image" in variant,
                                              values="random_walk")
  config = smoke.smoke_config(data_path, variant)
  config.train.num_steps = 2
  config.train.val_every = 0
  final = train.train_and_evaluate(config, tmp_path / "run")
  assert np.isfinite(final["train/loss"])
  policy = checkpoint.load_policy(tmp_path / "run")
  assert policy.spec.denoiser == ("transformer" if "transformer" in variant else "unet1d")
  assert policy.spec.encoder == ("resnet18" if "image" in variant else "lowdim")
  assert policy.spec.objective == ("flow" if "flow" in variant else "ddpm")


def test_rollouts_during_training_are_logged(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 2
  config.train.rollout_every = 2
  config.train.rollout_episodes = 2
  config.rollout.max_steps = 8
  final = train.train_and_evaluate(config, tmp_path)
  assert 0.0 <= final["rollout/mean_score"] <= 1.0
  assert "rollout/success_rate" in metrics.read_metrics(tmp_path)[2]
  assert (tmp_path / "eval" / "step_2" / "eval.json").exists()
  assert wall_time.read(tmp_path)["rollouts_s"] > 0


def test_estimated_time_line():
  line = train.estimated_time(steps_done=100, seconds=50.0, steps_left=3600)
  assert line.startswith("2.00 steps/s: the remaining 3,600 steps take about 30 min")
  assert "about 5.0 h" in train.estimated_time(steps_done=1, seconds=1.0, steps_left=18_000)


def test_training_length_in_epochs_counts_the_actual_training_windows(data_path, tmp_path, capsys):
  config = smoke.smoke_config(data_path)
  config.train.num_steps, config.train.num_epochs = 0, 2
  config.data.max_train_episodes = 1          # a handful of windows: 2 epochs are a few batches of 8
  config.train.val_every, config.train.log_every, config.train.checkpoint_every = 0, 100, 100
  train.train_and_evaluate(config, tmp_path)
  recorded = json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"]
  said = re.search(r"2 epochs of (\d+) windows = (\d+) steps", capsys.readouterr().out)
  num_windows, num_steps = int(said.group(1)), int(said.group(2))
  assert recorded == num_steps == 2 * -(-num_windows // 8)
  assert sorted(metrics.read_metrics(tmp_path))[-1] == num_steps   # trained exactly that long
  assert config.train.num_steps == 0                                 # the caller's config is left as it was

  # Continued from its config.json (which records the resolved num_steps) with more epochs: they count.
  resumed = config_json.get_config(tmp_path / "config.json")
  resumed.train.num_epochs = 3
  train.train_and_evaluate(resumed, tmp_path)
  assert sorted(metrics.read_metrics(tmp_path))[-1] == 3 * num_steps // 2
  assert json.loads((tmp_path / f"config_resumed_step_{num_steps}.json").read_text())["train"]["num_steps"] == (
      3 * num_steps // 2)


def test_keep_best_checkpoints_keeps_the_best_scored_rollout_step_and_the_newest(data_path, tmp_path):
  config = smoke.smoke_config(data_path)
  config.train.num_steps = 6
  config.train.rollout_every, config.train.rollout_episodes, config.rollout.max_steps = 2, 2, 8
  config.train.checkpoint_every, config.train.checkpoint_every_minutes = 100, 0.0   # only rollouts and the end save
  config.train.keep_checkpoints, config.train.keep_best_checkpoints = 1, 1
  config.rollout.policy_seed_per_checkpoint = True
  train.train_and_evaluate(config, tmp_path / "run")
  records = metrics.read_metrics(tmp_path / "run")
  scores = {step: records[step]["rollout/mean_score"] for step in (2, 4, 6)}
  # Each rollout drew its own noise: the rollout at step N with policy seed N.
  assert all(json.loads((tmp_path / "run" / "eval" / f"step_{step}" / "eval.json").read_text())["policy_seed"] == step
             for step in (2, 4, 6))
  best = max(scores, key=lambda step: (scores[step], step))
  manager = checkpoint.make_manager(tmp_path / "run", keep=None, read_only=True)
  assert manager.all_steps() == sorted({best, 6})
  assert all(manager.metrics(step) == {"rollout/mean_score": scores[step]} for step in manager.all_steps())
  assert checkpoint.best_step(tmp_path / "run") == best
  cmd = [sys.executable, "-m", "dpjax.rollout", f"--checkpoint={tmp_path / 'run'}", "--step=best", "--num_episodes=1",
         "--max_steps=4", "--num_videos=0", f"--out={tmp_path / 'eval'}"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert json.loads((tmp_path / "eval" / "eval.json").read_text())["checkpoint_step"] == best
  config.train.rollout_every = 0
  with pytest.raises(ValueError, match="keep_best_checkpoints=1 keeps the checkpoints with the best in-training"):
    train.validate_config(config)
