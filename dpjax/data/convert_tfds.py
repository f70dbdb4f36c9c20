"""Writes a zarr replay buffer (e.g. Push-T) as a TFDS dataset in the RLDS layout, array_record files.

    python -m dpjax.data.convert_tfds --zarr .../pusht_cchi_v7_replay.zarr --out ~/data/tfds [--name pusht]
    # -> ~/data/tfds/pusht/1.0.0
    python -m dpjax.train --config=configs/pusht.py --config.data.source=tfds \
        --config.data.path=~/data/tfds/pusht/1.0.0

One example per episode, in zarr episode order, one split "train" (dpjax makes its own train/val split):

    steps: Dataset({
        observation: {state: float32 [5], keypoint: float32 [9, 2], image: Image uint8 [96, 96, 3] (PNG),
                      n_contacts: float32 [1]},      # whichever the zarr has
        action: float32 [2],
        is_first, is_last: bool                     # first / last step of the episode
        is_terminal: bool                           # always False: demonstrations end by time, not state
    })
    episode_metadata: {episode_index: int64}       # position of the episode in the zarr

dataset_info metadata: num_episodes, num_steps, source_path, source_format and `dpjax_key_map`
(replay key -> step path), which `tfds_source` uses to map the steps back. Images are PNG (lossless), so
reading the TFDS dataset gives back exactly the arrays `load_zarr_replay` gives.

Needs only tensorflow-datasets (`pip install 'dpjax[tfds]'`), not TensorFlow: PNGs are encoded with PIL.
"""
import argparse
import io
import pathlib
import tempfile
from typing import Iterator, Mapping, Sequence

import numpy as np
import zarr
from flax import traverse_util

from dpjax import cli
from dpjax.data import replay, tfds_source

DATASET_VERSION = "1.0.0"
DESCRIPTION = "Zarr replay buffer converted by dpjax.data.convert_tfds to the RLDS layout."


def rlds_key_map(keys: Sequence[str]) -> dict[str, str]:
  """replay key -> RLDS step path: action stays, img -> observation/image, others observation/<key>."""
  return {key: tfds_source.DEFAULT_KEY_MAP.get(key, f"observation/{key}") for key in keys}


def step_feature_spec(data: Mapping[str, np.ndarray], key_map: Mapping[str, str]) -> dict:
  """Nested spec of one RLDS step for replay arrays `data` (key -> [N, ...])."""
  tfds = tfds_source.import_tfds()
  flat = {"is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_}
  for key, values in data.items():
    if values.ndim == 4:
      flat[key_map[key]] = tfds.features.Image(shape=values.shape[1:], dtype=np.uint8,
                                               encoding_format="png")
    else:
      flat[key_map[key]] = tfds.features.Tensor(shape=values.shape[1:], dtype=values.dtype)
  return traverse_util.unflatten_dict(flat, sep="/")


def _png(image: np.ndarray) -> bytes:
  """Lossless PNG bytes of a uint8 [H, W, C] image (PIL, so TensorFlow is not needed; C = 1 as a grey PNG)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return buffer.getvalue()


def episode_examples(buffer: replay.ReplayBuffer,
                     key_map: Mapping[str, str]) -> Iterator[tuple[str, dict]]:
  """(key, RLDS episode) for every episode of `buffer`, in order."""
  for episode in range(buffer.num_episodes):
    rows = buffer.episode_slice(episode)
    length = rows.stop - rows.start
    steps = []
    for t in range(length):
      flat = {"is_first": t == 0, "is_last": t == length - 1, "is_terminal": False}
      for key, values in buffer.data.items():
        value = values[rows.start + t]
        flat[key_map[key]] = _png(value) if value.ndim == 3 else value
      steps.append(traverse_util.unflatten_dict(flat, sep="/"))
    yield f"{episode:08d}", {"steps": steps, "episode_metadata": {tfds_source.EPISODE_INDEX: episode}}


def _make_builder(name: str, buffer: replay.ReplayBuffer, key_map: Mapping[str, str], metadata: dict,
                  data_dir: pathlib.Path):
  """A GeneratorBasedBuilder for `buffer`, defined here so tfds stays an optional import."""
  tfds = tfds_source.import_tfds()

  class ReplayRlds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """RLDS episodes of one replay buffer."""
    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "Converted by dpjax.data.convert_tfds."}
    # Nothing is downloaded, so no checksums file is looked up next to this code. (tfds 4.9.10's lookup
    # for a class inside an installed package needs importlib_resources, absent on Python >= 3.11.)
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description=DESCRIPTION,
          features=tfds.features.FeaturesDict({
              "steps": tfds.features.Dataset(step_feature_spec(buffer.data, key_map)),
              "episode_metadata": {tfds_source.EPISODE_INDEX: np.int64},
          }),
          metadata=tfds.core.MetadataDict(metadata),
          # Keep zarr episode order, so episode ids (and the train/val split) mean the same episodes.
          disable_shuffling=True,
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield from episode_examples(buffer, key_map)

  ReplayRlds.name = name
  return ReplayRlds(data_dir=str(data_dir), file_format="array_record")


def zarr_keys(path) -> list[str]:
  """Names of the arrays under data/ of a zarr replay buffer."""
  path = pathlib.Path(path)
  if not path.exists():
    raise replay.DatasetError(f"{path}: does not exist. Pass the .zarr folder with --zarr.")
  try:
    return sorted(zarr.open_group(str(path), mode="r")["data"].array_keys())
  except (KeyError, FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError) as error:
    raise replay.DatasetError(f"{path}: is not a zarr replay buffer with a data/ group ({error}). "
                              "Pass the .zarr folder (holding data/ and meta/) with --zarr.") from error


def convert_zarr_to_tfds(zarr_path, out_dir, name: str = "pusht", keys: Sequence[str] | None = None,
                         key_map: Mapping[str, str] | None = None) -> pathlib.Path:
  """Converts a zarr replay buffer to an RLDS TFDS dataset.

  Args:
    zarr_path: the `.zarr` folder (data/<key>, meta/episode_ends).
    out_dir: TFDS data_dir; the dataset goes to out_dir/name/1.0.0, which must not exist yet.
    name: TFDS dataset name (letters, digits, underscores); "pusht" also checks Push-T's per-step shapes.
    keys: replay keys to convert; default those of `key_map`, else all of data/. Must include "action".
    key_map: replay key -> "/"-separated step path; default `rlds_key_map(keys)`. Stored in the
      metadata, so the reader maps the steps back without being told.

  Returns:
    The version folder, to use as config.data.path.

  Raises:
    DatasetError: bad zarr; FileExistsError: the dataset was already written.
  """
  zarr_path, out_dir = pathlib.Path(zarr_path), pathlib.Path(out_dir).expanduser()
  keys = list(keys or key_map or zarr_keys(zarr_path))
  if "action" not in keys:
    raise replay.DatasetError(f"{zarr_path}: keys {keys} lack 'action'; RLDS steps need one.")
  version_dir = out_dir / name / DATASET_VERSION
  if version_dir.exists():
    raise FileExistsError(f"{version_dir} already exists; delete it or choose another --out / --name.")
  # Push-T's per-step shapes are checked for the dataset named after it; any other name is your own data.
  buffer = replay.load_zarr_replay(zarr_path, keys, replay.PUSHT_STEP_SHAPES if name == "pusht" else {})
  key_map = dict(key_map) if key_map else rlds_key_map(keys)
  shared = sorted({path for key, path in key_map.items() if list(key_map.values()).count(path) > 1})
  if shared:   # two arrays written to one step path: the later would silently replace the earlier
    raise ValueError(f"key_map {key_map} writes several arrays to {shared}; give each its own step path "
                     "(convert_zarr_to_tfds(..., key_map=...)), or leave one out with --keys.")
  unmapped = [k for k in keys if k not in key_map]
  if unmapped:
    raise ValueError(f"key_map {key_map} has no step path for key(s) {unmapped}.")
  metadata = {
      "num_episodes": buffer.num_episodes,
      "num_steps": buffer.num_steps,
      "source_path": str(zarr_path.resolve()),
      "source_format": "diffusion_policy zarr replay buffer",
      tfds_source.METADATA_KEY_MAP: key_map,
  }
  builder = _make_builder(name, buffer, key_map, metadata, out_dir)
  with tempfile.TemporaryDirectory() as download_dir:  # Nothing is downloaded; keep out_dir clean.
    builder.download_and_prepare(download_dir=download_dir)
  return pathlib.Path(builder.data_dir)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m dpjax.data.convert_tfds", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--zarr", required=True, help="zarr replay buffer (.zarr folder)")
  parser.add_argument("--out", required=True, help="TFDS data_dir to write into")
  parser.add_argument("--name", default="pusht", help="TFDS dataset name (default: pusht)")
  parser.add_argument("--keys", default="", help="comma-separated data/ keys (default: all)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> pathlib.Path:
  args = parse_args(argv)
  keys = [k for k in args.keys.split(",") if k]
  with cli.errors_as_one_line("dpjax.data.convert_tfds", (ValueError, OSError, replay.DatasetError)):
    path = convert_zarr_to_tfds(args.zarr, args.out, args.name, keys or None)
  print(f"Wrote {path}\nTrain with: --config.data.source=tfds --config.data.path={path}")
  return path


if __name__ == "__main__":
  main()
