"""Orbax checkpoints of a run: weights, EMA weights, optimiser state, data-iterator position, normaliser, spec
and config, saved together and atomically (orbax writes a temporary folder and renames it when complete, so a kill
mid-save leaves the previous checkpoints intact).

Saves are asynchronous: `save` returns once the state has been copied off the devices (so the next, donating train
step cannot touch it) and the files are written by a background thread while training goes on. The data-iterator
position is captured when `save` is called, not when its file is written.

Layout: RUN_DIR/checkpoints/<step>/{params, ema_params, opt_state, data_iterator, meta}.
"""
import json
import pathlib
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from dpjax import policy as policy_lib
from dpjax.data import normalizer as normalizer_lib

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointError(RuntimeError):
  """A run directory holds no usable checkpoint."""


def make_manager(run_dir, keep: int, *, read_only: bool = False) -> ocp.CheckpointManager:
  """Writers save asynchronously (`close()` or `wait_until_finished()` waits for the last save)."""
  directory = pathlib.Path(run_dir).absolute() / CHECKPOINT_SUBDIR
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                         cleanup_tmp_directories=not read_only,
                                         enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(directory, options=options)


class IteratorPosition:
  """A grain iterator's state frozen at one moment, saved by grain's checkpoint handler as the iterator itself
  would be (the same JSON file), however late the asynchronous write runs."""

  def __init__(self, data_iterator):
    self._state = json.dumps(data_iterator.get_state(), indent=4).encode()

  def get_state(self) -> bytes:
    return self._state


def save(manager: ocp.CheckpointManager, state, data_iterator, normalizer, spec: policy_lib.PolicySpec,
         config) -> None:
  """Starts saving everything needed to resume training or to load the policy, at `state.step`; returns once the
  state is off the devices, while the files are still being written."""
  step = int(jax.device_get(state.step))
  meta = {"step": step, "spec": spec.to_json(), "normalizer": normalizer_lib.to_json_tree(normalizer),
          "config": config.to_json_best_effort()}
  args = ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      ema_params=ocp.args.StandardSave(state.ema_params),
      opt_state=ocp.args.StandardSave(state.opt_state),
      data_iterator=grain.checkpoint.CheckpointSave(IteratorPosition(data_iterator)),
      meta=ocp.args.JsonSave(meta),
  )
  manager.save(step, args=args, force=True)


def restore_train_state(manager: ocp.CheckpointManager, target_state, data_iterator):
  """Restores (state, data_iterator) from the latest checkpoint into the structure/shardings of `target_state`."""
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(target_state.params),
      ema_params=ocp.args.StandardRestore(target_state.ema_params),
      opt_state=ocp.args.StandardRestore(target_state.opt_state),
      data_iterator=grain.checkpoint.CheckpointRestore(data_iterator),
  ))
  state = target_state.replace(step=jax.numpy.asarray(step, jax.numpy.int32), params=restored["params"],
                               ema_params=restored["ema_params"], opt_state=restored["opt_state"])
  return state, restored["data_iterator"]


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def load_policy(run_dir, *, use_ema: bool = True, step: int | None = None) -> policy_lib.Policy:
  """The policy saved in `run_dir` (a training run directory), on the default device."""
  run_dir = pathlib.Path(run_dir)
  if not (run_dir / CHECKPOINT_SUBDIR).is_dir():
    raise CheckpointError(f"No checkpoints in {run_dir}: expected {run_dir / CHECKPOINT_SUBDIR}/<step>/ as written "
                          "by `python -m dpjax.train --workdir=RUN_DIR`.")
  manager = make_manager(run_dir, keep=1_000_000, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"{run_dir / CHECKPOINT_SUBDIR} holds no complete checkpoint.")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise CheckpointError(f"No checkpoint for step {step} in {run_dir}; available: {sorted(steps)}.")
  try:
    meta = read_meta(manager, step)
    spec = policy_lib.PolicySpec.from_json(meta["spec"])
  except (KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f"Checkpoint {run_dir}/{CHECKPOINT_SUBDIR}/{step} has no readable policy spec "
                          f"({e}); it was not written by this version of dpjax.train.") from e
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.eval_shape(lambda key: policy_lib.init_params(spec, key), jax.random.key(0))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
  item = "ema_params" if use_ema else "params"
  try:
    params = manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)}))[item]
  except Exception as e:  # orbax raises several types for structure mismatches
    raise CheckpointError(f"Checkpoint {run_dir}/{CHECKPOINT_SUBDIR}/{step} does not match its own spec "
                          f"({type(e).__name__}: {e}).") from e
  return policy_lib.Policy(params=params, normalizer=normalizer_lib.from_json_tree(meta["normalizer"]), spec=spec)
