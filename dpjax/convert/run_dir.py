"""Writes a converted policy as a dpjax run directory, the same layout `python -m dpjax.train` writes.

    RUN_DIR/config.json, policy_spec.json           as a training run
    RUN_DIR/checkpoints/0/                          weights, EMA weights, a fresh optimiser state, data position 0
    RUN_DIR/config.py                               configs/pusht.py + the run's values, for dpjax.train --config
    RUN_DIR/torch_config.yaml, conversion.json      the original cfg (unresolved) and where the weights came from

The checkpoint is step 0 with a fresh AdamW state, so `dpjax.train` on the directory fine-tunes from the imported
weights with a new learning-rate warm-up and EMA schedule, as the original does when it resumes (it rebuilds its
EMAModel, whose first updates copy the weights); the torch optimiser's moments are not carried over.
"""
import json
import pathlib

import jax
import jax.numpy as jnp

from dpjax import checkpoint, files, optim, train_step
from dpjax.data import pipeline

CONFIG_PY = '''"""dpjax config of a run imported from a PyTorch Diffusion Policy checkpoint by dpjax.convert.

configs/pusht.py:{variant} with the values read from the original run's cfg (torch_config.yaml beside this file):

    python -m dpjax.train --config=RUN_DIR/config.py --workdir=RUN_DIR      # fine-tune; any --config.x=y works
"""
from dpjax.convert import torch_config

VARIANT = {variant!r}
OVERRIDES = {overrides}


def get_config(arg=None):
  del arg
  return torch_config.build_config(VARIANT, OVERRIDES)
'''


class _PositionOnly:
  """A window source that is never read: it lets the training pipeline build the iterator whose position (batch
  0) the checkpoint stores, without the dataset."""

  def __len__(self) -> int:
    return 1

  def gather_batch(self, ids):
    raise RuntimeError("the conversion's placeholder data source is not meant to be read")


def fresh_data_iterator(config):
  """The training iterator's state at its first batch, in the format `dpjax.train` restores (one process)."""
  return pipeline.make_train_iterator(_PositionOnly(), config.train.batch_size, int(config.seed), prefetch=0,
                                      worker_count=0, process_index=0, process_count=1)


def config_py(variant: str, overrides: dict) -> str:
  """RUN_DIR/config.py: the config as configs/pusht.py:<variant> plus the conversion's overrides, so fields that
  later dpjax versions add get their defaults."""
  lines = "".join(f"    {key!r}: {value!r},\n" for key, value in overrides.items())
  return CONFIG_PY.format(variant=variant, overrides="{\n" + lines + "}")


def write_run_dir(out_dir, config, spec, params, ema_params, normalizer, *, config_file: str,
                  torch_config_yaml: str, provenance: dict) -> pathlib.Path:
  """Writes the run directory `out_dir`, which must not exist, through a staging folder renamed when complete: an
  interrupted conversion leaves no run (a run without its config.py or conversion.json would still load)."""
  out_dir = files.new_folder(out_dir)   # before the work; `staged_folder` checks again
  params, ema_params = (jax.tree.map(jnp.asarray, tree) for tree in (params, ema_params))
  config = config.copy_and_resolve_references()   # config.json records the optimiser layout the checkpoint holds
  config.optim.flat_moments = optim.resolve_flat_moments(config.optim, params, spec.denoiser)
  optimizer = optim.make_optimizer(config.optim, params, spec.denoiser, config.train.num_steps)
  state = train_step.create_train_state(params, optimizer).replace(ema_params=ema_params)
  with files.staged_folder(out_dir) as folder:
    manager = checkpoint.make_manager(folder, keep=config.train.keep_checkpoints)
    try:
      checkpoint.save(manager, state, fresh_data_iterator(config), normalizer, spec, config)
      manager.wait_until_finished()  # saves may be asynchronous
    finally:
      manager.close()
    (folder / "config.json").write_text(config.to_json_best_effort(indent=2))
    (folder / "policy_spec.json").write_text(spec.to_json())
    (folder / "config.py").write_text(config_file)
    (folder / "torch_config.yaml").write_text(torch_config_yaml)
    (folder / "conversion.json").write_text(json.dumps(provenance, indent=2))
  return out_dir
