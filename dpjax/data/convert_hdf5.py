"""robomimic HDF5 demonstrations (the paper's Lift, Can, Square, Transport, ToolHang) -> a zarr replay buffer.

    python -m dpjax.data.convert_hdf5 --hdf5 square/ph/image.hdf5 --out data/square_ph_image.zarr
    python -m dpjax.data.describe data/square_ph_image.zarr        # then train with configs/replay.py

robomimic layout: `data/demo_<i>/actions` [T, Da] and `data/demo_<i>/obs/<key>` [T, ...] per demonstration, and
optionally `mask/<name>` listing demonstration names (e.g. "train", "valid"). Every obs key becomes `data/<key>` and
the actions `data/action`, demonstrations in the order of their number (demo_2 before demo_10), as the original
Diffusion Policy's `_convert_robomimic_to_replay`; values are kept as stored (float arrays as float32, images uint8).
With `--abs_action` (robomimic's `*_abs.hdf5` files: per arm position, axis-angle rotation, gripper) the actions
are written with the 6-D rotation instead, [N, 10] per arm, as the original's `abs_action` runs; a robot maps the
policy's outputs back with `dpjax.data.rotation.abs_actions_from_6d`.

The buffer is written to a temporary folder beside `--out` and renamed into place when complete, so an interrupted
conversion leaves no partial buffer. Needs h5py (`pip install -e ".[hdf5]"`).
"""
import argparse
import pathlib
import re
from typing import Sequence

import numpy as np

from dpjax import cli, files
from dpjax.data import replay, rotation

_DEMO = re.compile(r"^demo_(\d+)$")


class ConversionError(ValueError):
  """The HDF5 file is not in the robomimic layout, or asks for something it lacks."""


def _fail(path, problem: str, fix: str) -> ConversionError:
  return ConversionError(f"{path}: {problem}. {fix}")


def _demo_names(path, file, mask: str) -> list[str]:
  """Demonstration group names, in the order of their number; those listed in mask/<mask> when given."""
  if "data" not in file:
    raise _fail(path, f"has no 'data' group (found {sorted(file.keys())})",
                "Expected robomimic's layout: data/demo_<i>/{actions, obs/<key>}.")
  names = sorted((n for n in file["data"].keys() if _DEMO.match(n)), key=lambda n: int(_DEMO.match(n)[1]))
  if not names:
    raise _fail(path, "has no data/demo_<i> groups", "Expected robomimic's layout: data/demo_<i>/{actions, obs}.")
  if mask:
    masks = sorted(file["mask"].keys()) if "mask" in file else []
    if mask not in masks:
      raise _fail(path, f"has no mask/{mask} (masks: {masks})", "Choose one of them with --mask, or none for all.")
    listed = {n.decode() if isinstance(n, bytes) else str(n) for n in file["mask"][mask][()]}
    names = [n for n in names if n in listed]
    if not names:
      raise _fail(path, f"mask/{mask} lists none of the data/demo_<i> groups",
                  "Choose another --mask, or none for all.")
  return names


def read_robomimic(path, keys: Sequence[str] = (), mask: str = "") -> tuple[dict[str, np.ndarray], np.ndarray]:
  """({data key: [N, ...]} with "action", episode_ends int64 [E]) of a robomimic HDF5 file.

  Args:
    path: the .hdf5 file.
    keys: obs keys to convert (default: every key of the first demonstration's obs group).
    mask: convert only the demonstrations listed in mask/<mask> (default: all).
  """
  import h5py  # pylint: disable=g-import-not-at-top  # optional extra: hdf5
  path = pathlib.Path(path)
  if not path.is_file():
    raise _fail(path, "does not exist", "Give the robomimic .hdf5 file with --hdf5.")
  with h5py.File(path, "r") as file:
    names = _demo_names(path, file, mask)
    first = file["data"][names[0]]
    if not keys:
      keys = sorted(first["obs"].keys()) if "obs" in first else []
    keys = list(keys)
    if not keys:
      raise _fail(path, f"data/{names[0]} has no obs group", "Expected data/demo_<i>/obs/<key> arrays.")
    if "action" in keys:
      raise _fail(path, "has an obs key named 'action'", "It would clash with the actions; leave it out with --keys.")
    parts = {key: [] for key in ["action"] + keys}
    lengths = []
    for name in names:
      demo = file["data"][name]
      if "actions" not in demo:
        raise _fail(path, f"data/{name} has no 'actions'", "Every demonstration needs its actions [T, Da].")
      length = demo["actions"].shape[0]
      parts["action"].append(np.asarray(demo["actions"], np.float32))
      for key in keys:
        if "obs" not in demo or key not in demo["obs"]:
          found = sorted(demo["obs"].keys()) if "obs" in demo else []
          raise _fail(path, f"data/{name}/obs has no '{key}' (it has {found})",
                      "Convert only keys every demonstration has, with --keys.")
        values = np.asarray(demo["obs"][key])
        if values.shape[0] != length:
          raise _fail(path, f"data/{name}/obs/{key} has {values.shape[0]} steps but its actions {length}",
                      "Every obs array needs one row per action.")
        parts[key].append(values if values.dtype == np.uint8 else values.astype(np.float32))
      if length == 0:
        raise _fail(path, f"data/{name} has no steps", "Leave empty demonstrations out with --mask.")
      lengths.append(length)
  data = {}
  for key, arrays in parts.items():
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
      raise _fail(path, f"'{key}' has per-step shapes {sorted(shapes)} across demonstrations",
                  "Every demonstration must record it with the same shape.")
    data[key] = np.concatenate(arrays)
  return data, np.cumsum(lengths, dtype=np.int64)


def actions_with_6d_rotation(path, actions: np.ndarray) -> np.ndarray:
  """Absolute actions [N, 7k] -> [N, 10k] (`rotation.abs_actions_to_6d`), or a ConversionError if they are not."""
  if actions.shape[-1] % rotation.ARM_7D:
    raise _fail(path, f"has {actions.shape[-1]}-D actions, not absolute ones ({rotation.ARM_7D} per arm: position, "
                "axis-angle, gripper)", "--abs_action is for robomimic's *_abs.hdf5 files; leave it out for these.")
  return rotation.abs_actions_to_6d(actions)


def convert(hdf5_path, out, keys: Sequence[str] = (), mask: str = "", abs_action: bool = False) -> pathlib.Path:
  """Writes the replay buffer of `read_robomimic(hdf5_path, keys, mask)` to `out` (which must not exist); with
  `abs_action`, its actions with the 6-D rotation (`actions_with_6d_rotation`)."""
  out = files.new_folder(out)   # before the work; `staged_folder` checks again
  data, episode_ends = read_robomimic(hdf5_path, keys, mask)
  if abs_action:
    data["action"] = actions_with_6d_rotation(hdf5_path, data["action"])
  with files.staged_folder(out) as folder:
    replay.write_zarr_replay(folder, data, episode_ends)
  return out


def main(argv: Sequence[str] | None = None) -> pathlib.Path:
  parser = argparse.ArgumentParser(prog="python -m dpjax.data.convert_hdf5", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--hdf5", required=True, help="robomimic .hdf5 file")
  parser.add_argument("--out", required=True, help="the .zarr replay buffer to write (must not exist)")
  parser.add_argument("--keys", default="", help="comma-separated obs keys (default: all)")
  parser.add_argument("--mask", default="", help="only the demonstrations of mask/<MASK>, e.g. train (default: all)")
  parser.add_argument("--abs_action", action="store_true",
                      help="absolute actions (position, axis-angle, gripper per arm) -> the 6-D rotation, 10 per arm")
  args = parser.parse_args(argv)
  with cli.errors_as_one_line("dpjax.data.convert_hdf5", (ConversionError, OSError)):
    out = convert(args.hdf5, args.out, [k for k in args.keys.split(",") if k], args.mask, args.abs_action)
  print(f"Wrote {out}; see what it holds and a command to train on it: python -m dpjax.data.describe {out}")
  return out


if __name__ == "__main__":
  main()
