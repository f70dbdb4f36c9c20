"""Orbax checkpoints of a run: weights, EMA weights, optimiser state, data-iterator position, normaliser, spec
and config, saved together and atomically (orbax writes a temporary folder and renames it when complete, so a kill
mid-save leaves the previous checkpoints intact).

Saves are asynchronous: `save` returns once the state has been copied off the devices (so the next, donating train
step cannot touch it) and the files are written by a background thread while training goes on. The data-iterator
position is captured when `save` is called, not when its file is written. Training saves through
`BackgroundSaver`, which does even the copy off the devices in a worker thread, from a copy made on the devices.

Layout: RUN_DIR/checkpoints/<step>/{params, ema_params, opt_state, data_iterator, meta} and, where an in-training
rollout ran at that step, metrics (its mean score, which `best_step` and keep_best_checkpoints rank by).

A checkpoint damaged after it was written (a file deleted or cut short) is skipped: resuming and `load_policy` use
the newest intact one and say, in one line, which step they skipped and why; resuming also moves the damaged one to
RUN_DIR/checkpoints_damaged/<step>.
"""
import contextlib
import dataclasses
import json
import logging as std_logging
import os
import pathlib
import re
import sys
import threading
from typing import Any, Callable

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy

from dpjax import policy as policy_lib
from dpjax.data import normalizer as normalizer_lib

CHECKPOINT_SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "checkpoints_damaged"
SCORE_METRIC = "rollout/mean_score"   # what a checkpoint's in-training rollout scored, as metrics.jsonl names it
ARRAY_ITEMS = ("params", "ema_params", "opt_state")


class CheckpointError(RuntimeError):
  """A run directory holds no usable checkpoint."""


class DamagedCheckpointError(CheckpointError):
  """One checkpoint could not be read: `reason` names the item and, where it can, the missing file."""

  def __init__(self, step: int, reason: str):
    self.step, self.reason = step, reason
    super().__init__(f"checkpoint {step} is damaged ({reason})")


def make_manager(run_dir, keep: int | None, *, keep_best: int = 0, read_only: bool = False) -> ocp.CheckpointManager:
  """Writers save asynchronously (`close()` or `wait_until_finished()` waits for the last save) and keep the newest
  `keep` checkpoints (None: all) and the `keep_best` with the highest in-training rollout score (saved with
  `score=`; a checkpoint without one stays only while among the newest `keep`). A read-only manager (any `keep`)
  never writes, so several may read a run while it trains."""
  directory = pathlib.Path(run_dir).absolute() / CHECKPOINT_SUBDIR
  if not read_only:
    # best_fn makes orbax write each save's metrics into its step folder and read them back on resume; which
    # checkpoints stay is the preservation policy's call alone.
    kept = preservation_policy.AnyPreservationPolicy([
        preservation_policy.LatestN(keep),
        preservation_policy.BestN(get_metric_fn=_score_of, n=keep_best, keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(preservation_policy=kept, best_fn=_score_of, create=True,
                                           cleanup_tmp_directories=True)
    _drop_for_good("Requested `tracked_metric`; did not provide metrics")   # a save without a score is expected
    return ocp.CheckpointManager(directory, options=options)
  # The settings orbax would otherwise reset for a reader, warning about each; its "Given directory is read only"
  # warning comes whatever the settings, so that one line (and only it) is dropped.
  options = ocp.CheckpointManagerOptions(max_to_keep=None, save_interval_steps=0, create=False, read_only=True,
                                         cleanup_tmp_directories=False, enable_async_checkpointing=False)
  with _log_lines_dropped("Given directory is read only"):
    return ocp.CheckpointManager(directory, options=options)


def _score_of(metrics) -> float:
  return float(metrics[SCORE_METRIC])


def best_step(run_dir) -> int:
  """The step of `run_dir`'s checkpoint with the highest in-training rollout score (the latest of equal ones)."""
  manager = _reader(run_dir)
  scored = {}
  for step in manager.all_steps():
    try:
      metrics = manager.metrics(step)
    except ValueError:   # a metrics file cut short: that checkpoint has no score to rank by
      continue
    if metrics and SCORE_METRIC in metrics:
      scored[step] = _score_of(metrics)
  if not scored:
    raise CheckpointError(f"No checkpoint in {pathlib.Path(run_dir) / CHECKPOINT_SUBDIR} carries an in-training "
                          "rollout score: train with --config.train.rollout_every=N, or name a step.")
  return max(scored, key=lambda step: (scored[step], step))


def step_from_flag(flag: str | None, run_dir, program: str) -> int | None:
  """A command line's --step as a checkpoint step: None (the latest), a number, or `best_step`'s (printed)."""
  if flag is None or flag == "latest":
    return None
  if flag == "best":
    step = best_step(run_dir)
    print(f"{program}: the best-scoring checkpoint of {run_dir} is step {step}")
    return step
  if not flag.isdigit():
    raise ValueError(f"--step={flag}: give a checkpoint step (a number), latest or best.")
  return int(flag)


def names_several_steps(flag: str | None) -> bool:
  """Whether a command line's --step names several checkpoints (`steps_from_flag`) rather than one."""
  return flag is not None and (flag == "all" or "," in flag)


def steps_from_flag(flag: str, run_dir) -> list[int]:
  """A command line's --step naming several checkpoints as their steps, oldest first: all (every complete
  checkpoint in the run) or a comma-separated list of steps, each of which must be there."""
  available = sorted(_reader(run_dir).all_steps())
  if not available:
    raise CheckpointError(f"{pathlib.Path(run_dir) / CHECKPOINT_SUBDIR} holds no complete checkpoint.")
  if flag == "all":
    return available
  parts = [part.strip() for part in flag.split(",") if part.strip()]
  if not parts or not all(part.isdigit() for part in parts):
    raise ValueError(f"--step={flag}: give all or checkpoint steps (numbers) separated by commas.")
  steps = sorted({int(part) for part in parts})
  missing = [step for step in steps if step not in available]
  if missing:
    raise CheckpointError(f"No checkpoint for step {', '.join(map(str, missing))} in {run_dir}; available: "
                          f"{available}.")
  return steps


def _drop_for_good(prefix: str) -> None:
  """From now on, absl log records whose message starts with `prefix` are not emitted (installed once)."""
  if prefix in _DROPPED_FOR_GOOD:
    return
  _DROPPED_FOR_GOOD.add(prefix)
  std_logging.getLogger("absl").addFilter(_dropping(prefix))


_DROPPED_FOR_GOOD: set[str] = set()


def _dropping(prefix: str) -> Callable[[std_logging.LogRecord], bool]:
  """A log filter that drops the records whose message starts with `prefix`."""
  return lambda record: not record.getMessage().startswith(prefix)


@contextlib.contextmanager
def _log_lines_dropped(prefix: str):
  """Within the block, absl log records whose message starts with `prefix` are not emitted."""
  drop = _dropping(prefix)
  logger = std_logging.getLogger("absl")
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


class IteratorPosition:
  """A grain iterator's state frozen at one moment, saved by grain's checkpoint handler as the iterator itself
  would be (the same JSON file), however late the asynchronous write runs."""

  def __init__(self, data_iterator):
    self._state = json.dumps(data_iterator.get_state(), indent=4).encode()

  def get_state(self) -> bytes:
    return self._state


def save(manager: ocp.CheckpointManager, state, data_iterator, normalizer, spec: policy_lib.PolicySpec,
         config, score: float | None = None) -> None:
  """Starts saving everything needed to resume training or to load the policy, at `state.step`; returns once the
  state is off the devices, while the files are still being written. `data_iterator` may be an `IteratorPosition`
  taken earlier; `score`, the in-training rollout mean score at this step, if one ran (see `make_manager`)."""
  if not isinstance(data_iterator, IteratorPosition):
    data_iterator = IteratorPosition(data_iterator)
  step = int(jax.device_get(state.step))
  meta = {"step": step, "spec": spec.to_json(), "normalizer": normalizer_lib.to_json_tree(normalizer),
          "config": config.to_json_best_effort()}
  args = ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      ema_params=ocp.args.StandardSave(state.ema_params),
      opt_state=ocp.args.StandardSave(state.opt_state),
      data_iterator=grain.checkpoint.CheckpointSave(data_iterator),
      meta=ocp.args.JsonSave(meta),
  )
  metrics = None if score is None else {SCORE_METRIC: float(score)}
  manager.save(step, args=args, metrics=metrics, force=True)


@jax.jit
def _copy_on_devices(tree):
  """A copy of `tree` in new buffers on the same devices and shardings (one dispatch)."""
  return jax.tree.map(jnp.copy, tree)


class BackgroundSaver:
  """`save` from a worker thread: the training loop stops only to dispatch a copy of the state on its devices.

  The copy is needed because the next train step donates the state's buffers. The data-iterator position is
  captured at the call; the worker then runs `save`, whose host copy and file writes overlap training, and orbax
  renames the folder into place only once complete, so a kill at any moment leaves the earlier checkpoints intact.
  One save is in hand at a time (a new one first waits for the last hand-off). `wait()` joins the worker and
  re-raises its error; `close()` also waits for the files and closes the manager. Given `like` (a state of the
  same structure, shapes and shardings), the copy is compiled at once rather than at the first save.

  With several processes the save stays in the training thread (`threaded=False`, the default there): orbax's
  save synchronises the processes with collectives, and a worker thread's collectives interleaving with the train
  step's in a different order on each process would deadlock them.
  """

  def __init__(self, manager: ocp.CheckpointManager, like=None, threaded: bool | None = None):
    self.manager = manager
    self.threaded = jax.process_count() == 1 if threaded is None else threaded
    self._copy = (_copy_on_devices if like is None or not self.threaded
                  else _copy_on_devices.lower(like).compile())
    self._thread: threading.Thread | None = None
    self._error: BaseException | None = None

  def save(self, state, data_iterator, normalizer, spec: policy_lib.PolicySpec, config,
           score: float | None = None) -> None:
    if not self.threaded:
      save(self.manager, state, data_iterator, normalizer, spec, config, score)
      return
    self.wait()
    snapshot, position = self._copy(state), IteratorPosition(data_iterator)

    def work():
      try:
        save(self.manager, snapshot, position, normalizer, spec, config, score)
      except BaseException as e:   # re-raised in the training thread by wait()
        self._error = e

    self._thread = threading.Thread(target=work, name="dpjax-checkpoint", daemon=True)
    self._thread.start()

  def wait(self) -> None:
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._error is not None:
      error, self._error = self._error, None
      raise error

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def restore_train_state(manager: ocp.CheckpointManager, target_state, data_iterator,
                        say: Callable[[str], None] = print):
  """Restores (state, data_iterator) from the newest intact checkpoint into the structure/shardings of `target_state`.

  Newer damaged checkpoints are moved to RUN_DIR/checkpoints_damaged/<step>, each named through `say` in one line,
  but only once an older one restored into the same target: when none does, the cause is more likely the target
  (a changed optimiser) than the files, and CheckpointError says so with every step's reason, moving nothing.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = _restore_items(manager, step, {
          "params": ocp.args.StandardRestore(target_state.params),
          "ema_params": ocp.args.StandardRestore(target_state.ema_params),
          "opt_state": ocp.args.StandardRestore(target_state.opt_state),
          "data_iterator": grain.checkpoint.CheckpointRestore(data_iterator),
          "meta": ocp.args.JsonRestore(),   # read only to check it: resuming took spec and normaliser already
      })
    except DamagedCheckpointError as e:
      damaged.append(e)
      continue
    for e in damaged:
      say(f"{e}; moved it to {_move_aside(manager, e.step)} and resumed from {step}")
    # The step counter placed like the target's, as the train step returns it: an uncommitted one-device scalar
    # makes jit trace and compile the step a second time after the first dispatch of a resumed run.
    state = target_state.replace(step=jax.device_put(np.int32(step), target_state.step.sharding),
                                 params=restored["params"], ema_params=restored["ema_params"],
                                 opt_state=restored["opt_state"])
    return state, restored["data_iterator"]
  run_dir = pathlib.Path(manager.directory).parent
  raise CheckpointError(f"no checkpoint in {manager.directory} can be restored ("
                        + "; ".join(f"step {e.step}: {e.reason}" for e in damaged) + "). If the config changed the "
                        f"optimiser (config.optim.flat_moments changes its state's layout), resume with the run's own: "
                        f"--config={run_dir / 'config.json'}; else move "
                        f"{manager.directory} away to train from scratch.")


def _restore_items(manager: ocp.CheckpointManager, step: int, args: dict) -> dict:
  """{item: restored} for each item of checkpoint `step`, one at a time so that a failure names its item."""
  _quiet_failed_restore_leftovers()
  restored = {}
  for item, arg in args.items():
    try:
      restored[item] = manager.restore(step, args=ocp.args.Composite(**{item: arg}))[item]
    except Exception as e:  # pylint: disable=broad-except  (orbax, tensorstore and json raise many types)
      raise DamagedCheckpointError(step, _damage(pathlib.Path(manager.directory) / str(step) / item, e)) from e
  return restored


def _damage(item_dir: pathlib.Path, error: Exception) -> str:
  """A short account of why `item_dir` could not be read: the missing file where one can be named."""
  text = str(error)
  if not item_dir.is_dir():
    return f"missing folder {item_dir}"
  missing = [f for f in re.findall(r'local file "([^"]+)"', text) if not os.path.exists(f)]
  if missing:
    return f"missing file {missing[-1]}"
  if item_dir.name in ARRAY_ITEMS and not (item_dir / "manifest.ocdbt").exists():
    return f"missing file {item_dir / 'manifest.ocdbt'}"
  if isinstance(error, json.JSONDecodeError):
    return f"{item_dir} is not valid JSON ({error})"
  arrays = re.findall(r"'path': '([^'/][^']*?)/?'", text)   # tensorstore's spec names the array it read
  first = (text.strip().splitlines() or [""])[0][:100]
  where = f"array {arrays[-1]} of {item_dir}" if arrays else str(item_dir)
  return f"cannot read {where}: {type(error).__name__}: {first}"


def _move_aside(manager: ocp.CheckpointManager, step: int) -> pathlib.Path:
  """Moves checkpoint `step` to RUN_DIR/checkpoints_damaged/<step> and forgets it; returns where it went.

  Left in place it would stop the next save at that step (orbax will not overwrite a step) and count towards
  keep_checkpoints. Moved, not deleted: the verdict rests on a failed read, which a passing file-system fault can
  also cause, and the files stay for a person to inspect or put back.
  """
  source = pathlib.Path(manager.directory) / str(step)
  target = source.parent.parent / DAMAGED_SUBDIR / str(step)
  if jax.process_index() == 0:
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = 0
    while target.exists():   # the same step damaged again in a later resume
      suffix += 1
      target = target.with_name(f"{step}.{suffix}")
    os.replace(source, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"dpjax checkpoint {step} moved aside")
  manager.reload()
  return target


_QUIETED = []


def _quiet_failed_restore_leftovers() -> None:
  """After a failed restore, the tensorstore reads still in flight end on orbax's closed event loop: Python reports
  each as an unraisable `RuntimeError: Event loop is closed` traceback, and asyncio logs each failed read as "Task
  exception was never retrieved", dozens of tracebacks on stderr beside the one line that already names the damage.
  This drops exactly those reports (installed once, before the first restore, as the first report can come before
  the failure reaches us) and passes on every other."""
  if _QUIETED:
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  def keep(record) -> bool:
    message = record.getMessage()
    return not (message.startswith("Task exception was never retrieved") and "orbax" in message)

  sys.unraisablehook = hook
  std_logging.getLogger("asyncio").addFilter(keep)
  _QUIETED.append(hook)


@dataclasses.dataclass(frozen=True)
class RunMeta:
  """What a checkpoint records besides arrays (its `meta` item, written by `save`): the one reader of it."""
  step: int
  spec: policy_lib.PolicySpec
  normalizer: Any          # numpy leaves, `normalizer_lib.fit_normalizer`'s tree
  config_json: str         # the run's config as JSON


def meta_at(manager: ocp.CheckpointManager, step: int) -> RunMeta:
  """Checkpoint `step`'s RunMeta; DamagedCheckpointError when it cannot be read."""
  raw = _restore_items(manager, step, {"meta": ocp.args.JsonRestore()})["meta"]
  try:
    return RunMeta(step=step, spec=policy_lib.PolicySpec.from_json(raw["spec"]),
                   normalizer=normalizer_lib.from_json_tree(raw["normalizer"]), config_json=raw.get("config", ""))
  except (KeyError, TypeError, ValueError) as e:
    raise DamagedCheckpointError(step, f"no readable policy spec or normaliser ({type(e).__name__}: {e}); not "
                                 "written by this version of dpjax.train") from e


def run_meta(manager: ocp.CheckpointManager) -> RunMeta:
  """The RunMeta of the newest checkpoint whose meta reads: a run writes the same spec and normaliser into every
  checkpoint, so any intact one describes it; `restore_train_state` reports the damage."""
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return meta_at(manager, step)
    except DamagedCheckpointError as e:
      damaged.append(e)
  raise CheckpointError(f"no checkpoint in {manager.directory} has a readable meta ("
                        + "; ".join(f"step {e.step}: {e.reason}" for e in damaged) + ").")


def checkpoint_identity(run_dir, step: int) -> str | None:
  """Which save checkpoint `step` of `run_dir` is: orbax's commit time in nanoseconds (a copied or moved run keeps
  it; a run trained again from scratch into the same folder gets new ones), or None where it cannot be read."""
  path = pathlib.Path(run_dir) / CHECKPOINT_SUBDIR / str(step) / "_CHECKPOINT_METADATA"
  try:
    return str(json.loads(path.read_text())["commit_timestamp_nsecs"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def load_policy(run_dir, *, use_ema: bool = True, step: int | None = None) -> policy_lib.Policy:
  """The policy saved in `run_dir` (a training run directory), on the default device: from checkpoint `step`, or
  by default the newest intact one (a damaged newer one is skipped with a one-line warning naming it and why)."""
  return load_policy_and_step(run_dir, use_ema=use_ema, step=step)[0]


def load_policy_and_step(run_dir, *, use_ema: bool = True,
                         step: int | None = None) -> tuple[policy_lib.Policy, int]:
  """`load_policy`'s policy and the checkpoint step it came from."""
  run_dir = pathlib.Path(run_dir)
  manager = _reader(run_dir)
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f"{run_dir / CHECKPOINT_SUBDIR} holds no complete checkpoint.")
  if step is not None and step not in steps:
    raise CheckpointError(f"No checkpoint for step {step} in {run_dir}; available: {sorted(steps)}.")
  damaged = []
  for candidate in [step] if step is not None else steps:
    try:
      policy = _load_policy_at(manager, candidate, "ema_params" if use_ema else "params")
    except DamagedCheckpointError as e:
      damaged.append(e)
      continue
    for e in damaged:
      logging.warning("%s; using checkpoint %d of %s", e, candidate, run_dir)
    return policy, candidate
  if step is not None:
    raise CheckpointError(f"Checkpoint {run_dir / CHECKPOINT_SUBDIR}/{step} is damaged ({damaged[0].reason}); "
                          f"available: {sorted(steps)}.")
  raise CheckpointError(f"No usable checkpoint in {run_dir / CHECKPOINT_SUBDIR} ("
                        + "; ".join(f"step {e.step}: {e.reason}" for e in damaged) + ").")


def _reader(run_dir) -> ocp.CheckpointManager:
  """A read-only manager of a training run's checkpoints; CheckpointError when it has none."""
  run_dir = pathlib.Path(run_dir)
  if not (run_dir / CHECKPOINT_SUBDIR).is_dir():
    raise CheckpointError(f"No checkpoints in {run_dir}: expected {run_dir / CHECKPOINT_SUBDIR}/<step>/ as written "
                          "by `python -m dpjax.train --workdir=RUN_DIR`.")
  return make_manager(run_dir, keep=None, read_only=True)


def _load_policy_at(manager: ocp.CheckpointManager, step: int, item: str) -> policy_lib.Policy:
  meta = meta_at(manager, step)
  spec, normalizer = meta.spec, meta.normalizer
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.eval_shape(lambda key: policy_lib.init_params(spec, key), jax.random.key(0))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
  params = _restore_items(manager, step, {item: ocp.args.StandardRestore(abstract)})[item]
  return policy_lib.Policy(params=params, normalizer=normalizer, spec=spec)
