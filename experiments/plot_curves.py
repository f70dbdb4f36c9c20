"""Plot a run's training curves from RUN_DIR/metrics.jsonl.

    python experiments/plot_curves.py RUN_DIR OUT.png
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dpjax import metrics  # noqa: E402


def plot(run_dir, out_path) -> None:
  records = metrics.read_metrics(run_dir)
  if not records:
    raise SystemExit(f"No metrics in {run_dir}/metrics.jsonl")
  steps = sorted(records)
  series = lambda name: [(s, records[s][name]) for s in steps if name in records[s]]
  fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
  for name in ("train/loss", "val/loss", "val/loss_ema"):
    points = series(name)
    if points:
      ax_loss.plot(*zip(*points), label=name, marker="o" if name.startswith("val") else None, markersize=3)
  ax_loss.set_yscale("log")
  ax_loss.set_xlabel("step")
  ax_loss.set_ylabel("diffusion loss (MSE on noise)")
  ax_loss.legend()
  ax_loss.grid(alpha=0.3)
  ax_lr.plot(*zip(*series("train/learning_rate")), color="tab:gray")
  ax_lr.set_xlabel("step")
  ax_lr.set_ylabel("learning rate")
  ax_lr.grid(alpha=0.3)
  scores = series("rollout/mean_score")
  if scores:
    ax_score = ax_lr.twinx()
    ax_score.plot(*zip(*scores), color="tab:green", marker="s", label="rollout/mean_score")
    ax_score.set_ylabel("mean score")
  fig.suptitle(str(run_dir))
  fig.tight_layout()
  fig.savefig(out_path, dpi=120)


if __name__ == "__main__":
  if len(sys.argv) != 3:
    raise SystemExit(__doc__)
  plot(sys.argv[1], sys.argv[2])
