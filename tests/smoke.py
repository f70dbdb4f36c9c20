"""The tiny `smoke` config used by tests that train, sample or roll out end to end."""
import importlib.util
import pathlib

# Episode lengths of the random-walk replay buffers the end-to-end tests train on.
SMOKE_EPISODE_LENGTHS = (30, 25, 40, 35, 28, 33)


def smoke_config(data_path, variant: str = "smoke"):
  """configs/pusht.py with the tiny `smoke` variant pointed at `data_path`."""
  spec = importlib.util.spec_from_file_location(
      "pusht_config", pathlib.Path(__file__).resolve().parents[1] / "configs" / "pusht.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(variant)
  config.data.path = str(data_path)
  config.data.val_ratio = 0.2
  return config
