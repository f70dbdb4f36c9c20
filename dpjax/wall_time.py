"""Where a training process' wall time went: `RUN/wall_time.json`, seconds per phase.

Phases, in the order they happen:
  before_train      process start to `train_and_evaluate` (interpreter, imports, flags, device start-up; Linux
                    only, else null)
  setup             data, policy, parameters or their restore, until the training loop starts
  first_dispatch    the first dispatch of train steps until its results are ready: its compile, plus one dispatch
                    of steps (compare with `python -m dpjax.bench`'s compile time: issue 12's "first step <= compile
                    + 2 s")
  training          every later dispatch (the loop's time not in the phases below)
  validation        validation losses (the state is made ready first, so queued train steps are not counted here)
  rollouts          in-training environment rollouts
  checkpoint_blocking  the loop's waits for checkpoint saves to be handed off
  final_save_wait   after the loop: the last checkpoint written and renamed into place

Beside the phases (overlapping them): `compile_s`, the process' JAX compile time since setup began (tracing,
lowering and XLA, from `jax.monitoring`'s compile events; a persistent-cache hit costs none), and
`first_dispatch_compile_s`, the part of it inside first_dispatch, so first_dispatch_s - first_dispatch_compile_s is
what the first step costs beyond its compile.

Written atomically at every checkpoint and when the loop ends (a kill leaves the last whole file), by process 0
only (as metrics). It describes one process: a resumed run's file is the resumed process', from `start_step`.
"""
import contextlib
import json
import os
import pathlib
import time

import jax

from dpjax import files

PHASES = ("before_train", "setup", "first_dispatch", "training", "validation", "rollouts", "checkpoint_blocking",
          "final_save_wait")
FILE_NAME = "wall_time.json"
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
# This process' compile seconds so far, summed by one jax.monitoring listener (registered on first use: JAX keeps
# listeners for the process' life).
_compile_seconds = {"total": 0.0, "listening": False}


def _on_duration_event(event: str, duration_secs: float, **kwargs) -> None:
  del kwargs
  if event in COMPILE_EVENTS:
    _compile_seconds["total"] += duration_secs


def compile_seconds() -> float:
  """Seconds this process has spent compiling JAX programs since the first call of this function."""
  if not _compile_seconds["listening"]:
    jax.monitoring.register_event_duration_secs_listener(_on_duration_event)
    _compile_seconds["listening"] = True
  return _compile_seconds["total"]


def seconds_since_process_start() -> float | None:
  """How long this process has run, from /proc (None where /proc is missing or unreadable)."""
  try:
    stat = pathlib.Path("/proc/self/stat").read_text()
    uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
  except (OSError, ValueError):
    return None
  # Field 22 (starttime, clock ticks after boot); the command name before it may hold spaces, so count after ')'.
  start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
  return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class WallTime:
  """Accumulates seconds per phase; the loop's time outside its named phases is `training`."""

  def __init__(self, run_dir, clock=time.perf_counter):
    self._path = pathlib.Path(run_dir) / FILE_NAME
    self._enabled = jax.process_index() == 0
    self._clock = clock
    self._start_step = None
    self._seconds = dict.fromkeys(PHASES, 0.0)
    self._seconds["before_train"] = seconds_since_process_start()
    self._setup_start = clock()
    self._loop_start = self._loop_end = None
    self._compile_start = compile_seconds()
    self._compile_at_loop_start = self._first_dispatch_compile = None

  def end_setup(self, start_step: int) -> None:
    """Called as the loop starts, at `start_step` (0, or the step a resumed run continues from)."""
    self._start_step = int(start_step)
    self._loop_start = self._clock()
    self._seconds["setup"] = self._loop_start - self._setup_start
    self._compile_at_loop_start = compile_seconds()

  def end_first_dispatch(self) -> None:
    """Called once the first dispatch's results are ready."""
    self._seconds["first_dispatch"] = self._clock() - self._loop_start
    self._first_dispatch_compile = compile_seconds() - self._compile_at_loop_start

  def end_loop(self) -> None:
    """Called as the loop ends (later time is final_save_wait)."""
    if self._loop_start is not None and self._loop_end is None:
      self._loop_end = self._clock()

  def add(self, phase: str, seconds: float) -> None:
    self._seconds[phase] += seconds

  @contextlib.contextmanager
  def phase(self, name: str):
    """Adds the time inside the `with` block to phase `name`."""
    start = self._clock()
    try:
      yield
    finally:
      self.add(name, self._clock() - start)

  def as_dict(self, end_step: int) -> dict:
    seconds = dict(self._seconds)
    if self._loop_start is not None:
      in_loop = (self._clock() if self._loop_end is None else self._loop_end) - self._loop_start
      named = ("first_dispatch", "validation", "rollouts", "checkpoint_blocking")
      seconds["training"] = max(0.0, in_loop - sum(seconds[p] for p in named))
    return {"start_step": self._start_step, "end_step": int(end_step),
            **{f"{p}_s": (None if v is None else round(v, 3)) for p, v in seconds.items()},
            "total_s": round(sum(v for v in seconds.values() if v is not None), 3),
            "compile_s": round(compile_seconds() - self._compile_start, 3),
            "first_dispatch_compile_s": (None if self._first_dispatch_compile is None
                                         else round(self._first_dispatch_compile, 3))}

  def write(self, end_step: int) -> None:
    if self._enabled:
      files.write_text_atomic(self._path, json.dumps(self.as_dict(end_step), indent=2) + "\n")


def read(run_dir) -> dict | None:
  """RUN/wall_time.json, or None when the run has none."""
  path = pathlib.Path(run_dir) / FILE_NAME
  return json.loads(path.read_text()) if path.exists() else None
