"""What a training run measured, read back from its directory: the GPU scripts' shared summary.

`summarize(run_dir)` reads `metrics.jsonl`, `config.json`, `wall_time.json` and every `eval_step_<N>/eval.json`
(written by `dpjax.rollout --out=RUN_DIR/eval_step_<N>`) and returns the numbers issue 12 asks for: steps/s (first
window, which holds the compile, and median), where the wall time went, the blocking time of every checkpoint save,
the loss curves, every evaluation (its per-episode scores and policy seed included) and
`dpjax.rollout.score_summary`'s best and means of the last 3 / 10, with the best of ten evenly spaced checkpoints
beside it (session 18 scored ten). `experiments/gpu_check.sh`, `gpu_recipes.sh` and `gpu_distill.sh` (its
student's run) write it into their JSON files.
"""
import glob
import json
import pathlib
import re
import statistics

from dpjax import metrics, rollout, wall_time


def read_metrics(run_dir) -> list[dict]:
  """The run's metrics.jsonl as one record per step, in step order ([] when it has none): `dpjax.metrics`'
  reading, which skips a line a kill cut short (one such line used to lose the whole device JSON)."""
  return [{"step": step, **values} for step, values in metrics.read_metrics(run_dir).items()]


def read_evals(run_dir) -> dict[int, dict]:
  """{checkpoint step: eval.json} for every RUN_DIR/eval_step_<N>/eval.json."""
  found = glob.glob(str(pathlib.Path(run_dir) / "eval_step_*" / "eval.json"))
  return {int(re.search(r"eval_step_(\d+)", p).group(1)): json.loads(pathlib.Path(p).read_text()) for p in found}


def summarize(run_dir) -> dict:
  """The run's config, speed, checkpoint stalls, losses and scores (None where it has none)."""
  run_dir = pathlib.Path(run_dir)
  records = read_metrics(run_dir)
  rates = [m["train/steps_per_second"] for m in records if "train/steps_per_second" in m]
  blocking = [m["train/checkpoint_blocking_s"] for m in records if "train/checkpoint_blocking_s" in m]
  evals = read_evals(run_dir)
  selection = rollout.score_summary({s: e["mean_score"] for s, e in evals.items()}) if evals else {}
  config_path = run_dir / "config.json"
  return {
      "config": json.loads(config_path.read_text()) if config_path.exists() else None,
      "train_steps_per_s": {"first_window": rates[0] if rates else None,
                            "median": statistics.median(rates) if rates else None},
      "checkpoint_blocking_s": {"first": blocking[0] if blocking else None, "max": max(blocking, default=None),
                                "all": blocking},
      "wall_time": wall_time.read(run_dir),
      "final_train_loss": next((m["train/loss"] for m in reversed(records) if "train/loss" in m), None),
      "final_val_loss_ema": next((m["val/loss_ema"] for m in reversed(records) if "val/loss_ema" in m), None),
      "train_loss": {str(m["step"]): m["train/loss"] for m in records if "train/loss" in m},
      "val_loss_ema": {str(m["step"]): m["val/loss_ema"] for m in records if "val/loss_ema" in m},
      "eval": {str(s): {k: evals[s].get(k) for k in ("mean_score", "success_rate", "num_episodes", "wall_seconds",
                                                       "policy_seed", "scores")}
               for s in sorted(evals)},
      **{k: selection.get(k) for k in ("best_mean_score", "best_step", "mean_of_last_3", "mean_of_last_10")},
      "best_of_10_evenly_spaced": best_of_evenly_spaced([evals[s]["mean_score"] for s in sorted(evals)], 10),
  }


def best_of_evenly_spaced(scores: list[float], k: int) -> float | None:
  """The best of k evenly spaced scores ending with the last (every n/k-th of n in step order), as a run that kept
  only k checkpoints would report it; None unless n is a multiple of k."""
  if not scores or len(scores) % k:
    return None
  return max(scores[len(scores) // k - 1::len(scores) // k])


def device_file_name(prefix: str, device_kind: str) -> str:
  """'gpu_check' + 'NVIDIA H100 80GB HBM3' -> 'gpu_check_nvidia_h100_80gb_hbm3.json'."""
  return f"{prefix}_{re.sub(r'[^A-Za-z0-9]+', '_', device_kind).strip('_').lower()}.json"
