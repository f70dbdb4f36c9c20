r"""Train a diffusion policy.

    python -m dpjax.train --config=configs/pusht.py --workdir=runs/pusht_lowdim
    python -m dpjax.train --config=configs/pusht.py:image --config.train.num_steps=1000
    python -m dpjax.train --config=RUN/config.json --workdir=RUN --config.train.num_steps=8000   # train RUN on

Reads top to bottom: data, policy spec, parameters, optimiser, jitted step, resume, loop (log, validate, evaluate,
checkpoint). Re-running the same command in a run directory that holds a checkpoint resumes from it, with the same
data order and the same per-step randomness as an uninterrupted run; a damaged newest checkpoint is skipped (and
moved to RUN/checkpoints_damaged/). Errors a person can fix are one line; --traceback shows the traceback.
"""
import functools
import importlib
import json
import pathlib
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from dpjax import (checkpoint, cli, config_json, data, distill, files, metrics, optim, policy, preemption, sharding,
                   train_step, wall_time)
from dpjax.data import device_data, pusht

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file, e.g. configs/pusht.py[:variant], or a "
                                "run's own RUN/config.json.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default: a new folder under runs/).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host runs). On clusters JAX "
                  "detects (SLURM, Open MPI, Kubernetes, Cloud TPU) the three flags below may be left out.")
flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0 "
                    "(or $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "With --distributed: number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed: this process' index in [0, num_processes).")


class NonFiniteLossError(FloatingPointError):
  """The loss or gradients became NaN/inf; the run stopped with the last good checkpoint kept."""


# Bad config values, missing or corrupt data or checkpoints, NaN losses, a full disk: one line naming the problem and
# the fix (the traceback with --traceback).
ONE_LINE_ERRORS = (NonFiniteLossError, FileNotFoundError, ValueError, checkpoint.CheckpointError, OSError)


def validate_config(config) -> None:
  """Checks values no later code would catch with a clear message."""
  t = config.train
  for name in ("batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
    if int(t[name]) < 1:
      raise ValueError(f"config.train.{name}={t[name]} must be >= 1.")
  if t.num_steps < 0 or (t.num_steps == 0 and t.num_epochs < 1):
    raise ValueError(f"config.train.num_steps={t.num_steps} with num_epochs={t.num_epochs}: give "
                     "--config.train.num_epochs >= 1, or --config.train.num_steps >= 1 to count steps instead.")
  for name in ("val_every", "rollout_every", "val_batches", "val_sample_batches", "checkpoint_every_minutes",
               "keep_best_checkpoints"):
    if t[name] < 0:
      raise ValueError(f"config.train.{name}={t[name]} must be >= 0 (0 disables).")
  if t.rollout_every and t.rollout_episodes < 1:
    raise ValueError(f"config.train.rollout_episodes={t.rollout_episodes} must be >= 1 while rollout_every="
                     f"{t.rollout_every} (or set --config.train.rollout_every=0 for no rollouts).")
  if config.optim.warmup_steps < 0:
    raise ValueError(f"config.optim.warmup_steps={config.optim.warmup_steps} must be >= 0 (0: no warm-up).")
  if t.keep_best_checkpoints and not t.rollout_every:
    raise ValueError(f"config.train.keep_best_checkpoints={t.keep_best_checkpoints} keeps the checkpoints with the "
                     "best in-training rollout score, but rollout_every=0 runs no rollouts: set "
                     "--config.train.rollout_every=N, or keep_best_checkpoints=0.")
  # Checked here too (the policy spec checks them again) because the data windows, built first, would fail first
  # with a message naming no config field.
  if not 1 <= config.n_obs_steps <= config.horizon:
    raise ValueError(f"config.n_obs_steps={config.n_obs_steps} must be in [1, config.horizon={config.horizon}]: the "
                     "observed steps are the first of each predicted chunk; raise --config.horizon.")
  if not 1 <= config.n_action_steps <= config.horizon - config.n_obs_steps + 1:
    raise ValueError(f"config.n_action_steps={config.n_action_steps} must be in [1, config.horizon - "
                     f"config.n_obs_steps + 1 = {config.horizon - config.n_obs_steps + 1}] so executed actions lie "
                     "inside the chunk; lower it or raise --config.horizon.")
  if not 0.0 <= config.data.val_ratio < 1.0:
    raise ValueError(f"config.data.val_ratio={config.data.val_ratio} must be in [0, 1).")
  if config.optim.learning_rate <= 0:
    raise ValueError(f"config.optim.learning_rate={config.optim.learning_rate} must be > 0.")
  if not 0.0 <= config.ema.min_decay <= config.ema.max_decay < 1.0:
    raise ValueError("config.ema needs 0 <= min_decay <= max_decay < 1.")


def _say(message: str) -> None:
  """A line for the person watching (process 0 only), also in the absl log."""
  logging.info(message)
  if jax.process_index() == 0:
    print(f"dpjax.train: {message}", flush=True)


def _check_same_spec(saved: policy.PolicySpec, current: policy.PolicySpec, workdir) -> None:
  """Refuses to resume into another network; inference settings (sampler, compute dtype) may change."""
  saved_fields, current_fields = saved.network_fields(), current.network_fields()
  if saved_fields == current_fields:
    return
  fields = [f for f in saved_fields if saved_fields[f] != current_fields[f]]
  diff = "; ".join(f"{f}: checkpoint {saved_fields[f]!r} vs config {current_fields[f]!r}" for f in fields)
  raise ValueError(f"{workdir} holds checkpoints of a different policy ({diff}). Resume with the run's own config: "
                   f"python -m dpjax.train --config={workdir / 'config.json'} --workdir={workdir}, or train in a new "
                   "--workdir.")


def _record_resumed_config(config, workdir: pathlib.Path, step: int) -> None:
  """Keeps config.json as the run started; a resume with other values (say a longer num_steps) is recorded
  beside it as config_resumed_step_<step>.json."""
  current = config.to_json_best_effort(indent=2)
  started = workdir / "config.json"
  if jax.process_index() != 0 or (started.exists() and started.read_text() == current):
    return
  path = workdir / f"config_resumed_step_{step}.json"
  files.write_text_atomic(path, current)
  _say(f"the config differs from {started.name}; the resumed run's config is in {path.name}")


def _started_config(workdir: pathlib.Path):
  """The config the run in `workdir` recorded when it started (its config.json), or None before it has one."""
  path = workdir / "config.json"
  return config_json.get_config(path) if path.exists() else None


def _with_teacher_step_pinned(config, resumed_from):
  """`config`, with config.distill.teacher_step (0: the teacher's newest checkpoint) taken from `resumed_from`, the
  run's own started config when resuming (else None), so the student goes on learning the teacher it started with."""
  if config.distill.teacher_step or resumed_from is None:
    return config
  config = config.copy_and_resolve_references()   # the caller's config stays as it was
  config.distill.teacher_step = int(resumed_from.distill.teacher_step)   # 0 in runs before this
  return config


def _with_flat_moments_resolved(config, resumed_from, params, denoiser: str, mesh):
  """`config` with config.optim.flat_moments True or False, what config.json records: as given, else (None) the
  run's own when resuming (`resumed_from`, its started config: the checkpoints' optimiser layout, whatever the
  backend now) or what `optim.resolve_flat_moments` picks for this network on the mesh's devices (and whether
  config.train.shard_ema_and_moments splits the moments over them)."""
  if config.optim.flat_moments is not None:
    return config
  if resumed_from is not None:
    flat = bool(resumed_from.optim.flat_moments)
  else:
    flat = optim.resolve_flat_moments(config.optim, params, denoiser, mesh.devices.flat[0].platform,
                                      split_over_devices=train_step.resolve_split(
                                          config.train.shard_ema_and_moments, mesh))
  config = config.copy_and_resolve_references()   # the caller's config stays as it was
  config.optim.flat_moments = flat
  return config


def _state_memory_line(abstract_state, mesh, flat_moments: bool) -> str:
  """The start line of a run that splits its EMA weights and optimiser state (`abstract_state`: their shapes and
  shardings): how much of them each device holds (arrays that the device count divides along no axis stay whole),
  and why when flat moments stay whole."""
  leaves = jax.tree.leaves((abstract_state.ema_params, abstract_state.opt_state))
  total_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
  split_bytes = sum(x.size * x.dtype.itemsize // (1 if x.sharding.is_fully_replicated else mesh.devices.size)
                    for x in leaves)
  line = (f"EMA weights and optimiser state split over the {mesh.devices.size} devices: "
          f"{split_bytes / 2**20:,.1f} MiB per device of {total_bytes / 2**20:,.1f} MiB")
  moments_whole = any(x.sharding.is_fully_replicated and x.ndim == 1 and x.size > 1
                      for x in jax.tree.leaves(abstract_state.opt_state))
  if flat_moments and moments_whole:
    line += (f"; Adam's moments are one flat vector each (config.optim.flat_moments, the run's layout), whose length "
             f"{mesh.devices.size} does not divide, so they stay whole: a run started with the split and "
             "flat_moments left unset keeps them per array")
  return line


def _validation_batches(source, global_batch_size: int, max_batches: int, mesh) -> list:
  """Fixed validation batches covering the held-out windows, each a multiple of the device count, put on the
  devices once (validation then copies nothing from the host)."""
  from dpjax.data import pipeline
  return [sharding.put_global_batch(b, mesh) for b in
          pipeline.validation_batches(source, global_batch_size, max_batches, multiple_of=mesh.devices.size)]


def _mean_over_batches(fn, params, batches, base_key, *args) -> float:
  """Mean of fn(params, batch, key_i, *args) over the validation batches, key_i = fold_in(base_key, i) (NaN if none)."""
  values = [fn(params, b, jax.random.fold_in(base_key, i), *args) for i, b in enumerate(batches)]
  return float(np.mean(jax.device_get(values))) if values else float("nan")


def resolve_num_steps(train_config, num_windows: int) -> int:
  """Optimiser steps of the run: config.train.num_steps when > 0, else num_epochs passes over `num_windows`
  training windows, ceil(num_windows / batch_size) steps each (the original's data loader keeps the last, short
  batch; here every batch is full and the epoch boundary moves instead)."""
  if train_config.num_steps > 0:
    return int(train_config.num_steps)
  return int(train_config.num_epochs) * -(-num_windows // int(train_config.batch_size))


def _with_changed_epochs_counted(config, started, num_windows: int):
  """`config`, or with num_steps 0 (counted from num_epochs again) when it continues a run whose started config
  (`started`, None for a new run) resolved its num_steps from another num_epochs: `--config=RUN/config.json
  --config.train.num_epochs=8` then trains 8 epochs instead of keeping the recorded step count."""
  if config.train.num_steps <= 0 or started is None:
    return config
  saved = started.train
  from_epochs = saved.num_epochs * -(-num_windows // int(saved.batch_size))
  if (config.train.num_epochs == saved.num_epochs or config.train.num_steps != saved.num_steps
      or saved.num_steps != from_epochs):
    return config
  config = config.copy_and_resolve_references()   # the caller's config stays as it was
  config.train.num_steps = 0
  return config


def steps_in_next_dispatch(step: int, most: int, intervals, num_steps: int) -> int:
  """How many steps the dispatch after `step` runs: at most `most`, ending on the next multiple of each interval
  (logging, validation, checkpoints, rollouts; 0 = off) and never past num_steps, so every event happens
  between dispatches at the step it is due."""
  end = min(step + most, num_steps)
  for interval in intervals:
    if interval:
      end = min(end, (step // interval + 1) * interval)
  return end - step


def misaligned_intervals(most: int, intervals: dict[str, int]) -> list[str]:
  """Names of the event intervals (0 = off) that are not multiples of `most` steps per dispatch: around each such
  event a dispatch runs fewer steps, and each new dispatch length compiles the train step once more."""
  return [name for name, interval in intervals.items() if interval and interval % most]


def train_and_evaluate(config, workdir, devices=None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the last logged metrics."""
  validate_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  clock = wall_time.WallTime(workdir)
  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(config.train.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  steps_per_dispatch = train_step.resolve_steps_per_dispatch(int(config.train.steps_per_dispatch))

  # Data: demonstrations on the devices when they fit (windows gathered in the step), else host batches.
  bundle = data.build_data(config)
  started = _started_config(workdir)   # read once: what a continued run recorded when it began
  config = _with_changed_epochs_counted(config, started, len(bundle.train_source))
  num_steps = resolve_num_steps(config.train, len(bundle.train_source))
  if num_steps != config.train.num_steps:
    _say(f"{config.train.num_epochs:,} epochs of {len(bundle.train_source):,} windows = {num_steps:,} steps")
    config = config.copy_and_resolve_references()   # the caller's config stays as it was
    config.train.num_steps = num_steps               # what config.json records and everything below reads
  placement = device_data.choose_placement(config.data.placement, bundle.train_source, list(mesh.devices.flat))
  resident = device_data.put_replicated(bundle.train_source, replicated) if placement == "device" else None
  train_iterator = data.make_train_iterator(bundle, config, config.train.batch_size,
                                            yield_window_ids=resident is not None)
  _say(f"training data: {len(bundle.train_source):,} windows of {bundle.num_train_episodes} episodes, "
       f"{device_data.nbytes(bundle.train_source) / 2**20:.1f} MiB, gathered on the "
       f"{'devices' if resident is not None else 'host'}; {steps_per_dispatch} step(s) per dispatch")
  val_batches = []
  if bundle.val_source is not None and config.train.val_every and config.train.val_batches:
    val_batches = _validation_batches(bundle.val_source, config.train.batch_size, config.train.val_batches, mesh)

  # Policy and optimiser.
  spec = policy.spec_from_config(config, bundle.obs_shapes, bundle.action_dim)
  if config.train.rollout_every:   # found now, not at the first rollout
    try:
      pusht.check_env_compatible(spec.obs_shapes, spec.action_dim, bundle.obs_keys)
    except ValueError as error:
      raise ValueError(f"{error} In-training rollouts need a Push-T policy: set "
                       "--config.train.rollout_every=0.") from None
    if jax.process_index() == 0:   # the process that runs them
      try:
        importlib.import_module("dpjax.envs.pusht")
      except ImportError as error:
        raise ValueError(f"In-training rollouts need the Push-T simulator ({error}): pip install -e '.[env]', or "
                         "set --config.train.rollout_every=0.") from None
  manager = checkpoint.make_manager(workdir, keep=config.train.keep_checkpoints,
                                    keep_best=config.train.keep_best_checkpoints)
  normalizer_host = bundle.normalizer
  resuming = manager.latest_step() is not None
  base_key = jax.random.key(config.seed)
  init_key, train_key, val_key = jax.random.split(base_key, 3)
  # Shapes only: a resumed run restores its state straight into them; a new one initialises below.
  abstract_params = jax.eval_shape(functools.partial(policy.init_params, spec), init_key)
  resumed_from = started if resuming else None
  config = _with_flat_moments_resolved(config, resumed_from, abstract_params, spec.denoiser, mesh)
  distillation = None
  if config.distill.teacher:
    config = _with_teacher_step_pinned(config, resumed_from)
    distillation, teacher_step = distill.load_teacher(config.distill, spec)
    if not config.distill.teacher_step:   # what config.json records: the step a resume loads again
      config = config.copy_and_resolve_references()
      config.distill.teacher_step = teacher_step
    teacher_spec = distillation.teacher.spec
    _say(f"distilling {config.distill.teacher} step {teacher_step} ({teacher_spec.objective}, "
         f"{teacher_spec.sampler} {teacher_spec.num_inference_steps} steps per batch)")
  if resuming:
    # Resuming: the run's own spec and normaliser win; a different policy in the same folder is an error.
    meta = checkpoint.run_meta(manager)
    _check_same_spec(meta.spec, spec, workdir)
    normalizer_host = meta.normalizer
  elif jax.process_index() == 0:
    files.write_text_atomic(workdir / "config.json", config.to_json_best_effort(indent=2))
    files.write_text_atomic(workdir / "policy_spec.json", spec.to_json())
  _say(f"policy {spec.encoder} + {spec.denoiser}: {policy.count_params(abstract_params):,} parameters, "
       f"{spec.objective} objective, compute dtype {policy.compute_dtype_name(spec.compute_dtype)}; "
       f"{config.train.num_steps:,} steps of batch {config.train.batch_size}, Adam's moments "
       f"{'flat' if config.optim.flat_moments else 'per array'}")
  optimizer = optim.make_optimizer(config.optim, abstract_params, spec.denoiser, config.train.num_steps)
  split_state = train_step.resolve_split(config.train.shard_ema_and_moments, mesh)
  state_shardings = train_step.state_sharding(abstract_params, optimizer, mesh, split_state)
  abstract_state = train_step.abstract_train_state(abstract_params, optimizer, state_shardings)
  if split_state:
    _say(_state_memory_line(abstract_state, mesh, bool(config.optim.flat_moments)))
  if not resuming:
    params = policy.init_params(spec, init_key)
    if distillation is not None:   # a resumed student has its own normaliser (the teacher's, saved) and weights
      normalizer_host = distillation.teacher.normalizer   # the student acts in the teacher's normalised space
      if config.distill.init_from_teacher:
        params, copied = distill.initial_params(distillation, params)
        if not copied:
          _say("the teacher's network differs from the student's: the student starts from fresh weights")
    state = train_step.init_train_state(params, optimizer, state_shardings)
  if distillation is not None:
    distillation = sharding.put_replicated(distillation, mesh)
  normalizer = sharding.put_replicated(normalizer_host, mesh)

  # Resume, from the newest intact checkpoint (a damaged newer one is moved aside, with a line saying so), straight
  # into the state's shapes and shardings.
  if resuming:
    state, train_iterator = checkpoint.restore_train_state(manager, abstract_state, train_iterator, say=_say)
    step = int(state.step)
    if step >= config.train.num_steps:
      manager.close()
      _say(f"the run in {workdir} is complete at step {step} (its checkpoints are in {workdir / 'checkpoints'}): "
           f"train on with a larger --config.train.num_steps=, or evaluate with python -m dpjax.rollout "
           f"--checkpoint={workdir}")
      return {}
    _say(f"resumed from {workdir} at step {step}")
    _record_resumed_config(config, workdir, step)

  t = config.train
  steps_fn = train_step.jit_train_steps(spec, optimizer, config.ema, state_shardings,
                                        sharding.stacked_batch_sharding(mesh), replicated,
                                        learning_rate=optim.learning_rate_schedule(config.optim, t.num_steps))
  validation_fn = train_step.jit_validation_loss(spec, sharding.batch_sharding(mesh), replicated)
  action_error_fn = train_step.jit_validation_action_error(spec, sharding.batch_sharding(mesh), replicated)
  action_error_batches = val_batches[:t.val_sample_batches]
  # Validation and rollouts read the EMA weights whole: split ones are gathered on the devices first (every
  # process takes part), one all-gather per event; nothing is copied to the host.
  gather_ema = jax.jit(lambda tree: tree, out_shardings=replicated) if split_state else (lambda tree: tree)
  writer = metrics.MetricsWriter(workdir, resume_step=int(state.step))   # 0 from scratch
  evaluator = _make_rollout_evaluator(config, workdir, bundle.obs_keys)

  val_every = t.val_every if val_batches else 0
  # The events a dispatch ends on (0 = off), as they will run. Rollouts run on process 0 only, but every process
  # ends its dispatches at them (the same dispatch lengths everywhere) and, when the best are kept, saves there.
  intervals = {"log_every": t.log_every, "checkpoint_every": t.checkpoint_every, "val_every": val_every,
               "rollout_every": t.rollout_every}
  misaligned = misaligned_intervals(steps_per_dispatch, intervals)
  if misaligned:
    _say(f"{', '.join(f'train.{name}={intervals[name]}' for name in misaligned)} not a multiple of the "
         f"{steps_per_dispatch} steps per dispatch: each shorter dispatch length compiles the train step once more "
         f"(as long as the first compile); multiples of {steps_per_dispatch} avoid it")
  step = int(jax.device_get(state.step))
  last = {}
  finite = jnp.ones((), bool)
  last_good_step = step
  progress = _progress_bar(step, t.num_steps)
  window_start, window_steps, window_events_s = time.perf_counter(), 0, 0.0
  eta_start, eta_said = None, False   # (step, time) once the first dispatch has compiled; said at a log step
  checkpoint_timer = preemption.CheckpointTimer(t.checkpoint_every_minutes)
  saver = checkpoint.BackgroundSaver(manager, like=state)
  clock.end_setup(step)
  try:
    with preemption.SignalCatcher() as stop_signal:
      while step < t.num_steps:
        n = steps_in_next_dispatch(step, steps_per_dispatch, tuple(intervals.values()), t.num_steps)
        batches = sharding.put_global_stack([next(train_iterator) for _ in range(n)], mesh)
        state, step_metrics = steps_fn(state, batches, train_key, normalizer, resident, distillation)
        finite = finite & jnp.all(step_metrics["finite"])
        step += n
        if eta_start is None:
          jax.block_until_ready(state)   # the compile and the first dispatch's steps, apart from the rest
          clock.end_first_dispatch()
          eta_start = (step, time.perf_counter())
        window_steps += n
        progress.update(n)
        is_log = step % t.log_every == 0 or step == t.num_steps
        # A stop signal or the wall-clock timer adds a checkpoint; several processes agree at logging steps.
        stop, timed = stop_signal.signum is not None, checkpoint_timer.due()
        if jax.process_count() > 1:
          stop, timed = sharding.any_process((stop, timed)) if is_log else (False, False)
        is_rollout_step = bool(t.rollout_every) and step % t.rollout_every == 0
        is_scored_ckpt = is_rollout_step and bool(t.keep_best_checkpoints)   # a checkpoint to rank by its score
        is_ckpt = step % t.checkpoint_every == 0 or step == t.num_steps or stop or timed or is_scored_ckpt
        is_val = bool(val_every) and step % val_every == 0
        is_rollout = is_rollout_step and evaluator is not None
        if not (is_log or is_ckpt or is_val or is_rollout):
          continue
        if not bool(finite):
          saver.wait()
          kept = (f"The last good checkpoint (step {manager.latest_step()}) in {workdir} is kept."
                  if manager.latest_step() is not None else "No checkpoint had been written yet.")
          raise NonFiniteLossError(
              f"Loss or gradients became NaN/inf between steps {last_good_step} and {step}; stopped. {kept} Try a "
              "lower --config.optim.learning_rate or --config.optim.grad_clip_norm=1.0.")
        last_good_step = step
        if is_log:
          host = jax.tree.map(lambda x: x[-1], jax.device_get(step_metrics))   # the dispatch's last step
          elapsed = time.perf_counter() - window_start - window_events_s   # training alone: events set apart
          last = {"train/loss": host["loss"], "train/grad_norm": host["grad_norm"],
                  "train/ema_decay": host["ema_decay"],
                  "train/learning_rate": host["learning_rate"],
                  "train/steps_per_second": window_steps / elapsed,
                  "train/samples_per_second": window_steps * t.batch_size / elapsed}
          writer.write(step, last)
          progress.set_postfix(loss=f"{host['loss']:.4f}", refresh=False)
          if not eta_said and step > eta_start[0]:
            _say(estimated_time(step - eta_start[0], time.perf_counter() - eta_start[1], t.num_steps - step))
            eta_said = True
          window_start, window_steps, window_events_s = time.perf_counter(), 0, 0.0
        if is_val or is_rollout:
          jax.block_until_ready(state)   # the steps still queued count as training, not as what follows
        events_start = time.perf_counter()   # validation, rollouts and the save's blocking: not training
        ema_weights = gather_ema(state.ema_params) if (is_val or is_rollout_step) else None
        if is_val:
          with clock.phase("validation"):
            val = {f"val/loss{suffix}": _mean_over_batches(validation_fn, weights, val_batches, val_key, normalizer,
                                                           distillation)
                   for suffix, weights in (("", state.params), ("_ema", ema_weights))}
            if action_error_batches:
              val["val/action_mse_ema"] = _mean_over_batches(action_error_fn, ema_weights, action_error_batches,
                                                             val_key, normalizer)
          writer.write(step, val)
          last.update(val)
        score = None
        if is_rollout:
          with clock.phase("rollouts"):
            scores = evaluator(ema_weights, normalizer, spec, step)
          writer.write(step, scores)
          last.update(scores)
          if is_scored_ckpt:
            score = scores[checkpoint.SCORE_METRIC]
        if is_scored_ckpt and jax.process_count() > 1:
          score = _from_process_zero(score)   # every process records the same score with the checkpoint
        if is_ckpt:
          # Blocks only to dispatch a copy of the state on the devices (and, rarely, for the previous save's
          # hand-off); the host copy and the files are written while training goes on, and a checkpoint becomes
          # visible (renamed into place) only once complete.
          save_start = time.perf_counter()
          saver.save(state, train_iterator, normalizer_host, spec, config, score=score)
          blocking = time.perf_counter() - save_start
          clock.add("checkpoint_blocking", blocking)
          writer.write(step, {"train/checkpoint_blocking_s": blocking})
          clock.write(step)
          checkpoint_timer.reset()
        window_events_s += time.perf_counter() - events_start
        if stop:
          raise preemption.StopRequested(step, stop_signal.signum or signal.SIGTERM)
        progress.refresh()
  finally:
    clock.end_loop()
    progress.close()
    writer.close()
    with clock.phase("final_save_wait"):
      saver.close()   # waits for a save still being handed off or written
    try:
      clock.write(step)
    except OSError as e:   # a full disk: the error that ended the loop, if any, is the one to report
      logging.warning("could not write %s: %s", wall_time.FILE_NAME, e)
  return {k: float(v) for k, v in last.items()}


def _from_process_zero(score: float | None) -> float:
  """Process 0's rollout score, on every process (a collective: all processes call it at the same step)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return float(multihost_utils.broadcast_one_to_all(np.float32(0.0 if score is None else score)))


def estimated_time(steps_done: int, seconds: float, steps_left: int) -> str:
  """The line that tells the person at the terminal how long the run will take (compile excluded)."""
  rate = steps_done / seconds
  minutes = steps_left / rate / 60
  duration = f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
  return (f"{rate:.2f} steps/s: the remaining {steps_left:,} steps take about {duration} (plus validation and "
          "checkpoints); Ctrl-C saves a checkpoint and stops, the same command resumes")


def _progress_bar(start_step: int, num_steps: int):
  from tqdm import tqdm
  return tqdm(total=num_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
              disable=jax.process_index() != 0)


def _make_rollout_evaluator(config, workdir, obs_keys):
  """Environment rollouts during training, when config.train.rollout_every > 0 and the simulator is installed; the
  policy's observations built from the simulator's arrays by `obs_keys`, as from the data."""
  if not config.train.rollout_every or jax.process_index() != 0:
    return None
  from dpjax import rollout  # needs the `env` extra
  def evaluate(ema_weights, normalizer, spec, step):
    # The EMA weights stay where they are (replicated on the devices): nothing is copied to the host and back.
    pol = policy.Policy(params=ema_weights, normalizer=normalizer, spec=spec)
    result = rollout.evaluate(pol, num_episodes=config.train.rollout_episodes, seed_start=config.rollout.seed_start,
                              max_steps=config.rollout.max_steps, out_dir=workdir / "eval" / f"step_{step}",
                              num_videos=0, show_progress=False, obs_keys=obs_keys,
                              policy_seed=rollout.checkpoint_policy_seed(
                                  0, step, config.rollout.policy_seed_per_checkpoint))
    return {checkpoint.SCORE_METRIC: result["mean_score"], "rollout/success_rate": result["success_rate"]}
  return evaluate


def default_workdir(config) -> pathlib.Path:
  stamp = time.strftime("%Y%m%d_%H%M%S")
  return pathlib.Path("runs") / f"{stamp}_{config.variant.replace(',', '_')}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/pusht.py")
  if not FLAGS["verbosity"].present:
    # Orbax and grain log every save at INFO, drowning the progress bar; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  cli.use_compilation_cache(FLAGS.compilation_cache_dir)
  if FLAGS.distributed:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif any(FLAGS[name].present for name in ("coordinator_address", "num_processes", "process_id")):
    raise app.UsageError("--coordinator_address/--num_processes/--process_id need --distributed.")
  try:
    with cli.errors_as_one_line("dpjax.train", ONE_LINE_ERRORS):
      workdir = pathlib.Path(FLAGS.workdir) if FLAGS.workdir else default_workdir(FLAGS.config)
      logging.info("Run directory: %s", workdir)
      if jax.process_index() == 0:
        print(f"dpjax.train: run directory {workdir} ({jax.device_count()} {jax.devices()[0].platform} devices, "
              f"{jax.process_count()} process{'es' if jax.process_count() > 1 else ''})")
      final = train_and_evaluate(FLAGS.config, workdir)
  except preemption.StopRequested as e:
    if jax.process_index() == 0:
      print(f"dpjax.train: {e}.", flush=True)
    sys.exit(128 + e.signum)
  if jax.process_index() == 0 and final:
    print(json.dumps(final, indent=2))


def run_main():
  cli.run(main, "dpjax.train")


if __name__ == "__main__":
  run_main()
