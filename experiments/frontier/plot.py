"""Score-versus-calls frontier from the eval.json files that experiments/frontier/evaluate.sh writes.

    python experiments/frontier/plot.py experiments/frontier      # writes frontier.md and frontier.png there

Each subfolder of the given folder is one policy (its name is the label); each of its subfolders named
<sampler><steps> one setting (other folders, e.g. flow_checkpoints/, are left out).
"""
import json
import pathlib
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(root: pathlib.Path) -> dict[str, list[dict]]:
  """{policy label: [eval.json records sorted by network calls]}."""
  out = {}
  for policy_dir in sorted(p for p in root.iterdir() if p.is_dir()):
    records = [json.loads(f.read_text()) for f in policy_dir.glob("*/eval.json")
               if re.fullmatch(r"(ddpm|ddim|euler|heun|ancestral)\d+", f.parent.name)]   # evaluate.sh's setting folders
    if records:
      out[policy_dir.name] = sorted(records, key=lambda r: (r["network_calls_per_chunk"], r["sampler"]))
  return out


def table(results: dict[str, list[dict]]) -> str:
  calls = sorted({r["network_calls_per_chunk"] for records in results.values() for r in records})
  lines = ["| policy | " + " | ".join(f"{c} call{'s' * (c > 1)}" for c in calls) + " |",
           "|---|" + "---|" * len(calls)]
  for label, records in results.items():
    cells = []
    for c in calls:
      hits = [r for r in records if r["network_calls_per_chunk"] == c]
      cells.append(" / ".join(f"{r['mean_score']:.3f} ({r['sampler']})" for r in hits) or "-")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


STOCHASTIC = ("ddpm", "ancestral")   # drawn dashed; the deterministic samplers solid


def plot(results: dict[str, list[dict]], out_path: pathlib.Path) -> None:
  """One colour per policy, one line per (policy, sampler): dashed for stochastic samplers, a star for one point."""
  fig, ax = plt.subplots(figsize=(9, 4.5))
  colours = plt.get_cmap("tab10")
  for i, (label, records) in enumerate(results.items()):
    for sampler in dict.fromkeys(r["sampler"] for r in records):
      points = [r for r in records if r["sampler"] == sampler]
      ax.plot([r["network_calls_per_chunk"] for r in points], [r["mean_score"] for r in points],
              color=colours(i % 10), linestyle="--" if sampler in STOCHASTIC else "-",
              marker="o" if len(points) > 1 else "*", markersize=6 if len(points) > 1 else 12,
              label=f"{label} ({sampler})")
  ax.set_xscale("log")
  ax.set_xlabel("network calls per action chunk")
  ax.set_ylabel("Push-T mean score (50 episodes)")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
  fig.tight_layout()
  fig.savefig(out_path, dpi=120)


def main(root: str) -> None:
  root = pathlib.Path(root)
  results = read(root)
  if not results:
    raise SystemExit(f"No */*/eval.json under {root}; run experiments/frontier/evaluate.sh first.")
  (root / "frontier.md").write_text(table(results) + "\n")
  plot(results, root / "frontier.png")
  print(table(results))


if __name__ == "__main__":
  main(*sys.argv[1:])
