"""Prints this folder's table: each CPU-sized run's mean score on 200 episodes and on the 50 test seeds.

    python experiments/small_precision_lr/table.py

Rows are the runs named in RUNS (a folder here, or another experiment's folder for the reference run). "paired" is
the 200-episode score minus that of the float32 run with the same training seed, episode by episode (the same 200
environment seeds), with the standard error of that paired difference. A second table follows the 10,000-step runs'
checkpoints along their schedule on the test seeds, a third and a fourth the twice-wider U-Net's runs (test seeds
along the schedule; 200 episodes, paired against its 4,000-step cosine run).
"""
import json
import pathlib

import numpy as np

from dpjax import compare

HERE = pathlib.Path(__file__).resolve().parent
EXPERIMENTS = HERE.parent
# The 200-episode evaluation of the float32 lr 3e-4 run of each training seed: what "paired" subtracts.
FLOAT32_200 = {42: EXPERIMENTS / "frontier/episodes200/ddpm100/eval.json",
               43: HERE / "seed43/episodes200_step_4000/eval.json"}
LAST_3_OF_4000 = (3000, 3500, 4000)
LAST_3_OF_10000 = (8000, 9000, 10000)
# The 10,000-step runs (label, training seed, folder): rows of the first table and of the second. Two train on all
# 202 non-validation episodes instead of the paper's 90; one is the original PyTorch code (../original_torch_small).
STEPS10K = [("seed 42", 42, HERE / "steps10k"), ("seed 43", 43, HERE / "steps10k_seed43"),
            ("seed 42, all 202 training episodes", 42, HERE / "steps10k_alleps"),
            ("seed 43, all 202 training episodes", 43, HERE / "steps10k_alleps_seed43"),
            ("seed 42, constant learning rate after warm-up", 42, HERE / "steps10k_constant"),
            ("seed 42, the original PyTorch code", 42, EXPERIMENTS / "original_torch_small" / "steps10k")]
# The twice-wider U-Net's runs (label, folder, steps of its last three checkpoints): rows of the first table and of
# the third.
HALF_WIDTH = [("4,000 steps", HERE / "half_width", LAST_3_OF_4000),
              ("4,000 steps, constant learning rate after warm-up", HERE / "half_width_constant", LAST_3_OF_4000),
              ("2,500 steps", HERE / "half_width_2500", (1500, 2000, 2500))]
# (label, training seed, 200-episode eval.json, folder of the 50-episode eval_step_<step>/eval.json files, the steps
# of its last three checkpoints)
RUNS = [
    ("float32, lr 3e-4, seed 42 (quickstart run)", 42, FLOAT32_200[42], EXPERIMENTS / "quickstart_cpu",
     LAST_3_OF_4000),
    ("float32, lr 3e-4, seed 43", 43, FLOAT32_200[43], HERE / "seed43", LAST_3_OF_4000),
    ("bfloat16 compute, lr 3e-4, seed 42", 42, HERE / "bf16/episodes200_step_4000/eval.json", HERE / "bf16",
     LAST_3_OF_4000),
    ("same, sampled in float32", 42, HERE / "bf16/episodes200_step_4000_float32_inference/eval.json", None, ()),
    ("quickstart run sampled in bfloat16", 42,
     HERE / "reference_bf16_inference/episodes200_step_4000/eval.json", None, ()),
    ("bfloat16 compute, lr 3e-4, seed 43", 43, HERE / "bf16_seed43/episodes200_step_4000/eval.json",
     HERE / "bf16_seed43", LAST_3_OF_4000),
    ("float32, lr 1e-4, seed 42", 42, HERE / "lr1e-4/episodes200_step_4000/eval.json", HERE / "lr1e-4",
     LAST_3_OF_4000),
    ("float32, lr 1e-3, seed 42", 42, HERE / "lr1e-3/episodes200_step_4000/eval.json", HERE / "lr1e-3",
     LAST_3_OF_4000),
] + [(f"float32, lr 3e-4, seed 42, U-Net (128, 256, 512): 16.6 M parameters, {label}", 42,
       folder / f"episodes200_step_{last_3[-1]}/eval.json", folder, last_3) for label, folder, last_3 in HALF_WIDTH
] + [(f"float32, lr 3e-4, 10,000 steps, {label}", seed, folder / "episodes200_step_10000/eval.json", folder,
      LAST_3_OF_10000) for label, seed, folder in STEPS10K]
# The 10,000-step runs' checkpoints on the test seeds: the score along the schedule.
CURVE_STEPS = tuple(range(1000, 10001, 1000))
HALF_WIDTH_CURVE_STEPS = tuple(range(1500, 4001, 500))
# The twice-wider U-Net's 200-episode evaluations (label, eval.json), paired against the first (its 4,000-step cosine
# run's last checkpoint).
HALF_WIDTH_200 = [("4,000 steps, at step 4,000", HERE / "half_width/episodes200_step_4000/eval.json"),
                  ("4,000 steps, at step 2,500", HERE / "half_width/episodes200_step_2500/eval.json"),
                  ("4,000 steps, constant learning rate, at step 4,000",
                   HERE / "half_width_constant/episodes200_step_4000/eval.json"),
                  ("2,500 steps, at step 2,500", HERE / "half_width_2500/episodes200_step_2500/eval.json")]


def _load(path: pathlib.Path):
  return json.loads(path.read_text()) if path.exists() else None


def _print_curves(title: str, steps, runs) -> None:
  """A table of test-seed mean scores: one row per (label, folder) in `runs`, one column per checkpoint step."""
  print()
  print(f"| {title}, test seeds at step | " + " | ".join(f"{s:,}" for s in steps) + " |")
  print("|---|" + "---|" * len(steps))
  for label, folder in runs:
    tests = [_load(folder / f"eval_step_{s}" / "eval.json") for s in steps]
    print(f"| {label} | " + " | ".join("-" if t is None else f"{t['mean_score']:.3f}" for t in tests) + " |")


def main():
  print("| run | 200 episodes (last step) | paired: minus the float32 lr 3e-4 4,000-step run of the same seed "
        "| test seeds at the last three checkpoints | best / mean of 3 |")
  print("|---|---|---|---|---|")
  for label, seed, path200, folder, steps in RUNS:
    e200 = _load(path200)
    tests = [_load(folder / f"eval_step_{s}" / "eval.json") for s in steps]
    cells = " / ".join("-" if t is None else f"{t['mean_score']:.3f} ({s:,})" for s, t in zip(steps, tests)) or "-"
    done = [t["mean_score"] for t in tests if t is not None]
    summary = f"{max(done):.3f} / {np.mean(done):.3f}" if steps and len(done) == len(steps) else "-"
    if e200 is None:
      print(f"| {label} | - | - | {cells} | {summary} |")
      continue
    scores = np.asarray(e200["scores"])
    reference = _load(FLOAT32_200[seed])
    paired = "-"
    if reference is not None and path200 != FLOAT32_200[seed]:
      paired = compare.mean_with_error(scores - np.asarray(reference["scores"]), sign="+")
    print(f"| {label} | {compare.mean_with_error(scores)} | {paired} | {cells} | {summary} |")
  _print_curves("10,000-step run", CURVE_STEPS, [(label, folder) for label, _, folder in STEPS10K])
  _print_curves("U-Net (128, 256, 512)", HALF_WIDTH_CURVE_STEPS, [(label, folder) for label, folder, _ in HALF_WIDTH])
  print()
  print("| U-Net (128, 256, 512), 200 episodes | mean score | paired: minus the 4,000-step run at step 4,000 |")
  print("|---|---|---|")
  reference = _load(HALF_WIDTH_200[0][1])
  for label, path in HALF_WIDTH_200:
    e200 = _load(path)
    if e200 is None:
      print(f"| {label} | - | - |")
      continue
    scores = np.asarray(e200["scores"])
    paired = ("-" if reference is None or path == HALF_WIDTH_200[0][1]
              else compare.mean_with_error(scores - np.asarray(reference["scores"]), sign="+"))
    print(f"| {label} | {compare.mean_with_error(scores)} | {paired} |")


if __name__ == "__main__":
  main()
