"""Scalar metrics: TensorBoard event files plus an append-only `metrics.jsonl` (one JSON object per line).

Only process 0 writes. Lines are flushed as written, so a kill loses at most the line being written.

Resuming: a run killed after logging step s but before its checkpoint at s resumes from an earlier checkpoint r and
logs r+1..s again. So a writer starting at step r (`resume_step=r`; 0 for a run from scratch, which may follow one
killed before its first checkpoint) first drops the records past r from metrics.jsonl (their steps' work was lost
with the kill and is about to be redone) and has TensorBoard hide its events past r; each (step, name) then has one
record. `read_metrics` also keeps the last record per (step, name), for files written
before writers did this.
"""
import json
import pathlib

import jax

from dpjax import files


class MetricsWriter:

  def __init__(self, run_dir, resume_step: int = 0):
    """`resume_step`: the checkpoint step the run continues from (0 from scratch: an earlier attempt's records go)."""
    self._enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self._enabled:
      from tensorboardX import SummaryWriter  # imported here: only process 0 needs it
      run_dir = pathlib.Path(run_dir)
      drop_records_after(run_dir / "metrics.jsonl", resume_step)
      self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
      # TensorBoard hides the events of earlier writers at steps >= purge_step.
      self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)

  def write(self, step: int, scalars: dict) -> None:
    if not self._enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    for name, value in scalars.items():
      self._tb.add_scalar(name, value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tb.close()


def _records(path: pathlib.Path):
  """(line, record) for each whole line of a metrics.jsonl; a line cut by a kill is skipped."""
  if not path.exists():
    return
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict) and "step" in record:
      yield line, record


def drop_records_after(path, step: int) -> None:
  """Rewrites metrics.jsonl (atomically) without its records past `step` and any line cut by a kill."""
  path = pathlib.Path(path)
  if not path.exists():
    return
  kept = [line for line, record in _records(path) if record["step"] <= step]
  files.write_text_atomic(path, "".join(line + "\n" for line in kept))


def read_metrics(run_dir) -> dict[int, dict]:
  """{step: {name: value}} from RUN_DIR/metrics.jsonl, sorted by step. A step's lines are merged and a later
  record of the same (step, name) replaces an earlier one: the last written is the one a resume logged again."""
  merged: dict[int, dict] = {}
  for _, record in _records(pathlib.Path(run_dir) / "metrics.jsonl"):
    step = record.pop("step")
    merged.setdefault(step, {}).update(record)
  return dict(sorted(merged.items()))
