"""How many Push-T control steps (10 Hz) one chunk takes on this machine: `dpjax.sample` at batch 1, median of 20.

    python experiments/latency/chunk_time.py --run=runs/quickstart      # -> experiments/latency/chunk_time.json
"""
import argparse
import json
import math
import os
import pathlib
import time

import jax
import numpy as np

import dpjax

HERE = pathlib.Path(__file__).resolve().parent
CONTROL_PERIOD_S = 0.1   # Push-T's 10 Hz


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default="runs/quickstart")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  policy = dpjax.load_policy(args.run)
  obs = {k: np.full((1, policy.spec.n_obs_steps) + s, 200.0, np.float32) for k, s in policy.spec.obs_shapes}
  rows = {}
  for method, steps, spacing in (("ddpm", 100, "leading"), ("ddpm", 10, "trailing"), ("ddim", 10, "trailing")):
    sample = lambda seed: np.asarray(dpjax.sample(policy, obs, jax.random.key(seed), method=method,  # noqa: B023
                                                  num_inference_steps=steps, timestep_spacing=spacing))
    sample(0)   # compile
    times = []
    for seed in range(1, args.repeats + 1):
      start = time.perf_counter()
      sample(seed)
      times.append(time.perf_counter() - start)
    median = float(np.median(times))
    rows[f"{method}{steps}_{spacing}"] = {"median_ms": 1000 * median,
                                          "control_steps": math.ceil(median / CONTROL_PERIOD_S)}
  result = {"machine": f"{os.cpu_count()} cores, jax {jax.__version__}", "run": args.run, "batch_size": 1,
            "control_period_s": CONTROL_PERIOD_S, "samplers": rows}
  (HERE / "chunk_time.json").write_text(json.dumps(result, indent=2) + "\n")
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
