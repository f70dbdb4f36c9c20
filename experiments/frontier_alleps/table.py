"""Prints this folder's tables: policies trained on all 202 non-validation episodes, a teacher and its reflow student.

    python experiments/frontier_alleps/table.py

For each training seed (this folder: seed 42; seed43/: seed 43) three tables: the test-seed score along the
4,000-step schedule (the DDPM teacher's DDPM-100 and the flow run's Euler-10, EMA), score against network calls on
the 50 test seeds (seeds 100000-100049), and the 200-episode scores (seeds 100000-100199) with "paired": the
policy's score minus the teacher's DDPM-100 score, episode by episode on the same environment seeds, with the
standard error of that paired difference.
"""
import json
import pathlib

import numpy as np

from dpjax import compare

HERE = pathlib.Path(__file__).resolve().parent
SEED_FOLDERS = {42: HERE, 43: HERE / "seed43"}
CHECKPOINT_STEPS = (2000, 2500, 3000, 3500, 4000)
LAST_3 = CHECKPOINT_STEPS[-3:]
# (row label, policy folder): runs whose eval_step_<step>/eval.json files give the score along the schedule.
CURVES = [("teacher, DDPM-100, EMA", "teacher"), ("flow matching, Euler-10, EMA", "flow")]
# (row label, policy folder, setting folder): the 50-test-seed cells, in the order of their network calls.
FRONTIER = [
    ("teacher DDPM-100", "teacher", "ddpm100"),
    ("teacher DDPM-10, trailing", "teacher_trailing", "ddpm10"),
    ("teacher DDIM-10, trailing", "teacher_trailing", "ddim10"),
    ("teacher DDPM-4, trailing", "teacher_trailing", "ddpm4"),
    ("teacher DDIM-4, trailing", "teacher_trailing", "ddim4"),
    ("teacher DDPM-2, trailing", "teacher_trailing", "ddpm2"),
    ("teacher DDIM-2, trailing", "teacher_trailing", "ddim2"),
    ("teacher DDIM-1, trailing", "teacher_trailing", "ddim1"),
    ("student Euler-10", "student_trailing", "euler10"),
    ("student ancestral-4", "student_trailing", "ancestral4"),
    ("student Euler-4", "student_trailing", "euler4"),
    ("student ancestral-2", "student_trailing", "ancestral2"),
    ("student Euler-2", "student_trailing", "euler2"),
    ("student Euler-1", "student_trailing", "euler1"),
    ("student trained at t = 1 only, Euler-2", "student_trailing_frac1", "euler2"),
    ("student trained at t = 1 only, Euler-1", "student_trailing_frac1", "euler1"),
    ("flow matching Euler-100", "flow", "euler100"),
    ("flow matching Euler-10", "flow", "euler10"),
    ("flow matching ancestral-10", "flow", "ancestral10"),
    ("flow matching Euler-4", "flow", "euler4"),
    ("flow matching ancestral-2", "flow", "ancestral2"),
    ("flow matching Euler-2", "flow", "euler2"),
    ("flow matching Euler-1", "flow", "euler1"),
]
# (row label, folder under episodes200/, the matching 50-test-seed cell)
EPISODES200 = [
    ("teacher DDPM-100", "teacher_ddpm100", ("teacher", "ddpm100")),
    ("teacher DDIM-10, trailing", "teacher_trailing_ddim10", ("teacher_trailing", "ddim10")),
    ("student ancestral-2", "student_trailing_ancestral2", ("student_trailing", "ancestral2")),
    ("student Euler-2", "student_trailing_euler2", ("student_trailing", "euler2")),
    ("student Euler-1", "student_trailing_euler1", ("student_trailing", "euler1")),
    ("student trained at t = 1 only, Euler-2", "student_trailing_frac1_euler2", ("student_trailing_frac1", "euler2")),
    ("student trained at t = 1 only, Euler-1", "student_trailing_frac1_euler1", ("student_trailing_frac1", "euler1")),
    ("flow matching Euler-10", "flow_euler10", ("flow", "euler10")),
    ("flow matching Euler-1", "flow_euler1", ("flow", "euler1")),
]
REFERENCE_200 = "teacher_ddpm100"


def _load(path: pathlib.Path):
  return json.loads(path.read_text()) if path.exists() else None


def _score(record) -> str:
  return "-" if record is None else f"{record['mean_score']:.3f}"


def print_seed(seed: int, root: pathlib.Path) -> None:
  print(f"## training seed {seed}\n")
  print("| run, test seeds at step | " + " | ".join(f"{s:,}" for s in CHECKPOINT_STEPS) + " | best / mean of last 3 |")
  print("|---|" + "---|" * (len(CHECKPOINT_STEPS) + 1))
  for label, policy in CURVES:
    tests = {s: _load(root / policy / f"eval_step_{s}" / "eval.json") for s in CHECKPOINT_STEPS}
    if not any(tests.values()):
      continue
    last = [tests[s]["mean_score"] for s in LAST_3 if tests[s] is not None]
    summary = f"{max(last):.3f} / {np.mean(last):.3f}" if len(last) == len(LAST_3) else "-"
    print(f"| {label} | " + " | ".join(_score(tests[s]) for s in CHECKPOINT_STEPS) + f" | {summary} |")
  print()

  print("| policy (last checkpoint) | network calls | 50 test seeds | success rate |")
  print("|---|---|---|---|")
  for label, policy, setting in FRONTIER:
    record = _load(root / policy / setting / "eval.json")
    if record is not None:
      print(f"| {label} | {record['network_calls_per_chunk']} | {record['mean_score']:.3f} | "
            f"{record['success_rate']:.2f} |")
  print()

  reference = _load(root / "episodes200" / REFERENCE_200 / "eval.json")
  print("| policy (last checkpoint) | 200 episodes | paired: minus teacher DDPM-100 | 50 test seeds |")
  print("|---|---|---|---|")
  for label, folder, (policy, setting) in EPISODES200:
    record = _load(root / "episodes200" / folder / "eval.json")
    if record is None:
      continue
    scores = np.asarray(record["scores"])
    paired = "-"
    if reference is not None and folder != REFERENCE_200:
      paired = compare.mean_with_error(compare.paired_differences(record, reference), sign="+")
    print(f"| {label} | {compare.mean_with_error(scores)} | {paired} | "
          f"{_score(_load(root / policy / setting / 'eval.json'))} |")
  print()


def main():
  for seed, root in SEED_FOLDERS.items():
    if (root / "teacher").exists():
      print_seed(seed, root)


if __name__ == "__main__":
  main()
