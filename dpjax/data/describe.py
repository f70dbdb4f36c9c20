"""What a zarr replay buffer holds, and an obs_keys line to start training from it.

    python -m dpjax.data.describe /data/my_robot.zarr          # a table, then --config.data.obs_keys=...
    python -m dpjax.data.describe /data/my_robot.zarr --json

Lists every array under data/ (per-step shape, dtype, camera or low-dim, and the value range of the low-dim ones)
and the episodes. Cameras (per-step [H, W, C]) are never decoded, so a buffer of gigabytes of images is described in
seconds; the low-dim arrays are read in full, with the checks training makes (NaN, missing chunks).
"""
import argparse
import json
import pathlib
import re
from typing import Sequence

import numpy as np
import zarr

from dpjax import cli
from dpjax.data import normalizer as normalizer_lib, obs_keys, replay


def describe(path) -> dict:
  """{"path", "num_episodes", "num_steps", "episode_length": {min, mean, max}, "arrays": {name: {per_step_shape,
  dtype, kind ("camera" | "low-dim"), and for low-dim min / max per value}}, "obs_keys", "action_key"}.

  `obs_keys` / `action_key` suggest a start: every camera on its own, every other low-dim array joined as `state`,
  and the action `action` (empty when there is none). Raises replay.DatasetError for a malformed buffer.
  """
  path = pathlib.Path(path)
  layout = replay.array_layout(path)
  numeric = {name for name, (_, dtype) in layout.arrays.items() if _is_numeric(dtype)}
  low_dim = sorted(name for name, (shape, _) in layout.arrays.items()
                   if name in numeric and not normalizer_lib.is_image(shape))
  buffer = replay.load_zarr_replay(path, low_dim, step_shapes={})
  lengths = buffer.episode_lengths
  arrays = {}
  for name, (shape, dtype) in sorted(layout.arrays.items()):
    entry = {"per_step_shape": list(shape), "dtype": dtype}
    if name in buffer.data:
      values = np.asarray(buffer.data[name], np.float64).reshape(buffer.num_steps, -1)
      entry.update(kind="low-dim", min=values.min(axis=0).tolist(), max=values.max(axis=0).tolist())
    else:
      entry["kind"] = "camera" if name in numeric else "other"   # other: text, objects (not trainable)
    arrays[name] = entry
  cameras = [name for name, entry in arrays.items() if entry["kind"] == "camera"]
  state = [name for name in low_dim if name != obs_keys.DEFAULT_ACTION_KEY]
  return {
      "path": str(path), "num_episodes": buffer.num_episodes, "num_steps": buffer.num_steps,
      "episode_length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
      "arrays": arrays,
      "obs_keys": ",".join([name if name.isidentifier() else f"{re.sub(r'[^0-9a-zA-Z_]', '_', name)}={name}"
                            for name in cameras] + ([f"state={'+'.join(state)}"] if state else [])),
      "action_key": obs_keys.DEFAULT_ACTION_KEY if obs_keys.DEFAULT_ACTION_KEY in low_dim else "",
  }


def _is_numeric(dtype: str) -> bool:
  """Whether an array of this dtype (zarr's name for it) holds numbers or booleans, the only values training takes."""
  try:
    return np.dtype(dtype).kind in "biuf"
  except TypeError:
    return False


def _range(entry: dict) -> str:
  """Smallest and largest value over the array's per-step values (per value in the JSON)."""
  return f"{min(entry['min']):.4g} .. {max(entry['max']):.4g}"


def format_table(description: dict) -> str:
  length = description["episode_length"]
  lines = [f"{description['path']}: {description['num_episodes']} episodes, {description['num_steps']:,} steps "
           f"(episode length {length['min']}-{length['max']}, mean {length['mean']:.1f})",
           f"{'array':<24} {'per-step shape':<16} {'dtype':<9} {'kind':<8} range"]
  for name, entry in description["arrays"].items():
    value_range = _range(entry) if entry["kind"] == "low-dim" else "-"
    lines.append(f"{name:<24} {str(tuple(entry['per_step_shape'])):<16} {entry['dtype']:<9} {entry['kind']:<8} "
                 f"{value_range}")
  if description["obs_keys"]:
    action = description["action_key"] or "<the action array>"
    variant = ":image" if any(e["kind"] == "camera" for e in description["arrays"].values()) else ""
    lines.append(f"\nTo start: python -m dpjax.train --config=configs/replay.py{variant}"
                 f" --config.data.path={description['path']} --config.data.obs_keys={description['obs_keys']} "
                 f"--config.data.action_key={action}  (dpjax/data/obs_keys.py: join, slice, rename)")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(prog="python -m dpjax.data.describe", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("path", help="zarr replay buffer (the folder holding data/ and meta/)")
  parser.add_argument("--json", action="store_true", help="print the description as JSON")
  args = parser.parse_args(argv)
  with cli.errors_as_one_line("dpjax.data.describe", (replay.DatasetError, zarr.errors.BaseZarrError, OSError)):
    description = describe(args.path)
  print(json.dumps(description, indent=1) if args.json else format_table(description))
  return description


if __name__ == "__main__":
  main()
