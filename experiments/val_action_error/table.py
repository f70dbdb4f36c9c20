"""Prints results.json (measure.py) as a table per run, with each run's rank correlations of the score against the
sampled chunks' validation error and against the validation loss.

    python experiments/val_action_error/table.py
"""
import json
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def spearman(a, b) -> float:
  rank_a, rank_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(rank_a, rank_b)[0, 1])


def main():
  rows = json.loads((HERE / "results.json").read_text())
  print("| run | step | score (50 episodes) | val action MSE, EMA (normalised) | val loss, EMA |")
  print("|---|---|---|---|---|")
  for row in rows:
    print(f"| {row['run'].removeprefix('runs/')} | {row['step']:,} | {row['score']:.3f} | "
          f"{row['val_action_mse_ema']:.4f} | {row['val_loss_ema']:.4f} |")
  print("\n| run | checkpoints | Spearman(score, -action MSE) | Spearman(score, -val loss) | "
        "best score's step / lowest action MSE's / lowest val loss's |")
  print("|---|---|---|---|---|")
  for run in dict.fromkeys(r["run"] for r in rows):
    own = [r for r in rows if r["run"] == run]
    score = [r["score"] for r in own]
    mse = [-r["val_action_mse_ema"] for r in own]
    loss = [-r["val_loss_ema"] for r in own]
    steps = [r["step"] for r in own]
    print(f"| {run.removeprefix('runs/')} | {len(own)} | {spearman(score, mse):+.2f} | {spearman(score, loss):+.2f} | "
          f"{steps[int(np.argmax(score))]:,} / {steps[int(np.argmax(mse))]:,} / {steps[int(np.argmax(loss))]:,} |")


if __name__ == "__main__":
  main()
