"""Evaluation protocol: a tiny untrained policy in the real simulator writes the JSON and a video."""
import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from dpjax import checkpoint, policy as policy_lib, rollout, visited_obs
from dpjax.data import normalizer as normalizer_lib
from tests import smoke

REPO = pathlib.Path(__file__).resolve().parents[1]


def _tiny_policy(variant="smoke"):
  config = smoke.smoke_config("unused", variant)
  image = "image" in variant
  obs_shapes = {"image": (96, 96, 3), "agent_pos": (2,)} if image else {"low_dim": (20,)}
  spec = policy_lib.spec_from_config(config, obs_shapes, 2)
  rng = np.random.default_rng(0)
  obs = {k: rng.uniform(0, 512, (64,) + s) for k, s in obs_shapes.items()}
  normalizer = normalizer_lib.fit_normalizer(obs, rng.uniform(0, 512, (64, 2)))
  return policy_lib.Policy(policy_lib.init_params(spec, jax.random.key(0)), normalizer, spec)


@pytest.mark.parametrize("variant", ["smoke", "image,smoke"])
def test_evaluate_writes_json_and_video(tmp_path, variant):
  result = rollout.evaluate(_tiny_policy(variant), num_episodes=3, seed_start=100000, max_steps=10,
                            out_dir=tmp_path, num_videos=1, video_size=64, show_progress=False)
  saved = json.loads((tmp_path / "eval.json").read_text())
  assert saved["seeds"] == [100000, 100001, 100002]
  assert len(saved["scores"]) == 3 and all(0.0 <= s <= 1.0 for s in saved["scores"])
  assert saved["mean_score"] == pytest.approx(np.mean(saved["scores"]))
  assert 0.0 <= saved["success_rate"] <= 1.0
  video = pathlib.Path(saved["videos"][0])
  assert video.exists() and video.stat().st_size > 0
  assert result["mean_score"] == saved["mean_score"]


def test_record_obs_writes_every_replans_history_of_every_running_episode(tmp_path):
  policy = _tiny_policy()
  spec = policy.spec
  result = rollout.evaluate(policy, num_episodes=3, seed_start=7, max_steps=2 * spec.n_action_steps + 1,
                            out_dir=tmp_path, num_videos=0, show_progress=False, record_obs=True)
  with np.load(tmp_path / "visited_obs.npz") as f:
    seeds, steps, histories = f["seed"], f["control_step"], f["obs/low_dim"]
  # An untrained policy finishes no episode in 17 steps: three plans (steps 0, 8, 16) of three episodes each.
  np.testing.assert_array_equal(seeds, [7, 8, 9] * 3)
  np.testing.assert_array_equal(steps, np.repeat([0, spec.n_action_steps, 2 * spec.n_action_steps], 3))
  assert histories.shape == (9, spec.n_obs_steps, 20) and result["num_visited_obs"] == 9
  np.testing.assert_array_equal(histories[:3, 0], histories[:3, -1])       # the first frame repeated at the start
  assert not np.array_equal(histories[3:6, -1], histories[:3, -1])          # the pusher moved between plans
  loaded = visited_obs.load(result["visited_obs"], spec.obs_shapes, spec.n_obs_steps)
  np.testing.assert_array_equal(loaded["low_dim"], histories)
  with pytest.raises(ValueError, match="record_obs writes out_dir/visited_obs.npz; give out_dir"):
    rollout.evaluate(policy, num_episodes=1, max_steps=2, show_progress=False, record_obs=True)


def test_fewer_action_steps_replan_more_often(tmp_path):
  policy = policy_lib.with_n_action_steps(_tiny_policy(), 3)
  result = rollout.evaluate(policy, num_episodes=2, seed_start=7, max_steps=7, out_dir=tmp_path, num_videos=0,
                            show_progress=False, record_obs=True)
  with np.load(tmp_path / "visited_obs.npz") as f:
    np.testing.assert_array_equal(f["control_step"], np.repeat([0, 3, 6], 2))   # a plan every 3 steps, not 8
  assert result["n_action_steps"] == 3
  horizon, n_obs_steps = policy.spec.horizon, policy.spec.n_obs_steps
  for bad in (0, horizon - n_obs_steps + 2):
    with pytest.raises(ValueError, match=rf"n_action_steps={bad} must be in \[1, horizon - n_obs_steps \+ 1"):
      policy_lib.with_n_action_steps(policy, bad)


def test_latency_plans_earlier_and_is_recorded(tmp_path):
  result = rollout.evaluate(_tiny_policy(), num_episodes=2, seed_start=7, max_steps=20, out_dir=tmp_path,
                            num_videos=0, show_progress=False, record_obs=True, latency_steps=3)
  with np.load(tmp_path / "visited_obs.npz") as f:   # plans at 0, then 3 steps before each chunk runs out
    np.testing.assert_array_equal(f["control_step"], np.repeat([0, 5, 13], 2))
  assert result["latency_steps"] == 3
  with pytest.raises(ValueError, match="latency_steps=8"):
    rollout.evaluate(_tiny_policy(), num_episodes=1, max_steps=2, show_progress=False, latency_steps=8)


def test_visited_obs_that_do_not_fit_the_policy_are_clear_errors(tmp_path):
  obs_shapes, path = (("low_dim", (20,)),), tmp_path / "visited_obs.npz"
  with pytest.raises(ValueError, match="do not exist; record them with python -m dpjax.rollout --record_obs"):
    visited_obs.load(str(path), obs_shapes, 2)
  visited_obs.save(path, {"low_dim": np.zeros((4, 3, 20), np.float32)}, np.arange(4), np.zeros(4))
  with pytest.raises(ValueError, match=r"have histories \{'low_dim': \(3, 20\)\}; this policy takes"):
    visited_obs.load(str(path), obs_shapes, 2)
  visited_obs.save(path, {"low_dim": np.zeros((0, 2, 20), np.float32)}, np.arange(0), np.zeros(0))
  with pytest.raises(ValueError, match="hold no histories"):
    visited_obs.load(f"{path},", obs_shapes, 2)
  with pytest.raises(ValueError, match="No visited-observation files given"):
    visited_obs.load(" , ", obs_shapes, 2)


def test_an_unusable_out_or_video_size_is_refused_before_any_episode(tmp_path, monkeypatch):
  ran = []
  monkeypatch.setattr(rollout.control.RecedingHorizonController, "act", lambda *args: ran.append(1))
  with pytest.raises(ValueError, match=r"--video_size=0: give the videos' side in pixels"):
    rollout.evaluate(_tiny_policy(), num_episodes=1, max_steps=2, out_dir=tmp_path / "eval", video_size=0)
  (tmp_path / "afile").write_text("")
  with pytest.raises(OSError):
    rollout.evaluate(_tiny_policy(), num_episodes=1, max_steps=2, out_dir=tmp_path / "afile" / "eval")
  assert not ran


def test_cli_runs_on_a_trained_checkpoint_and_rejects_a_missing_one(trained_run, tmp_path):
  smoke.copy_run(trained_run, tmp_path)
  assert checkpoint.load_policy(tmp_path / "run").spec.horizon == 16
  cmd = [sys.executable, "-m", "dpjax.rollout", f"--checkpoint={tmp_path / 'run'}", "--num_episodes=2",
         "--max_steps=8", "--num_videos=1", "--video_size=64", "--sampler=ddim", "--num_inference_steps=3",
         "--compute_dtype=bfloat16", "--timestep_spacing=trailing", "--fused_sampling", "--record_obs",
         "--latency_steps=1"]
  done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  saved = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())
  assert saved["num_episodes"] == 2 and saved["sampler"] == "ddim" and saved["num_inference_steps"] == 3
  assert saved["compute_dtype"] == "bfloat16" and saved["timestep_spacing"] == "trailing" and saved["fused_sampling"]
  assert saved["num_visited_obs"] >= 2 and pathlib.Path(saved["visited_obs"]).is_file()
  assert saved["latency_steps"] == 1
  missing = subprocess.run([sys.executable, "-m", "dpjax.rollout", f"--checkpoint={tmp_path / 'nothing'}"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
  assert missing.returncode != 0 and "No checkpoints in" in missing.stderr
  assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr   # one line, no traceback


def test_score_summary_gives_the_best_checkpoint_and_the_means_of_the_last_ones():
  scores = {step: score for step, score in zip(range(1000, 13000, 1000), np.linspace(0.5, 0.94, 12))}
  scores[3000] = 0.97
  summary = rollout.score_summary(scores)
  assert summary["best_step"] == 3000 and summary["best_mean_score"] == 0.97
  assert summary["mean_of_last_3"] == pytest.approx(np.mean([scores[s] for s in (10000, 11000, 12000)]))
  assert summary["mean_of_last_10"] == pytest.approx(np.mean([scores[s] for s in range(3000, 13000, 1000)]))
  assert list(summary["mean_scores"]) == [str(s) for s in range(1000, 13000, 1000)]
  few = rollout.score_summary({4: 0.5, 2: 0.5})
  assert few["best_step"] == 4 and few["mean_of_last_3"] is None and few["mean_of_last_10"] is None


def test_several_steps_are_all_or_a_list_of_kept_checkpoints(trained_run):
  assert not checkpoint.names_several_steps(None) and not checkpoint.names_several_steps("best")
  assert checkpoint.names_several_steps("all") and checkpoint.names_several_steps("4,2")
  assert checkpoint.steps_from_flag("all", trained_run) == [2, 4]
  assert checkpoint.steps_from_flag("4, 2", trained_run) == [2, 4]
  with pytest.raises(checkpoint.CheckpointError, match=r"No checkpoint for step 6 in .*; available: \[2, 4\]"):
    checkpoint.steps_from_flag("2,6", trained_run)
  with pytest.raises(ValueError, match="--step=2,x: give all or checkpoint steps"):
    checkpoint.steps_from_flag("2,x", trained_run)


def test_cli_scores_every_checkpoint_and_a_rerun_resumes(trained_run, tmp_path, capsys):
  run_dir = smoke.copy_run(trained_run, tmp_path)
  command = [sys.executable, "-m", "dpjax.rollout", f"--checkpoint={run_dir}", "--step=all", "--num_episodes=2",
             "--max_steps=8", "--num_videos=0"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  out = run_dir / "eval" / "checkpoints"
  summary = json.loads((out / "summary.json").read_text())
  evals = {step: json.loads((out / str(step) / "eval.json").read_text()) for step in (2, 4)}
  assert summary["mean_scores"] == {str(step): evals[step]["mean_score"] for step in (2, 4)}
  assert summary["mean_of_last_3"] is None and summary["skipped"] == {}
  assert summary["settings"]["seeds"] == [100000, 100001] and summary["settings"]["ema"]
  assert all(evals[step]["checkpoint_step"] == step and evals[step]["ema"] for step in (2, 4))
  assert "| 4 |" in done.stdout and "mean of the last 3: - (fewer than 3 evaluated)" in done.stdout
  # The same settings again, in this process: nothing is run; another policy seed runs again, past a damaged step.
  written = {step: (out / str(step) / "eval.json").stat().st_mtime_ns for step in (2, 4)}
  args = dict(num_episodes=2, max_steps=8, num_videos=0, show_progress=False)
  again = rollout.evaluate_checkpoints(run_dir, [2, 4], out, **args)
  assert again["mean_scores"] == summary["mean_scores"]
  assert {step: (out / str(step) / "eval.json").stat().st_mtime_ns for step in (2, 4)} == written
  assert capsys.readouterr().out.count("was evaluated under these settings") == 2
  smoke.delete_a_data_file(run_dir, 2, "ema_params")
  other = rollout.evaluate_checkpoints(run_dir, [2, 4], out, policy_seed=1, **args)
  assert list(other["skipped"]) == ["2"] and list(other["mean_scores"]) == ["4"]
  assert other["settings"]["policy_seed"] == 1
  assert json.loads((out / "4" / "eval.json").read_text())["policy_seed"] == 1
  assert "policy_seed_per_checkpoint" not in other["settings"]   # summaries from before the rule still compare
  # A seed per checkpoint: step 4 samples with 1 + 4, recorded in its eval.json; the summary holds the base and rule.
  own = rollout.evaluate_checkpoints(run_dir, [4], out, policy_seed=1, policy_seed_per_checkpoint=True, **args)
  assert json.loads((out / "4" / "eval.json").read_text())["policy_seed"] == 5
  assert own["settings"]["policy_seed"] == 1 and own["settings"]["policy_seed_per_checkpoint"]


def test_an_earlier_evaluation_of_other_weights_is_not_reused(trained_run, tmp_path, capsys):
  # The same step of another save (a run trained again from scratch in the folder, or another run scored into the
  # same --out) is run again: eval.json records which save it scored (orbax's commit time).
  run_dir = smoke.copy_run(trained_run, tmp_path)
  out, args = tmp_path / "scores", dict(num_episodes=1, max_steps=4, num_videos=0, show_progress=False)
  rollout.evaluate_checkpoints(run_dir, [4], out, **args)
  recorded = json.loads((out / "4" / "eval.json").read_text())["checkpoint_id"]
  assert recorded == checkpoint.checkpoint_identity(run_dir, 4) and recorded.isdigit()
  metadata = run_dir / "checkpoints" / "4" / "_CHECKPOINT_METADATA"
  fields = json.loads(metadata.read_text())
  fields["commit_timestamp_nsecs"] += 1   # another save of step 4
  metadata.write_text(json.dumps(fields))
  capsys.readouterr()
  rollout.evaluate_checkpoints(run_dir, [4], out, **args)
  assert "was evaluated under these settings" not in capsys.readouterr().out
  assert json.loads((out / "4" / "eval.json").read_text())["checkpoint_id"] == str(fields["commit_timestamp_nsecs"])


def test_checkpoints_that_would_sample_differently_are_not_summarised_together(trained_run, tmp_path):
  # A run resumed with another sampler saves it in its later checkpoints; one summary must be one protocol.
  calls = []

  def resumed_with_ddim(pol):   # step 2 as trained, step 4 as if the run had been resumed with DDIM
    calls.append(pol)
    return pol if len(calls) == 1 else pol.replace(spec=dataclasses.replace(pol.spec, sampler="ddim"))

  with pytest.raises(ValueError, match=r"checkpoint 4 samples with sampler='ddim' \(checkpoint 2: 'ddpm'\); give "
                     r"the setting on the command line \(e.g. --sampler, --num_inference_steps\)"):
    rollout.evaluate_checkpoints(trained_run, [2, 4], tmp_path / "scores", adapt=resumed_with_ddim, num_episodes=1,
                                 max_steps=4, num_videos=0, show_progress=False)


def test_a_seed_per_checkpoint_is_the_base_plus_the_step():
  assert rollout.checkpoint_policy_seed(7, 4000, per_checkpoint=False) == 7
  assert rollout.checkpoint_policy_seed(7, 4000, per_checkpoint=True) == 4007
