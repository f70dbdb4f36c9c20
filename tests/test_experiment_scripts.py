"""The shell scripts a GPU session runs (experiments/*.sh): each parses, and bad settings stop them with a one-line
error before anything runs. A device call is minutes of a 15-minute budget; a script that breaks there wastes it."""
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "experiments").glob("*.sh")) + sorted((ROOT / ".ci").glob("run"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_parses(script):
  result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script, env, message", [
    ("gpu_recipes.sh", {"RECIPES": "a 450"}, "RECIPES entry 'a 450'"),
    ("gpu_recipes.sh", {"RECIPES": "a 1000; b x"}, "RECIPES entry 'b x'"),
    ("gpu_recipes.sh", {"RECIPES": "a.b 500"}, "RECIPES entry 'a.b 500'"),
    ("gpu_recipes.sh", {"RECIPES": "a 1000;; b"}, "RECIPES entry 'b '"),   # empty entries are skipped
    # 20 checkpoints per run by default, each a multiple of the 50-step log interval
    ("gpu_recipes.sh", {"RECIPES": "a 1500"}, "RECIPES entry 'a 1500' with CHECKPOINTS=20: give a step count that is "
                                              "a multiple of 1000"),
    ("gpu_recipes.sh", {"RECIPES": "a 1000", "CHECKPOINTS": "0"}, "CHECKPOINTS=0: give a positive number"),
    ("gpu_recipes.sh", {"RECIPES": " ; "}, "names no recipe"),
    ("gpu_check.sh", {"NUM_STEPS": "4001"}, "NUM_STEPS=4001: give a positive multiple of 500"),
    ("gpu_check.sh", {"NUM_STEPS": "0"}, "NUM_STEPS=0"),
])
def test_bad_settings_stop_before_anything_runs(tmp_path, script, env, message):
  out = tmp_path / "out"
  result = subprocess.run(["bash", str(ROOT / "experiments" / script)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(out), "WORK_DIR": str(tmp_path / "work"), **env})
  assert result.returncode == 1
  assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert not out.exists()


def test_the_run_summary_reads_a_metrics_file_a_kill_cut_short(tmp_path, monkeypatch):
  # One run killed mid-line must not lose the device call's whole JSON (the summary reads every run's metrics).
  monkeypatch.syspath_prepend(str(ROOT / "experiments" / "bench"))
  import run_summary  # pylint: disable=import-outside-toplevel
  (tmp_path / "metrics.jsonl").write_text(
      '{"step": 1, "train/loss": 1.0, "train/steps_per_second": 2.0}\n'
      '{"step": 2, "train/loss": 0.5, "train/steps_per_second": 4.0}\n'
      '{"step": 3, "train/loss": 0.2, "train/steps_per_second": 3.0}\n{"step": 4, "train/lo')
  summary = run_summary.summarize(tmp_path)
  assert summary["final_train_loss"] == 0.2 and summary["train_loss"] == {"1": 1.0, "2": 0.5, "3": 0.2}
  assert summary["train_steps_per_s"] == {"first_window": 2.0, "median": 3.0}
