"""Stopping training without losing work.

SIGINT (Ctrl-C) and SIGTERM (what schedulers send before preemption) become a request: the loop finishes the
dispatch in flight, saves a checkpoint and exits, within a few seconds; a second Ctrl-C exits at once (the last
complete checkpoint stays intact, orbax only renames finished ones into place). A wall-clock timer also asks for a
checkpoint every few minutes, so a kill -9 never loses more than that. In a multi-process run every process must
save at the same step, so the processes agree on both requests (`sharding.any_process`) before acting.
"""
import os
import signal
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(Exception):
  """Training stopped on a signal after checkpointing step `step`."""

  def __init__(self, step: int, signum: int):
    self.step, self.signum = step, signum
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} after saving a checkpoint; run the "
                     "same command again to resume")


class SignalCatcher:
  """Context manager: while active, the first SIGINT/SIGTERM is recorded in `signum` instead of interrupting; a
  second SIGINT exits the process at once. Outside the main thread (where Python cannot install handlers) it
  records nothing and signals keep their usual effect."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self) -> "SignalCatcher":
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
    return self

  def __exit__(self, *exc_info) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      print("\ndpjax.train: second Ctrl-C, exiting now; the last complete checkpoint is kept.", file=sys.stderr,
            flush=True)
      os._exit(128 + signum)
    if self.signum is None:
      self.signum = signum
      print(f"\ndpjax.train: {signal.Signals(signum).name} received: saving a checkpoint after the current step, "
            "then exiting (Ctrl-C again to exit at once).", file=sys.stderr, flush=True)


class CheckpointTimer:
  """`due()` once `minutes` of wall-clock time have passed since the last `reset()` (never when minutes <= 0)."""

  def __init__(self, minutes: float, clock=time.monotonic):
    self._seconds, self._clock = 60.0 * minutes, clock
    self._last = clock()

  def due(self) -> bool:
    return self._seconds > 0 and self._clock() - self._last >= self._seconds

  def reset(self) -> None:
    self._last = self._clock()
