"""A run's own `config.json` as a config file: `python -m dpjax.train --config=RUN/config.json --workdir=RUN`.

config_flags runs a config file as Python, which JSON is not (`true`, `null`); `dpjax.cli` points it at this
module's `get_config` instead, with the JSON path as the config string. Overrides work as with configs/*.py.
"""
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


def get_config(path):
  return from_json_tree(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
