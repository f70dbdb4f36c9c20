"""Prints this folder's table: reflow students of one 90-episode teacher, with and without observation noise.

    python experiments/distill_obs_noise/table.py

Every row is a 200-episode evaluation (seeds 100000-100199, EMA weights of the run's last checkpoint) with its mean
score +- standard error and "paired": the row's score minus the teacher's DDPM-100 score, episode by episode on the
same environment seeds (the teacher's evaluation is experiments/small_precision_lr/steps10k_constant's).
"""
import pathlib

from dpjax import compare

HERE = pathlib.Path(__file__).resolve().parent
TEACHER_DDPM100 = HERE.parent / "small_precision_lr" / "steps10k_constant" / "episodes200_step_10000" / "eval.json"
# (row label, eval folder under this one); absent folders are left out.
ROWS = [
    ("teacher DDIM-10, trailing", "teacher/ddim10_trailing"),
    ("student, no noise, ancestral-2", "student_base/ancestral2"),
    ("student, no noise, Euler-1", "student_base/euler1"),
    ("student, obs_noise 0.03, ancestral-2", "student_noise0.03/ancestral2"),
    ("student, obs_noise 0.03, Euler-1", "student_noise0.03/euler1"),
    ("student, obs_noise 0.1, ancestral-2", "student_noise0.1/ancestral2"),
    ("student, obs_noise 0.1, Euler-1", "student_noise0.1/euler1"),
    ("student, obs_noise 0.2, ancestral-2", "student_noise0.2/ancestral2"),
    ("student, obs_noise 0.2, Euler-1", "student_noise0.2/euler1"),
    ("student, obs_noise 0.1, 2,400 steps: at 800, ancestral-2", "student_noise0.1_2400/step800_ancestral2"),
    ("student, obs_noise 0.1, 2,400 steps: at 1,600, ancestral-2", "student_noise0.1_2400/step1600_ancestral2"),
    ("student, obs_noise 0.1, 2,400 steps: at 2,400, ancestral-2", "student_noise0.1_2400/ancestral2"),
    ("student, obs_noise 0.1, 2,400 steps: at 2,400, Euler-1", "student_noise0.1_2400/euler1"),
    ("student, no noise, 2,400 steps: at 1,600, ancestral-2", "student_base_2400/step1600_ancestral2"),
    ("student, no noise, 2,400 steps: at 2,400, ancestral-2", "student_base_2400/ancestral2"),
    ("student, no noise, 2,400 steps: at 2,400, Euler-1", "student_base_2400/euler1"),
    ("student, no noise, observations of all 202 episodes, ancestral-2", "student_alleps_obs/ancestral2"),
    ("student, no noise, observations of all 202 episodes, Euler-1", "student_alleps_obs/euler1"),
]


def main():
  reference = compare.load_eval(TEACHER_DDPM100)
  print("| policy (last checkpoint) | network calls | 200 episodes | paired: minus teacher DDPM-100 |")
  print("|---|---|---|---|")
  print(f"| teacher DDPM-100 | 100 | {compare.mean_with_error(reference['scores'])} | - |")
  for label, folder in ROWS:
    path = HERE / folder / "eval.json"
    if not path.exists():
      continue
    record = compare.load_eval(path)
    paired = compare.paired_differences(record, reference)
    print(f"| {label} | {record['network_calls_per_chunk']} | {compare.mean_with_error(record['scores'])} | "
          f"{compare.mean_with_error(paired, sign='+')} |")


if __name__ == "__main__":
  main()
