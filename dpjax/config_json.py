"""A run's own `config.json` as a config file: `python -m dpjax.train --config=RUN/config.json --workdir=RUN`.

config_flags runs a config file as Python, which JSON is not (`true`, `null`); `dpjax.cli` points it at this
module's `get_config` instead, with the JSON path as the config string. Overrides work as with configs/*.py.
"""
import importlib.util
import json
import pathlib

import ml_collections


def from_json_tree(tree):
  """The config a `ConfigDict.to_json` tree was written from: dicts become ConfigDicts and lists tuples (the config
  files write every sequence as a tuple, JSON has only lists), so the types overrides are checked against match."""
  if isinstance(tree, dict):
    return ml_collections.ConfigDict({k: from_json_tree(v) for k, v in tree.items()})
  if isinstance(tree, list):
    return tuple(from_json_tree(v) for v in tree)
  return tree


# Fields renamed since older runs wrote their config.json: old dotted path -> new dotted path.
RENAMED = {"train.eval_every": "train.rollout_every", "train.eval_episodes": "train.rollout_episodes",
           "eval": "rollout", "diffusion.num_train_steps": "diffusion.num_diffusion_steps"}


def upgrade(tree: dict) -> dict:
  """An older run's config tree with renamed fields moved to their current names."""
  for old, new in RENAMED.items():
    *old_parents, old_leaf = old.split(".")
    *new_parents, new_leaf = new.split(".")
    parent = tree
    for name in old_parents:
      parent = parent.get(name, {})
    if old_leaf in parent:
      target = tree
      for name in new_parents:
        target = target.setdefault(name, {})
      target[new_leaf] = parent.pop(old_leaf)
  return tree


def with_defaults(tree: dict, defaults: dict) -> dict:
  """`tree` over `defaults`: fields an older run did not have yet get today's default for its variant."""
  merged = dict(defaults)
  for key, value in tree.items():
    merged[key] = with_defaults(value, defaults[key]) if isinstance(value, dict) and isinstance(
        defaults.get(key), dict) else value
  return merged


def variant_defaults(variant: str | None) -> dict:
  """configs/pusht.py:<variant> as a plain dict ({} when the file or the variant is not there)."""
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "pusht.py"
  if not path.exists():
    return {}
  spec = importlib.util.spec_from_file_location("pusht_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  try:
    return json.loads(module.get_config(variant if variant != "lowdim" else None).to_json())
  except ValueError:
    return {}


def get_config(path):
  tree = upgrade(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
  return from_json_tree(with_defaults(tree, variant_defaults(tree.get("variant"))))
