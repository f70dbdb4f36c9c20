"""Prints the latency evaluations (run.sh, stale.py) paired against no latency on the same 200 seeds.

    python experiments/latency/table.py
"""
import pathlib

import numpy as np

from dpjax import compare

HERE = pathlib.Path(__file__).resolve().parent


def _latency(path: pathlib.Path) -> int:
  return int(path.parent.name.split("_")[1])


def main():
  reference = compare.load_eval(HERE / "latency_0")
  print("| latency (control steps) | late actions | 200 episodes | paired vs no latency | paired vs skipping them | "
        "episodes < 0.3 | episodes >= 0.95 |")
  print("|---|---|---|---|---|---|---|")
  runs = [(p, "skipped") for p in HERE.glob("latency_*/eval.json")] + [(p, "executed") for p in
                                                                        HERE.glob("stale_*/eval.json")]
  for path, late in sorted(runs, key=lambda run: (_latency(run[0]), run[1] == "executed")):
    record = compare.load_eval(path.parent)
    scores = np.asarray(record["scores"])
    latency = record["latency_steps"]
    paired = "-" if latency == 0 else compare.mean_with_error(compare.paired_differences(record, reference), sign="+")
    skipping = HERE / f"latency_{latency}"
    versus_skip = "-" if late == "skipped" else compare.mean_with_error(
        compare.paired_differences(record, compare.load_eval(skipping)), sign="+")
    print(f"| {latency} | {'-' if latency == 0 else late} | {compare.mean_with_error(scores)} | {paired} | "
          f"{versus_skip} | {int((scores < 0.3).sum())} | {(scores >= 0.95).mean():.0%} |")


if __name__ == "__main__":
  main()
