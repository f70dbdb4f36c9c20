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


# Fields added since whose default differs from what older runs did (dotted path -> the value they ran with): an
# older run's config.json gets this value, not today's default, so that it resumes as it started.
ADDED = {"optim.flat_moments": False, "rollout.policy_seed_per_checkpoint": False}


_ABSENT = object()


def _pop(tree: dict, dotted: str):
  """Removes the field at a dotted path from a nested dict and returns its value (_ABSENT if it is not there)."""
  *parents, leaf = dotted.split(".")
  for name in parents:
    tree = tree.get(name, {})
  return tree.pop(leaf, _ABSENT)


def upgrade(tree: dict) -> dict:
  """An older run's config tree with renamed fields moved to their current names, removed fields dropped (a removed
  field holding another value than today's built-in one is a ValueError: that run cannot be rebuilt) and added fields
  set to what the run did before they existed."""
  for path, built_in in REMOVED.items():
    value = _pop(tree, path)
    if value is not _ABSENT and value != built_in:
      raise ValueError(f"this config sets {path}={value!r}, but dpjax builds only {built_in!r} (the field is gone); "
                       "that run's network cannot be rebuilt: delete the field to train the supported one.")
  for old, new in RENAMED.items():
    value = _pop(tree, old)
    if value is not _ABSENT:
      *parents, leaf = new.split(".")
      _parent(tree, parents)[leaf] = value
  for path, value in ADDED.items():
    *parents, leaf = path.split(".")
    _parent(tree, parents).setdefault(leaf, value)
  return tree


def _parent(tree: dict, names) -> dict:
  """The nested dict at `names` in `tree`, made where missing."""
  for name in names:
    tree = tree.setdefault(name, {})
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
