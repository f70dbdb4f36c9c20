"""Small synthetic Push-T replay buffers written in the real layout, for tests that must not need downloads."""
import pathlib

import numpy as np

from dpjax.data import replay


def write_random_walk_pusht(path, episode_lengths=(30, 25, 40, 35, 28, 33), with_images: bool = False,
                          seed: int = 0) -> pathlib.Path:
  """Writes a Push-T-shaped zarr (action, state, keypoint[, img]) with smooth random trajectories."""
  rng = np.random.default_rng(seed)
  n = int(sum(episode_lengths))
  walk = lambda dims: np.cumsum(rng.normal(0.0, 3.0, (n, dims)), axis=0) + 256.0
  agent = walk(2)
  block = walk(3)
  data = {
      "action": (agent + rng.normal(0.0, 1.0, (n, 2))).astype(np.float32),
      "state": np.concatenate([agent, block], axis=1).astype(np.float32),
      "keypoint": (block[:, None, :2] + rng.normal(0.0, 20.0, (1, 9, 2))).astype(np.float32),
  }
  if with_images:
    data["img"] = rng.integers(0, 256, (n, 96, 96, 3)).astype(np.float32)
  replay.write_zarr_replay(path, data, np.cumsum(episode_lengths))
  return pathlib.Path(path)


def smoke_config(data_path, variant: str = "smoke"):
  """configs/pusht.py with the tiny `smoke` variant pointed at `data_path`."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "pusht_config", pathlib.Path(__file__).resolve().parents[1] / "configs" / "pusht.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.data.path = str(data_path)
  config.data.val_ratio = 0.2
  return config
