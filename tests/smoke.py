"""The tiny `smoke` config used by tests that train, sample or roll out end to end, and random-weight policies."""
import functools
import pathlib
import shutil

import jax
import numpy as np

from dpjax import config_files, policy as policy_lib
from dpjax.data import normalizer as normalizer_lib

# Episode lengths of the random-walk replay buffers the end-to-end tests train on.
SMOKE_EPISODE_LENGTHS = (30, 25, 40, 35, 28, 33)


def smoke_config(data_path, variant: str = "smoke"):
  """configs/pusht.py with the tiny `smoke` variant pointed at `data_path`."""
  config = config_files.get_config(variant)
  config.data.path = str(data_path)
  config.data.val_ratio = 0.2
  return config


@functools.lru_cache(maxsize=None)
def random_policy(variant: str = "smoke", obs_shapes: tuple = (("low_dim", (20,)),)) -> policy_lib.Policy:
  """A random-weight policy of `variant` for sorted (key, shape) pairs, with a normaliser fit on uniform data in
  the Push-T ranges (images 0..255, positions 0..512); cached because init compiles are slow."""
  config = smoke_config("unused", variant)
  obs_shapes = dict(obs_shapes)
  spec = policy_lib.spec_from_config(config, obs_shapes, action_dim=2)
  rng = np.random.default_rng(0)
  obs = {k: (rng.uniform(0, 255, (50, 2) + s) if len(s) == 3 else rng.uniform(0, 512, (50, 2) + s)) for k, s in
         obs_shapes.items()}
  action = rng.uniform(0, 512, (50, 2))
  normalizer = normalizer_lib.fit_normalizer({k: v.reshape((-1,) + v.shape[2:]) for k, v in obs.items()}, action)
  return policy_lib.Policy(params=policy_lib.init_params(spec, jax.random.key(0)), normalizer=normalizer, spec=spec)


def random_batch(spec: policy_lib.PolicySpec, batch_size: int, seed: int) -> dict:
  """A raw training batch for `spec`: uint8 images, positions and actions in the Push-T pixel range."""
  rng = np.random.default_rng(seed)
  obs = {k: (rng.integers(0, 256, (batch_size, spec.n_obs_steps) + s).astype(np.uint8) if len(s) == 3
             else rng.uniform(0, 512, (batch_size, spec.n_obs_steps) + s).astype(np.float32))
         for k, s in spec.obs_shapes}
  return {"obs": obs, "action": rng.uniform(0, 512, (batch_size, spec.horizon, 2)).astype(np.float32)}


def copy_run(run_dir: pathlib.Path, parent: pathlib.Path, name: str = "run") -> pathlib.Path:
  """A private copy of the run at `run_dir` as parent/name, for a test that writes into it (its eval/, export/ or
  checkpoints)."""
  return pathlib.Path(shutil.copytree(run_dir, parent / name))


def delete_a_data_file(run_dir: pathlib.Path, step: int, item: str) -> pathlib.Path:
  """Damages checkpoint `step` of the run at `run_dir`: deletes the first data file of its `item` (e.g.
  "ema_params"); returns the deleted file's path."""
  victim = sorted((run_dir / "checkpoints" / str(step) / item / "d").iterdir())[0]
  victim.unlink()
  return victim
