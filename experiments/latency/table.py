"""Prints the latency evaluations (run.sh) paired against no latency on the same 200 seeds.

    python experiments/latency/table.py
"""
import pathlib

import numpy as np

from dpjax import compare

HERE = pathlib.Path(__file__).resolve().parent


def main():
  runs = sorted(HERE.glob("latency_*/eval.json"), key=lambda p: int(p.parent.name.split("_")[1]))
  reference = compare.load_eval(HERE / "latency_0")
  print("| latency (control steps) | 200 episodes | paired vs no latency | episodes < 0.3 | episodes >= 0.95 |")
  print("|---|---|---|---|---|")
  for path in runs:
    record = compare.load_eval(path.parent)
    scores = np.asarray(record["scores"])
    paired = "-" if record["latency_steps"] == 0 else compare.mean_with_error(
        compare.paired_differences(record, reference), sign="+")
    print(f"| {record['latency_steps']} | {compare.mean_with_error(scores)} | {paired} | "
          f"{int((scores < 0.3).sum())} | {(scores >= 0.95).mean():.0%} |")


if __name__ == "__main__":
  main()
