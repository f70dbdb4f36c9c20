"""A run's own `config.json` as a config file: `python -m dpjax.train --config=RUN/config.json --workdir=RUN`.

config_flags runs a config file as Python, which JSON is not (`true`, `null`); `dpjax.cli` points it at this
module's `get_config` instead, with the JSON path as the config string. Overrides work as with configs/*.py.
"""
import json
import pathlib

import ml_collections

from dpjax import config_files


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
# Fields removed since (dotted path -> the one value older runs could hold, which is now built in).
REMOVED = {"policy.transformer.time_as_cond": True}


def upgrade(tree: dict) -> dict:
  """An older run's config tree with renamed fields moved to their current names and removed fields dropped
  (a removed field holding another value than today's built-in one is a ValueError: that run cannot be rebuilt)."""
  for path, built_in in REMOVED.items():
    *parents, leaf = path.split(".")
    parent = tree
    for name in parents:
      parent = parent.get(name, {})
    if leaf in parent and parent.pop(leaf) != built_in:
      raise ValueError(f"this config sets {path} to another value than {built_in!r}, the only one dpjax supports.")
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
  if not config_files.PUSHT_CONFIG.exists():
    return {}
  try:
    return json.loads(config_files.get_config(variant if variant != "lowdim" else None).to_json())
  except ValueError:
    return {}


def get_config(path):
  tree = upgrade(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
  return from_json_tree(with_defaults(tree, variant_defaults(tree.get("variant"))))
