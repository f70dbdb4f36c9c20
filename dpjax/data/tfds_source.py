"""TFDS datasets in the RLDS layout, read into the same in-memory `ReplayBuffer` as the zarr path.

RLDS layout: one example per episode, `steps` a nested dataset of per-step dicts

    {"observation": {...}, "action": ..., "is_first": bool, "is_last": bool, "is_terminal": bool, ...}

Episodes are read through `tfds.data_source` (array_record random access, numpy decoding, no TensorFlow),
concatenated in order and given `episode_ends`, so `pusht_arrays`, `split_episodes`, the windows, the
normalizer and the grain pipeline are exactly those of the zarr path.

Replay keys are found in a step by a key map, replay key -> "/"-separated step path. Push-T's
(`DEFAULT_KEY_MAP`, also what `convert_tfds` writes):

    action   <- action                  float32 [2]
    state    <- observation/state       float32 [5]
    keypoint <- observation/keypoint    float32 [9, 2]
    img      <- observation/image       uint8 [96, 96, 3] (tfds.features.Image)

The map is taken from, in order: the `key_map` argument (config.data.tfds_key_map), the dataset's own
metadata (`dpjax_key_map`, written by the converter), `DEFAULT_KEY_MAP`.

tensorflow_datasets is an optional extra (`pip install 'dpjax[tfds]'`); it is imported only here.
"""
import pathlib
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
from flax import traverse_util

from dpjax.data import replay

DEFAULT_KEY_MAP = {
    "action": "action",
    "state": "observation/state",
    "keypoint": "observation/keypoint",
    "img": "observation/image",
    "n_contacts": "observation/n_contacts",
}
# dataset_info metadata written by `convert_tfds`.
METADATA_KEY_MAP = "dpjax_key_map"
# Episode metadata holding the source episode number; episodes are read in its order when present.
EPISODE_INDEX = "episode_index"
_RLDS_FLAGS = ("is_first", "is_last")


def import_tfds():
  """`tensorflow_datasets`, or an ImportError that says how to install it."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("config.data.source='tfds' needs tensorflow-datasets, an optional extra: "
                      "pip install 'dpjax[tfds]' (TensorFlow itself is not needed).") from error
  return tfds


def _fail(path, problem: str, fix: str) -> replay.DatasetError:
  return replay.DatasetError(f"{path}: {problem}. {fix}")


def resolve_tfds_dir(path, name: str = "") -> pathlib.Path:
  """The version folder (holding dataset_info.json) of a TFDS dataset.

  Args:
    path: the version folder itself (.../pusht/1.0.0), the dataset folder (.../pusht, newest version
      taken) or a TFDS data_dir holding it (.../tfds, with `name` or a single dataset inside).
    name: dataset name inside a data_dir; "" accepts a data_dir that holds exactly one dataset.

  Raises:
    DatasetError: nothing TFDS-like is there.
  """
  path = pathlib.Path(path).expanduser()
  fix = ("Point config.data.path at the folder written by `python -m dpjax.data.convert_tfds` "
         "(e.g. .../tfds/pusht/1.0.0) or at its data_dir with config.data.tfds_name set.")
  if not str(path) or str(path) == ".":
    raise _fail(path, "config.data.path is empty (the TFDS source has no default location)", fix)
  if not path.is_dir():
    raise _fail(path, "does not exist or is not a folder", fix)
  if (path / "dataset_info.json").is_file():
    return path
  if name:
    if not (path / name).is_dir():
      found = sorted(p.name for p in path.iterdir() if p.is_dir())
      raise _fail(path, f"has no dataset {name!r} (found {found})", fix)
    path = path / name
  versions = _version_dirs(path)
  if not versions:
    datasets = [p for p in path.iterdir() if p.is_dir() and _version_dirs(p)]
    if len(datasets) == 1:
      return _version_dirs(datasets[0])[-1]
    problem = ("holds several TFDS datasets " + str(sorted(p.name for p in datasets)) if datasets
               else "holds no TFDS dataset (no */dataset_info.json)")
    raise _fail(path, problem, fix)
  return versions[-1]


def _version_dirs(path: pathlib.Path) -> list[pathlib.Path]:
  """Subfolders named like a version (1.0.0) that hold dataset_info.json, oldest first."""
  found = []
  for child in path.iterdir():
    parts = child.name.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and (child / "dataset_info.json").is_file():
      found.append((tuple(int(p) for p in parts), child))
  return [child for _, child in sorted(found)]


def flat_features(features) -> dict[str, Any]:
  """"/"-joined path -> leaf feature of a (nested) tfds FeaturesDict."""
  tfds = import_tfds()
  flat = {}
  for key, feature in features.items():
    if isinstance(feature, tfds.features.FeaturesDict):
      flat.update({f"{key}/{sub}": leaf for sub, leaf in flat_features(feature).items()})
    else:
      flat[key] = feature
  return flat


def step_features(builder) -> dict[str, Any]:
  """Flattened features of one RLDS step, e.g. {"observation/image": Image(...), "action": ...}."""
  tfds = import_tfds()
  steps = builder.info.features["steps"] if "steps" in builder.info.features.keys() else None
  if not isinstance(steps, tfds.features.Dataset):
    raise _fail(builder.data_dir, f"is not an RLDS dataset: its features have no 'steps' Dataset "
                f"(top-level features: {sorted(builder.info.features.keys())})",
                "Use an RLDS-layout TFDS dataset (one example per episode, steps = Dataset of dicts).")
  return flat_features(steps.feature)


def resolve_key_map(builder, key_map: Mapping[str, str] | None = None) -> dict[str, str]:
  """replay key -> step path: `key_map`, else the dataset's metadata, else `DEFAULT_KEY_MAP`."""
  if key_map:
    return dict(key_map)
  metadata = builder.info.metadata or {}
  if METADATA_KEY_MAP in metadata:
    return dict(metadata[METADATA_KEY_MAP])
  return dict(DEFAULT_KEY_MAP)


def _check_features(path, features: Mapping[str, Any], key_map: Mapping[str, str], keys: Sequence[str],
                    step_shapes: Mapping[str, tuple[int, ...]]) -> None:
  """Every requested key maps to a step feature of the expected shape (from metadata, before reading)."""
  unmapped = [k for k in keys if k not in key_map]
  if unmapped:
    raise _fail(path, f"no RLDS step path is mapped to key(s) {unmapped} (key map: {dict(key_map)})",
                "Map it with config.data.tfds_key_map=<key>=<step path>; step paths: " + str(sorted(features)))
  for key in keys:
    step_path = key_map[key]
    if step_path not in features:
      raise _fail(path, f"key {key!r} maps to step path {step_path!r}, which the dataset lacks "
                  f"(step paths: {sorted(features)})",
                  f"Map it with config.data.tfds_key_map={key}=<step path that holds it>.")
    shape = tuple(features[step_path].shape)
    if key in step_shapes and shape != tuple(step_shapes[key]):
      raise _fail(path, f"step path {step_path!r} (key {key!r}) has per-step shape {shape}, expected "
                  f"{tuple(step_shapes[key])}", "This does not look like Push-T; check the dataset or "
                  "config.data.tfds_key_map.")


def _episode_arrays(path, episode: int, steps, step_paths: Sequence[str]) -> dict[str, np.ndarray]:
  """Stacks the wanted step paths of one episode: path -> [L, ...]."""
  rows = [traverse_util.flatten_dict(steps[t], sep="/") for t in range(len(steps))]
  arrays = {p: np.stack([np.asarray(row[p]) for row in rows]) for p in step_paths}
  for flag, position in zip(_RLDS_FLAGS, (0, -1)):
    if flag in arrays and not (arrays[flag][position] and arrays[flag].sum() == 1):
      raise _fail(path, f"episode {episode} has {flag} = {arrays[flag].astype(int).tolist()}; RLDS needs "
                  f"it true at step {position} only", "The dataset is not valid RLDS; re-convert it.")
  return arrays


def _as_replay_array(path, key: str, step_path: str, values: np.ndarray) -> np.ndarray:
  """float32 low-dim data (finite) or uint8 images, as `load_zarr_replay` returns them."""
  if values.ndim == 4:
    if values.dtype != np.uint8:
      raise _fail(path, f"image {step_path!r} (key {key!r}) has dtype {values.dtype}",
                  "Images must be uint8 (tfds.features.Image).")
    return values
  return replay.finite_float32(path, f"{step_path!r} (key {key!r})", values,
                               "Clean the dataset; non-finite values would poison the normalizer.")


def load_tfds_replay(path, keys: Sequence[str], *, name: str = "", split: str = "train",
                     key_map: Mapping[str, str] | None = None,
                     step_shapes: Mapping[str, tuple[int, ...]] = replay.PUSHT_STEP_SHAPES
                     ) -> replay.ReplayBuffer:
  """Loads `keys` of an RLDS TFDS dataset into memory, episodes concatenated.

  Args:
    path: TFDS dataset folder, see `resolve_tfds_dir`.
    keys: replay keys to load (e.g. `pusht.PUSHT_KEYS[obs_type]`); other step features are not decoded.
    name: dataset name when `path` is a data_dir holding several.
    split: TFDS split, slicing allowed ("train", "train[:50]"). dpjax makes its own train/val split.
    key_map: replay key -> "/"-separated step path; see the module docstring for the default.
    step_shapes: expected per-step shape of known replay keys.

  Returns:
    ReplayBuffer: data key -> [N, ...] (float32 low-dim, uint8 images), episode_ends int64 [E].

  Raises:
    DatasetError: not a TFDS/RLDS dataset, missing split or step path, wrong shapes, NaN, bad flags.
    ImportError: tensorflow-datasets is not installed.
  """
  tfds = import_tfds()
  version_dir = resolve_tfds_dir(path, name)
  try:
    builder = tfds.builder_from_directory(str(version_dir))
  except Exception as error:  # pylint: disable=broad-except  # tfds raises many kinds here.
    raise _fail(version_dir, f"could not be opened as a TFDS dataset ({type(error).__name__}: {error})",
                "Re-run python -m dpjax.data.convert_tfds, or check the folder.") from error
  features = step_features(builder)
  key_map = resolve_key_map(builder, key_map)
  _check_features(version_dir, features, key_map, keys, step_shapes)
  wanted = sorted({key_map[k] for k in keys} | {f for f in _RLDS_FLAGS if f in features})
  # Unwanted images etc. are left as raw bytes: low-dim training never decodes the camera.
  skipped = {p: tfds.decode.SkipDecoding() for p in features if p not in wanted}
  decoders = {"steps": traverse_util.unflatten_dict(skipped, sep="/")}
  try:
    source = builder.as_data_source(split=split, decoders=decoders)
  except Exception as error:  # pylint: disable=broad-except
    raise _fail(version_dir, f"split {split!r} could not be read ({type(error).__name__}: {error}); "
                f"splits: {sorted(builder.info.splits)}, file format: {builder.info.file_format}",
                "Choose an existing split (config.data.tfds_split) of an array_record dataset "
                "(random access needs array_record; re-convert tfrecord datasets).") from error

  has_index = ("episode_metadata" in builder.info.features.keys()
               and EPISODE_INDEX in builder.info.features["episode_metadata"].keys())
  episodes, order = [], []
  for i in range(len(source)):
    example = source[i]
    if len(example["steps"]) == 0:
      logging.warning("%s: skipping empty episode %d", version_dir, i)
      continue
    episodes.append(_episode_arrays(version_dir, i, example["steps"], wanted))
    # The converter records the zarr episode number, so the order survives any re-sharding.
    order.append(int(example["episode_metadata"][EPISODE_INDEX]) if has_index else i)
  if not episodes:
    raise _fail(version_dir, f"split {split!r} has no non-empty episode", "Choose another split.")
  episodes = [episodes[i] for i in np.argsort(order, kind="stable")]
  lengths = [len(next(iter(e.values()))) for e in episodes]
  data = {}
  for key in keys:
    step_path = key_map[key]
    values = np.concatenate([episode[step_path] for episode in episodes])
    data[key] = _as_replay_array(version_dir, key, step_path, values)
  return replay.ReplayBuffer(data=data, episode_ends=np.cumsum(lengths, dtype=np.int64))


def parse_key_map(text: str) -> dict[str, str] | None:
  """"img=observation/rgb,state=observation/state" -> {"img": "observation/rgb", ...}; "" -> None."""
  pairs = [item.strip() for item in (text or "").split(",") if item.strip()]
  key_map = {}
  for pair in pairs:
    key, sep, step_path = pair.partition("=")
    if not sep or not key.strip() or not step_path.strip():
      raise ValueError(f"config.data.tfds_key_map entry {pair!r} is not KEY=STEP_PATH; write e.g. "
                       "--config.data.tfds_key_map=img=observation/rgb,state=observation/state")
    key_map[key.strip()] = step_path.strip()
  return key_map or None


def load_from_config(data_config, keys: Sequence[str],
                     step_shapes: Mapping[str, tuple[int, ...]] = replay.PUSHT_STEP_SHAPES) -> replay.ReplayBuffer:
  """`load_tfds_replay` with config.data.{path, tfds_name, tfds_split, tfds_key_map}."""
  return load_tfds_replay(data_config.path, keys, name=data_config.get("tfds_name", ""),
                          split=data_config.get("tfds_split", "train"),
                          key_map=parse_key_map(data_config.get("tfds_key_map", "")), step_shapes=step_shapes)