"""Failures that never cost work: damaged checkpoints are skipped (and moved aside on resume), a finished run says
so, a resume leaves one metrics record per step, and the command lines report errors in one line."""
import json
import logging
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dpjax import checkpoint, cli, config_json, metrics, train, train_step
from tests import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(data_path):
  config = smoke.smoke_config(data_path)
  config.train.val_every = 0
  return config


def _truncate_meta(run_dir, step: int) -> None:
  meta = run_dir / "checkpoints" / str(step) / "meta" / "metadata"
  meta.write_text(meta.read_text()[:20])


def _steps(folder) -> list[int]:
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.mark.parametrize("damage", ["ema_params file", "meta json"])
def test_load_policy_falls_back_to_the_newest_intact_checkpoint(trained_run, tmp_path, caplog, damage):
  run_dir = smoke.copy_run(trained_run, tmp_path)
  if damage == "ema_params file":
    reason = f"missing file {smoke.delete_a_data_file(run_dir, 4, 'ema_params')}"
  else:
    _truncate_meta(run_dir, 4)
    reason = "meta is not valid JSON"
  with caplog.at_level(logging.WARNING):
    policy = checkpoint.load_policy(run_dir)
  skipped = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
  assert len(skipped) == 1 and skipped[0].startswith("checkpoint 4 is damaged (") and reason in skipped[0], skipped
  assert skipped[0].endswith(f"; using checkpoint 2 of {run_dir}")
  expected = checkpoint.load_policy(trained_run, step=2)
  jax.tree.map(np.testing.assert_array_equal, policy.params, expected.params)
  assert checkpoint.load_policy_and_step(run_dir)[1] == 2   # what an export records as its source
  with pytest.raises(checkpoint.CheckpointError, match="checkpoints/4 is damaged .*; available: \\[2, 4\\]"):
    checkpoint.load_policy(run_dir, step=4)
  _truncate_meta(run_dir, 2)
  with pytest.raises(checkpoint.CheckpointError, match="No usable checkpoint in .*step 4: .*; step 2: .*not valid "):
    checkpoint.load_policy(run_dir)


def test_load_policy_drops_only_orbax_read_only_warnings(trained_run, caplog):
  with caplog.at_level(logging.INFO):
    checkpoint.load_policy(trained_run)
    logging.getLogger("absl").warning("Given directory is read only, said by someone else")
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "absl"]
  assert warnings == ["Given directory is read only, said by someone else"], warnings


def test_resume_moves_a_damaged_checkpoint_aside_and_saves_over_its_step(data_path, trained_run, tmp_path, capsys):
  run_dir = smoke.copy_run(trained_run, tmp_path)
  victim = smoke.delete_a_data_file(run_dir, 4, "params")
  # As after a kill between logging step 4 and completing its checkpoint: the resume logs steps 3 and 4 again.
  final = train.train_and_evaluate(_config(data_path), run_dir)
  out = capsys.readouterr().out
  line = f"dpjax.train: checkpoint 4 is damaged (missing file {victim}); moved it to " \
         f"{run_dir / 'checkpoints_damaged' / '4'} and resumed from 2"
  assert line in out.splitlines(), out
  assert _steps(run_dir / "checkpoints") == [2, 4] and _steps(run_dir / "checkpoints_damaged") == [4]
  assert not (run_dir / "checkpoints_damaged" / "4" / victim.relative_to(run_dir / "checkpoints" / "4")).exists()
  # The run redid steps 3 and 4 exactly, and metrics.jsonl holds each (step, name) once.
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  pairs = [(r["step"], k) for r in records for k in r if k != "step"]
  assert len(pairs) == len(set(pairs))
  before = metrics.read_metrics(trained_run)
  assert [before[s]["train/loss"] for s in (3, 4)] == [metrics.read_metrics(run_dir)[s]["train/loss"] for s in (3, 4)]
  assert final["train/loss"] == before[4]["train/loss"]
  checkpoint.load_policy(run_dir)   # the new checkpoint 4 is intact


def test_resume_with_no_intact_checkpoint_moves_nothing(data_path, trained_run, tmp_path):
  run_dir = smoke.copy_run(trained_run, tmp_path)
  for step in (2, 4):
    smoke.delete_a_data_file(run_dir, step, "opt_state")
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in .* can be restored \\(step 4: missing file "
                     ".*; step 2: missing file .*\\). If the config changed the optimiser \\(config.optim.flat_moments "
                     "changes its state's layout\\), resume with the run's own: --config=.*config.json; else move .* "
                     "away"):
    train.train_and_evaluate(_config(data_path), run_dir)
  assert _steps(run_dir / "checkpoints") == [2, 4] and not (run_dir / "checkpoints_damaged").exists()


def test_a_run_resumes_only_with_the_optimiser_state_layout_it_started_with(data_path, trained_run, tmp_path):
  """Flat Adam moments (the default) and per-array ones are different checkpoints: the wrong setting is an error
  that names the fix and moves nothing; the run's own config.json resumes it."""
  run_dir = smoke.copy_run(trained_run, tmp_path)
  config = _config(data_path)
  config.optim.flat_moments = False
  config.train.num_steps = 6
  with pytest.raises(checkpoint.CheckpointError, match="flat_moments.*--config=.*config.json"):
    train.train_and_evaluate(config, run_dir)
  assert _steps(run_dir / "checkpoints") == [2, 4] and not (run_dir / "checkpoints_damaged").exists()
  own = config_json.get_config(run_dir / "config.json")
  assert own.optim.flat_moments is True
  own.train.num_steps = 6
  train.train_and_evaluate(own, run_dir)
  assert _steps(run_dir / "checkpoints")[-1] == 6


def test_a_resume_left_to_the_default_layout_takes_the_run_s_own(data_path, trained_run, tmp_path, monkeypatch):
  """The run recorded the layout its backend picked (flat on a CPU); resumed where the library would pick per-array
  moments (a transformer on a TPU, say), a config that leaves flat_moments at None still resumes the checkpoints."""
  from dpjax import optim
  run_dir = smoke.copy_run(trained_run, tmp_path)
  assert config_json.get_config(run_dir / "config.json").optim.flat_moments is True
  monkeypatch.setattr(optim, "resolve_flat_moments", lambda optim_config, *args, **kwargs: (
      False if optim_config.flat_moments is None else bool(optim_config.flat_moments)))
  config = _config(data_path)
  assert config.optim.flat_moments is None
  config.train.num_steps = 6
  train.train_and_evaluate(config, run_dir)
  assert _steps(run_dir / "checkpoints")[-1] == 6
  resumed = json.loads((run_dir / "config_resumed_step_4.json").read_text())   # num_steps differs
  assert resumed["optim"]["flat_moments"] is True and resumed["train"]["num_steps"] == 6


def test_rerunning_a_trained_run_from_its_config_json_says_it_is_complete(trained_run, tmp_path, capsys):
  run_dir = smoke.copy_run(trained_run, tmp_path)
  config = config_json.get_config(run_dir / "config.json")
  started = _config(config.data.path)
  started.optim.flat_moments = True   # None in the config; the run records what it used (flat on a CPU)
  assert config == started and config.policy.unet1d.down_dims == (16, 32)
  assert train.train_and_evaluate(config, run_dir) == {}
  assert (f"dpjax.train: the run in {run_dir} is complete at step 4 (its checkpoints are in {run_dir / 'checkpoints'}):"
          f" train on with a larger --config.train.num_steps=, or evaluate with python -m dpjax.rollout "
          f"--checkpoint={run_dir}") in capsys.readouterr().out.splitlines()
  assert (run_dir / "metrics.jsonl").read_text() == (trained_run / "metrics.jsonl").read_text()
  assert not list(run_dir.glob("config_resumed_step_*.json"))


def test_config_json_reaches_config_flags_as_a_loader_argument(trained_run):
  argv = cli.config_json_argv(["train", f"--config={trained_run}/config.json", "--config", "b.json", "--x=y.json"])
  assert argv == ["train", f"--config={cli.JSON_LOADER}:{trained_run}/config.json", "--config",
                  f"{cli.JSON_LOADER}:b.json", "--x=y.json"]
  loaded = cli.FLAGS["config"].parser.parse(argv[1].split("=", 1)[1])   # config_flags' own file loader
  assert loaded.train.num_steps == 4 and loaded.is_locked


def test_metrics_keep_one_record_per_step_and_name_after_a_resume(tmp_path):
  lines = [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}, {"step": 2, "b": 5.0}, {"step": 3, "a": 3.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 4, "a"')
  assert metrics.read_metrics(tmp_path) == {1: {"a": 1.0}, 2: {"a": 2.0, "b": 5.0}, 3: {"a": 3.0}}
  writer = metrics.MetricsWriter(tmp_path, resume_step=2)   # step 3 and the line cut by the kill are dropped
  writer.write(3, {"a": 30.0})
  writer.write(2, {"a": 20.0})                              # a record written again: the last one wins
  writer.close()
  assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 2, 3, 2]
  assert metrics.read_metrics(tmp_path) == {1: {"a": 1.0}, 2: {"a": 20.0, "b": 5.0}, 3: {"a": 30.0}}
  assert list(metrics.read_metrics(tmp_path)) == [1, 2, 3]


def test_a_run_from_scratch_drops_the_records_of_one_killed_before_its_first_checkpoint(tmp_path):
  # No checkpoint to resume, so training starts at step 0: the killed attempt's lines (and a line the kill cut,
  # which the first new record would otherwise be glued to) are gone.
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
  writer = metrics.MetricsWriter(tmp_path)
  writer.write(2, {"a": 20.0})
  writer.close()
  assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 2, "a": 20.0}\n'


def test_known_errors_are_one_line_and_a_full_disk_says_what_to_do(monkeypatch):
  with pytest.raises(SystemExit, match="^dpjax.train: bad value$"):
    with cli.errors_as_one_line("dpjax.train", (ValueError,)):
      raise ValueError("bad value")
  for full in (OSError(28, "No space left on device", "/runs/x/metrics.jsonl"),
               RuntimeError("tensorstore write failed: No space left on device")):
    with pytest.raises(SystemExit, match="^dpjax.train: .*No space left on device.*; free some space"):
      with cli.errors_as_one_line("dpjax.train", (ValueError,)):
        raise full
  with pytest.raises(KeyError):   # not a known error: a bug keeps its traceback
    with cli.errors_as_one_line("dpjax.train", (ValueError,)):
      raise KeyError("x")
  monkeypatch.setattr(cli, "_wants_traceback", lambda: True)
  with pytest.raises(ValueError):
    with cli.errors_as_one_line("dpjax.train", (ValueError,)):
      raise ValueError("bad value")


def test_compilation_cache_folder_from_flag_env_or_home_and_off_when_it_cannot_be_made(tmp_path, monkeypatch,
                                                                                      capsys):
  env = {"JAX_COMPILATION_CACHE_DIR": "/env"}
  assert cli.compilation_cache_dir("/flag", env) == "/flag"
  assert cli.compilation_cache_dir("", env) is None                      # the flag turns it off
  assert cli.compilation_cache_dir(None, env) == "/env"
  assert cli.compilation_cache_dir(None, {"XDG_CACHE_HOME": "/xdg"}) == "/xdg/dpjax/xla"
  assert cli.compilation_cache_dir(None, {}) == os.path.expanduser("~/.cache/dpjax/xla")
  updates = []
  monkeypatch.setattr(cli.jax.config, "update", lambda name, value: updates.append((name, value)))
  assert cli.use_compilation_cache(str(tmp_path / "cache")) == str(tmp_path / "cache")
  assert (tmp_path / "cache").is_dir() and updates == [("jax_compilation_cache_dir", str(tmp_path / "cache"))]
  (tmp_path / "a_file").write_text("")
  assert cli.use_compilation_cache(str(tmp_path / "a_file" / "cache")) is None
  assert updates[-1] == ("jax_enable_compilation_cache", False)
  said = capsys.readouterr().err.splitlines()
  assert len(said) == 1 and said[0].startswith(f"compilation cache off: cannot create {tmp_path}/a_file/cache"), said


def test_train_cli_reports_a_config_typo_and_a_bad_value_in_one_line():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  typo = subprocess.run([sys.executable, "-m", "dpjax.train", "--config=configs/pusht.py:smoke",
                         "--config.train.num_step=10"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert typo.returncode == 1 and typo.stdout == ""
  assert typo.stderr.splitlines() == ["dpjax.train: --config.train.num_step is not a config field; did you mean "
                                      "--config.train.num_steps?"], typo.stderr
  horizon = subprocess.run([sys.executable, "-m", "dpjax.train", "--config=configs/pusht.py:smoke",
                            "--config.horizon=1", "--workdir=unused"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
  assert horizon.returncode == 1 and "Traceback" not in horizon.stderr
  assert horizon.stderr.splitlines() == ["dpjax.train: config.n_obs_steps=2 must be in [1, config.horizon=1]: the "
                                         "observed steps are the first of each predicted chunk; raise "
                                         "--config.horizon."], horizon.stderr


class _ExplodingSpec:
  def to_json(self):
    raise RuntimeError("disk on fire")


def test_background_saver_snapshots_before_donation_and_reraises_a_worker_error(tmp_path):
  # The saver copies the state on its devices, so a donating step right after cannot change what is written.
  state = train_step.TrainState(step=jax.numpy.int32(3), params={"w": jax.numpy.arange(4.0)}, ema_params={},
                                opt_state=())
  saver = checkpoint.BackgroundSaver(None)
  snapshot = checkpoint._copy_on_devices(state)
  state = jax.jit(lambda s: s.replace(params={"w": s.params["w"] + 1.0}), donate_argnums=0)(state)
  np.testing.assert_array_equal(snapshot.params["w"], np.arange(4.0))
  # An error in the worker (here: the spec cannot be written) reaches the training thread at the next wait.
  iterator = type("It", (), {"get_state": lambda self: {"position": 3}})()
  saver.save(state, iterator, {}, _ExplodingSpec(), None)
  with pytest.raises(RuntimeError, match="disk on fire"):
    saver.wait()
  saver.wait()   # reported once


class _Spec:
  def to_json(self):
    return "{}"


class _Config:
  def to_json_best_effort(self):
    return "{}"


@pytest.mark.parametrize("keep", [1, 2])
def test_a_failed_save_deletes_no_older_checkpoint(tmp_path, monkeypatch, keep):
  # Starting a save schedules the oldest checkpoint beyond `keep` for deletion; when the save's asynchronous write
  # fails (here: ENOSPC in the meta item's write, as on a full disk), the error must reach the caller and the
  # scheduled checkpoint must stay on disk and restorable. orbax 0.12.8 does this (its finalize re-raises the
  # write's error before it deletes); this pins it across orbax upgrades.
  from orbax.checkpoint._src.handlers import json_checkpoint_handler
  manager = checkpoint.make_manager(tmp_path, keep=keep)
  arrays = {"w": jax.numpy.arange(4.0)}
  state = train_step.TrainState(step=jax.numpy.int32(0), params=arrays, ema_params=arrays, opt_state={"m": arrays})
  iterator = type("It", (), {"get_state": lambda self: {"position": 3}})()
  for step in range(1, keep + 1):
    checkpoint.save(manager, state.replace(step=jax.numpy.int32(step)), iterator, {}, _Spec(), _Config())
    manager.wait_until_finished()

  async def full_disk(self, x, directory):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
  checkpoint.save(manager, state.replace(step=jax.numpy.int32(keep + 1)), iterator, {}, _Spec(), _Config())
  with pytest.raises(OSError, match="No space left on device"):
    manager.wait_until_finished()
  manager.close()
  reader = checkpoint._reader(tmp_path)
  assert reader.all_steps() == list(range(1, keep + 1))
  restored = reader.restore(1, args=ocp.args.Composite(ema_params=ocp.args.StandardRestore()))
  np.testing.assert_array_equal(restored["ema_params"]["w"], np.arange(4.0))


def test_atomic_writes_from_many_threads_leave_one_whole_file(tmp_path):
  import concurrent.futures
  from dpjax import files
  path = tmp_path / "eval.json"
  texts = [json.dumps({"writer": i, "pad": "x" * 10_000}) for i in range(16)]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda text: files.write_text_atomic(path, text), texts))
  assert path.read_text() in texts
  assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]   # no temporary file left behind
  assert path.stat().st_mode & 0o777 == 0o666 & ~files._umask()


def _save_scored(manager, step: int, score: float | None) -> None:
  metrics = None if score is None else {checkpoint.SCORE_METRIC: score}
  manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave({"w": np.full(3, float(step))})),
               metrics=metrics, force=True)
  manager.wait_until_finished()


def test_manager_keeps_the_newest_and_the_best_scored_across_a_resume(tmp_path):
  manager = checkpoint.make_manager(tmp_path, keep=1, keep_best=2)
  for step, score in {1: 0.5, 2: 0.9, 3: 0.3, 4: 0.8, 5: None, 6: 0.2}.items():
    _save_scored(manager, step, score)
  assert manager.all_steps() == [2, 4, 6]          # the newest, and the two best (a score-less one goes)
  manager.close()
  manager = checkpoint.make_manager(tmp_path, keep=1, keep_best=2)   # a resume reads the scores back
  _save_scored(manager, 7, 0.85)
  _save_scored(manager, 8, None)
  assert manager.all_steps() == [2, 7, 8]
  manager.close()
  assert checkpoint.best_step(tmp_path) == 2
  plain = checkpoint.make_manager(tmp_path / "plain", keep=2)         # keep_best=0: the newest only, as before
  for step in (1, 2, 3):
    _save_scored(plain, step, 0.1 * step)
  assert plain.all_steps() == [2, 3]
  plain.close()
  assert checkpoint.best_step(tmp_path / "plain") == 3
  unscored = checkpoint.make_manager(tmp_path / "unscored", keep=2)
  _save_scored(unscored, 1, None)
  unscored.close()
  with pytest.raises(checkpoint.CheckpointError, match="carries an in-training rollout score"):
    checkpoint.best_step(tmp_path / "unscored")


def test_step_flag_takes_a_number_latest_or_best_and_names_what_else_it_takes(tmp_path):
  assert checkpoint.step_from_flag(None, str(tmp_path), "dpjax.rollout") is None
  assert checkpoint.step_from_flag("latest", str(tmp_path), "dpjax.rollout") is None
  assert checkpoint.step_from_flag("1200", str(tmp_path), "dpjax.rollout") == 1200
  with pytest.raises(ValueError, match=r"--step=last: give a checkpoint step \(a number\), latest or best"):
    checkpoint.step_from_flag("last", str(tmp_path), "dpjax.rollout")
  with pytest.raises(checkpoint.CheckpointError, match="No checkpoints in"):
    checkpoint.step_from_flag("best", str(tmp_path), "dpjax.rollout")
