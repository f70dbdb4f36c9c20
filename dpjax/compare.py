r"""Compare evaluations episode by episode: each one's mean score +- its standard error, and its paired difference
from the first on the seeds both ran.

    python -m dpjax.compare runs/TEACHER/eval/eval.json runs/STUDENT/eval/eval.json [more eval.json ...]

Two policies scored on the same seeds start from the same states, so most of the spread between episodes (easy and
hard initial states) cancels in their per-episode difference: its standard error is often half that of either mean,
and a gap of a few hundredths that two means cannot resolve becomes measurable. (With 50 episodes one mean score
has a standard error of ~0.03.)
"""
import json
import pathlib
import sys

import numpy as np


def load_eval(path) -> dict:
  """An eval.json written by `python -m dpjax.rollout` (needs its "seeds" and "scores")."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / "eval.json"
  if not path.is_file():
    raise ValueError(f"{path} does not exist; give eval.json files (or folders holding one) written by "
                     "python -m dpjax.rollout.")
  try:
    record = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not JSON ({e}); give an eval.json written by python -m dpjax.rollout.") from e
  if not isinstance(record, dict) or "seeds" not in record or "scores" not in record:
    raise ValueError(f"{path} has no per-episode seeds and scores; give an eval.json written by python -m dpjax.rollout.")
  return record


def mean_with_error(values, sign: str = "") -> str:
  """'mean +- standard error of the mean', three decimals; sign="+" writes the mean's sign always."""
  values = np.asarray(values, float)
  error = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
  return f"{values.mean():{sign}.3f} +- {error:.3f}"


def paired_differences(record: dict, reference: dict) -> np.ndarray:
  """record's score minus reference's, episode by episode, on the seeds both ran (in record's order)."""
  reference_scores = dict(zip(reference["seeds"], reference["scores"]))
  shared = [(seed, score) for seed, score in zip(record["seeds"], record["scores"]) if seed in reference_scores]
  if not shared:
    raise ValueError("The two evaluations share no episode seed; evaluate both on the same seeds (e.g. the default "
                     "--seed_start=100000) to compare them episode by episode.")
  return np.asarray([score - reference_scores[seed] for seed, score in shared])


def table(paths) -> str:
  """A markdown table: one row per eval.json; the first is the reference of the paired column."""
  records = [load_eval(p) for p in paths]
  lines = ["| evaluation | calls per chunk | episodes | mean score | paired: minus the first (shared seeds) |",
           "|---|---|---|---|---|"]
  for path, record in zip(paths, records):
    paired = "-"
    if record is not records[0]:
      differences = paired_differences(record, records[0])
      paired = mean_with_error(differences, sign="+")
      if len(differences) != len(record["seeds"]):
        paired += f" ({len(differences)} shared)"
    lines.append(f"| {path} | {record.get('network_calls_per_chunk', '-')} | {len(record['scores'])} | "
                 f"{mean_with_error(record['scores'])} | {paired} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  paths = sys.argv[1:] if argv is None else argv
  if not paths or any(p.startswith("-") for p in paths):
    print("usage: python -m dpjax.compare REFERENCE/eval.json OTHER/eval.json ...", file=sys.stderr)
    return 2
  try:
    print(table(paths))
  except ValueError as e:
    print(f"dpjax.compare: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
