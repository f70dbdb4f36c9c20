"""Config files: Python files with `get_config(variant)` (`configs/pusht.py`), loaded by path, the way
`--config=PATH:variant` loads them. The one loader every module and test uses."""
import importlib.util
import pathlib
import types

# The Push-T config of the source checkout this package runs from.
PUSHT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "pusht.py"


def load_module(path=PUSHT_CONFIG) -> types.ModuleType:
  """The Python file at `path` (a config file; tests load experiment scripts the same way) as a module."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant: str | None = None, path=PUSHT_CONFIG):
  """`get_config(variant)` of the config file at `path` (a ConfigDict)."""
  return load_module(path).get_config(variant)
