"""Prints the observation runs (run.sh) against the paper's keypoints, 200 episodes each, paired on the seeds.

    python experiments/pusht_observations/table.py
"""
import json
import pathlib

import numpy as np

from dpjax import compare, metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
# The quickstart run: its 200-episode evaluation and its metrics (experiments/quickstart_cpu/).
REFERENCE = ("keypoints (paper)", "low_dim=keypoint+state[:2]", ROOT / "experiments/frontier/episodes200/ddpm100",
             ROOT / "experiments/quickstart_cpu")
RUNS = ("pose", "two_points", "contacts", "one_point")


def main():
  rows = [REFERENCE] + [(name, json.loads((HERE / name / "eval.json").read_text())["obs_keys"], HERE / name,
                         HERE / name) for name in RUNS]
  reference = compare.load_eval(REFERENCE[2])
  print("| observation | obs_keys | 200 episodes | paired vs keypoints | episodes < 0.3 | episodes >= 0.95 | "
        "EMA val. loss at 4,000 | val. action MSE at 4,000 |")
  print("|---|---|---|---|---|---|---|---|")
  for label, keys, eval_dir, run_dir in rows:
    record = compare.load_eval(eval_dir)
    scores = np.asarray(record["scores"])
    paired = "-" if eval_dir == REFERENCE[2] else compare.mean_with_error(
        compare.paired_differences(record, reference), sign="+")
    logged = metrics.read_metrics(run_dir)[4000]
    mse = f"{logged['val/action_mse_ema']:.4f}" if "val/action_mse_ema" in logged else "-"
    print(f"| {label} | `{keys}` | {compare.mean_with_error(scores)} | {paired} | {int((scores < 0.3).sum())} | "
          f"{(scores >= 0.95).mean():.0%} | {logged['val/loss_ema']:.4f} | {mse} |")


if __name__ == "__main__":
  main()
