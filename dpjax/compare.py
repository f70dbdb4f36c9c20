r"""Compare evaluations episode by episode: each one's mean score +- its standard error, and its paired difference
from the first on the seeds both ran; or runs by their checkpoints: training seeds of one recipe, each scored with
`dpjax.rollout --step=all`, as the paper reports them (the best checkpoint and the mean of the last ones, each
averaged over the runs +- its standard error).

    python -m dpjax.compare runs/TEACHER/eval/eval.json runs/STUDENT/eval/eval.json [more eval.json ...]
    python -m dpjax.compare runs/seed0/eval/checkpoints runs/seed1/eval/checkpoints runs/seed2/eval/checkpoints

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
    raise ValueError(f"{path} has no per-episode seeds and scores; give an eval.json written by python -m "
                     "dpjax.rollout.")
  return record


def is_summary(path) -> bool:
  """Whether `path` is a summary.json of `dpjax.rollout --step=all`, or a folder holding one and no eval.json."""
  path = pathlib.Path(path)
  return path.name == "summary.json" or (path.is_dir() and (path / "summary.json").is_file()
                                          and not (path / "eval.json").is_file())


def load_summary(path) -> dict:
  """A summary.json written by `python -m dpjax.rollout --step=all` (needs its "mean_scores" and "best_mean_score")."""
  path = pathlib.Path(path)
  path = path / "summary.json" if path.is_dir() else path
  try:
    record = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} cannot be read as JSON ({e}); give summary.json files written by python -m "
                     "dpjax.rollout --step=all.") from e
  if not isinstance(record, dict) or "mean_scores" not in record or "best_mean_score" not in record:
    raise ValueError(f"{path} has no per-checkpoint mean scores; give summary.json files written by python -m "
                     "dpjax.rollout --step=all.")
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


def summary_table(paths) -> str:
  """A markdown table: one row per run's summary.json (checkpoints scored, the best and its step, each mean of the
  last k), then their mean +- standard error over the runs, where every run has the number and all were scored
  under the same "settings" (else a line naming those that differ); a line when the runs' bests are maxima over
  different numbers of checkpoints."""
  records = [load_summary(p) for p in paths]
  lasts = sorted({int(k.rsplit("_", 1)[1]) for r in records for k in r if k.startswith("mean_of_last_")})
  lines = ["| run | checkpoints | best (step) | " + " | ".join(f"mean of last {k}" for k in lasts) + " |",
           "|---|---|---|" + "---|" * len(lasts)]
  for path, record in zip(paths, records):
    means = [f"{record[f'mean_of_last_{k}']:.3f}" if record.get(f"mean_of_last_{k}") is not None else "-"
             for k in lasts]
    lines.append(f"| {path} | {len(record['mean_scores'])} | {record['best_mean_score']:.3f} "
                 f"({record.get('best_step', '-')}) | " + " | ".join(means) + " |")
  fields = sorted({k for r in records for k in r.get("settings", {})})
  differing = [k for k in fields if len({json.dumps(r.get("settings", {}).get(k)) for r in records}) > 1]
  if differing:
    lines.append(f"No mean over the runs: they were scored under different {', '.join(differing)}.")
  elif len(records) > 1:
    means = [mean_with_error([r[f"mean_of_last_{k}"] for r in records])
             if all(r.get(f"mean_of_last_{k}") is not None for r in records) else "-" for k in lasts]
    lines.append(f"| mean over {len(records)} runs | | {mean_with_error([r['best_mean_score'] for r in records])} | "
                 + " | ".join(means) + " |")
  counts = sorted({len(r["mean_scores"]) for r in records})
  if len(counts) > 1:
    lines.append(f"The bests are over {counts[0]} to {counts[-1]} checkpoints: a best grows with "
                 "the number of draws it is the maximum of (experiments/sampling_spread/); compare the means of the "
                 "last ones.")
  return "\n".join(lines)


def main(argv=None) -> int:
  paths = sys.argv[1:] if argv is None else argv
  if not paths or any(p.startswith("-") for p in paths):
    print("usage: python -m dpjax.compare REFERENCE/eval.json OTHER/eval.json ... | RUN/eval/checkpoints ...",
          file=sys.stderr)
    return 2
  summaries = [is_summary(p) for p in paths]
  try:
    if any(summaries) and not all(summaries):
      raise ValueError("give eval.json files (episodes compared) or summary.json files of --step=all (runs "
                       "averaged), not both.")
    print(summary_table(paths) if all(summaries) else table(paths))
  except ValueError as e:
    print(f"dpjax.compare: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
