"""This checkout's modules loaded by file path, for the scripts here that measure another checkout's dpjax (the one
on PYTHONPATH, which may predate them). A script's own folder is on sys.path, so they `import this_checkout`."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(path):
  """The module at `path` (relative to this checkout's root, e.g. "dpjax/hlo.py", or absolute), loaded under its
  file name."""
  path = ROOT / path
  module_spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module
