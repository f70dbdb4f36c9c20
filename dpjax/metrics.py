"""Scalar metrics: TensorBoard event files plus an append-only `metrics.jsonl` (one JSON object per line).

Only process 0 writes. Lines are flushed as written, so a kill loses at most the line being written; a resumed run
appends, and readers take the last line for each step (`read_metrics`).
"""
import json
import pathlib

import jax


class MetricsWriter:

  def __init__(self, run_dir):
    self._enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self._enabled:
      from tensorboardX import SummaryWriter  # imported here: only process 0 needs it
      run_dir = pathlib.Path(run_dir)
      self._jsonl = open(run_dir / "metrics.jsonl", "a", encoding="utf-8")
      self._tb = SummaryWriter(str(run_dir / "tensorboard"))

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


def read_metrics(run_dir) -> dict[int, dict]:
  """{step: merged metrics} from RUN_DIR/metrics.jsonl; a later line for a step overrides an earlier one."""
  merged: dict[int, dict] = {}
  path = pathlib.Path(run_dir) / "metrics.jsonl"
  if not path.exists():
    return merged
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue  # a line cut by a kill
    step = record.pop("step")
    merged.setdefault(step, {}).update(record)
  return merged
