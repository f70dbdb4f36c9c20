"""Zarr replay buffer (the original Diffusion Policy layout), read into memory once.

Layout (zarr format 2):
    data/<key>          [N, ...] one row per environment step, episodes concatenated
    meta/episode_ends   int [E]  exclusive end step of each episode; strictly increasing, last == N

Everything is validated where it enters: a malformed file fails here with a `DatasetError` that names
the file, the problem and the fix, instead of as a shape error deep inside a jitted train step.
"""
import dataclasses
import logging
import pathlib
from typing import Mapping, Sequence

import numcodecs
import numpy as np
import zarr

# Per-step shapes of the Push-T keys; checked when present so a wrong file fails at load time.
PUSHT_STEP_SHAPES = {
    "action": (2,),
    "state": (5,),
    "keypoint": (9, 2),
    "img": (96, 96, 3),
    "n_contacts": (1,),
}
# Rows converted per slice when loading images, so the float32 copy never exists in full (2.8 GB for Push-T).
_IMAGE_ROWS_PER_READ = 161 * 4


class DatasetError(ValueError):
  """The replay buffer on disk is malformed."""


@dataclasses.dataclass(frozen=True)
class ReplayBuffer:
  """In-memory replay buffer.

  Attributes:
    data: key -> [N, ...] arrays; float32 low-dim data, uint8 images.
    episode_ends: int64 [E], exclusive end step of each episode.
  """
  data: dict[str, np.ndarray]
  episode_ends: np.ndarray

  @property
  def num_episodes(self) -> int:
    return int(self.episode_ends.shape[0])

  @property
  def num_steps(self) -> int:
    return int(self.episode_ends[-1]) if self.num_episodes else 0

  @property
  def episode_lengths(self) -> np.ndarray:
    """int64 [E]."""
    return np.diff(self.episode_ends, prepend=0).astype(np.int64)

  def episode_slice(self, i: int) -> slice:
    """Steps of episode `i` as a slice into every `data` array."""
    if not -self.num_episodes <= i < self.num_episodes:
      raise IndexError(f"episode {i} out of range for {self.num_episodes} episodes")
    i %= self.num_episodes
    start = int(self.episode_ends[i - 1]) if i > 0 else 0
    return slice(start, int(self.episode_ends[i]))


def _fail(path, problem: str, fix: str) -> DatasetError:
  return DatasetError(f"{path}: {problem}. {fix}")


def _open_group(path: pathlib.Path) -> zarr.Group:
  if not path.exists():
    raise _fail(path, "does not exist", "Check config.data.path / $DPJAX_PUSHT_ZARR.")
  try:
    root = zarr.open_group(str(path), mode="r")
  except (zarr.errors.GroupNotFoundError, FileNotFoundError, ValueError) as error:
    raise _fail(path, f"is not a zarr group ({error})",
                "Point at the folder that holds data/ and meta/ "
                "(e.g. .../pusht/pusht_cchi_v7_replay.zarr).") from error
  for name, kind in (("data", zarr.Group), ("meta", zarr.Group)):
    if name not in root or not isinstance(root[name], kind):
      raise _fail(path, f"has no '{name}' group (found {sorted(root.keys())})",
                  "Expected the Diffusion Policy replay-buffer layout data/<key>, meta/episode_ends.")
  if "episode_ends" not in root["meta"] or not isinstance(root["meta"]["episode_ends"], zarr.Array):
    raise _fail(path, "has no 'meta/episode_ends' array",
                "Expected the Diffusion Policy replay-buffer layout data/<key>, meta/episode_ends.")
  return root


def _codec_missing(path: pathlib.Path, name: str, error: Exception) -> DatasetError:
  return _fail(path, f"{name} is compressed with a codec this install lacks ({error})",
               "Install and register it (the original's cached image buffers use imagecodecs' JPEG 2000: pip install "
               "imagecodecs, then imagecodecs.numcodecs.register_codecs()), or re-save the array with blosc.")


def _array_names(path: pathlib.Path, group: zarr.Group) -> list[str]:
  """Names of the arrays in `group` (listing parses every array's metadata, codecs included)."""
  try:
    return sorted(group.array_keys())
  except numcodecs.errors.UnknownCodecError as error:
    raise _codec_missing(path, "an array under data/", error) from error


def _open_arrays(path: pathlib.Path, group: zarr.Group, keys: Sequence[str]) -> dict[str, zarr.Array]:
  """{key: data/<key>}, each opened from its own metadata: an array not asked for is not parsed, so an image array
  in a codec this install lacks does not stop low-dim training."""
  arrays, missing = {}, []
  for key in keys:
    try:
      array = group[key]
    except KeyError:
      array = None
    except numcodecs.errors.UnknownCodecError as error:
      raise _codec_missing(path, f"data/{key}", error) from error
    if isinstance(array, zarr.Array):
      arrays[key] = array
    else:
      missing.append(key)
  if missing:
    try:
      available = _array_names(path, group)
    except DatasetError:
      available = "not listed: an array's codec is not installed"
    raise _fail(path, f"missing key(s) {missing} under data/ (available: {available})",
                "Name arrays this file has (config.data.obs_keys / action_key), or use the Push-T replay buffer.")
  return arrays


def _read(path: pathlib.Path, name: str, array: zarr.Array, rows: slice = slice(None)) -> np.ndarray:
  """Reads rows of one array; decode failures become a DatasetError naming the array."""
  try:
    return np.asarray(array[rows])
  except (RuntimeError, ValueError, TypeError, OSError, zarr.errors.BaseZarrError) as error:
    _quiet_abandoned_chunk_reads()
    raise _fail(path, f"array '{name}' could not be decoded, a chunk is corrupt or truncated "
                f"({type(error).__name__}: {error})",
                "Re-download or re-copy the dataset (python -m dpjax.data.download).") from error


def _drop_abandoned_zarr_task(record: logging.LogRecord) -> bool:
  message = record.getMessage()
  return not (message.startswith("Task was destroyed but it is pending") and "zarr" in message)


def _quiet_abandoned_chunk_reads() -> None:
  """After one chunk fails to decode, zarr's reads of the other chunks are left pending on its event loop, and
  asyncio logs each as "Task was destroyed but it is pending!" when the program exits: hundreds of lines after the
  one that names the damage. Drops exactly those records."""
  asyncio_logger = logging.getLogger("asyncio")
  if _drop_abandoned_zarr_task not in asyncio_logger.filters:
    asyncio_logger.addFilter(_drop_abandoned_zarr_task)


def _check_episode_ends(path: pathlib.Path, episode_ends: np.ndarray) -> np.ndarray:
  if episode_ends.ndim != 1 or episode_ends.size == 0 or not np.issubdtype(episode_ends.dtype, np.integer):
    raise _fail(path, f"meta/episode_ends must be a non-empty 1-D integer array, got shape "
                f"{episode_ends.shape} dtype {episode_ends.dtype}", "Rewrite it with write_zarr_replay.")
  if episode_ends[0] <= 0 or np.any(np.diff(episode_ends) <= 0):
    bad = int(np.argmax(np.diff(episode_ends, prepend=0) <= 0))
    raise _fail(path, f"meta/episode_ends must be strictly increasing and positive; entry {bad} is "
                f"{int(episode_ends[bad])} after {int(episode_ends[bad - 1]) if bad else 0}",
                "Each entry is the exclusive end step of one episode; rewrite it with write_zarr_replay.")
  return episode_ends.astype(np.int64)


def _load_image(path: pathlib.Path, name: str, array: zarr.Array) -> np.ndarray:
  """uint8 [N, H, W, C] from an array stored as uint8 or as integral floats in [0, 255]."""
  if array.dtype == np.uint8:
    return _read(path, name, array)
  out = np.empty(array.shape, np.uint8)
  for start in range(0, array.shape[0], _IMAGE_ROWS_PER_READ):
    rows = slice(start, min(start + _IMAGE_ROWS_PER_READ, array.shape[0]))
    block = _read(path, name, array, rows)
    # Exact integers are required so the uint8 copy is lossless (NaN fails both tests too).
    if not (np.all(block >= 0) and np.all(block <= 255) and np.all(block == np.round(block))):
      raise _fail(path, f"array '{name}' rows {rows.start}:{rows.stop} are not integral values in "
                  "[0, 255]", "Arrays of 3-D steps are read as camera images [H, W, C], which must be stored as uint8 "
                  "or as floats holding whole numbers 0..255; for low-dim values, store the array as [N, D].")
    out[rows] = block
  return out


@dataclasses.dataclass(frozen=True)
class ArrayLayout:
  """A replay buffer's arrays as its metadata describes them (nothing decoded but meta/episode_ends).

  Attributes:
    episode_ends: int64 [E].
    arrays: name under data/ -> (per-step shape, dtype name).
  """
  episode_ends: np.ndarray
  arrays: dict[str, tuple[tuple[int, ...], str]]


def array_layout(path) -> ArrayLayout:
  """The arrays under data/ and the episodes of a zarr replay buffer; DatasetError for a malformed one."""
  path = pathlib.Path(path)
  root = _open_group(path)
  episode_ends = _check_episode_ends(path, _read(path, "meta/episode_ends", root["meta"]["episode_ends"]))
  opened = _open_arrays(path, root["data"], _array_names(path, root["data"]))
  arrays = {key: (tuple(array.shape[1:]), str(array.dtype)) for key, array in opened.items()}
  if not arrays:
    raise _fail(path, "has no arrays under data/", "Write one array per recorded quantity, one row per step.")
  return ArrayLayout(episode_ends=episode_ends, arrays=arrays)


def load_zarr_replay(path, keys: Sequence[str],
                     step_shapes: Mapping[str, tuple[int, ...]] = PUSHT_STEP_SHAPES) -> ReplayBuffer:
  """Loads `keys` of a zarr replay buffer into memory.

  Args:
    path: the `.zarr` folder.
    keys: names under `data/` to load; others are never read (Push-T low-dim skips the 2.8 GB images).
    step_shapes: expected per-step shape for known keys; keys not listed are not shape-checked.

  Returns:
    ReplayBuffer with float32 low-dim arrays and uint8 images (keys with 3 per-step dims).

  Raises:
    DatasetError: malformed file (missing group/key, wrong shapes, bad episode_ends, NaN, corrupt or
      missing chunk).
  """
  path = pathlib.Path(path)
  root = _open_group(path)
  opened = _open_arrays(path, root["data"], keys)
  episode_ends = _check_episode_ends(path, _read(path, "meta/episode_ends", root["meta"]["episode_ends"]))
  num_steps = int(episode_ends[-1])
  # Shapes come from metadata, so these checks cost nothing and run before any data is decoded.
  for key in keys:
    shape = tuple(opened[key].shape)
    if not shape or shape[0] != num_steps:
      raise _fail(path, f"data/{key} has {shape[0] if shape else 'no'} rows but meta/episode_ends[-1] "
                  f"is {num_steps}", "Every data array needs exactly one row per step; the file is "
                  "inconsistent (truncated copy?).")
    if key in step_shapes and shape[1:] != tuple(step_shapes[key]):
      raise _fail(path, f"data/{key} has per-step shape {shape[1:]}, expected {tuple(step_shapes[key])}",
                  "This does not look like the Push-T replay buffer (pusht_cchi_v7_replay.zarr); for your own "
                  "data use configs/replay.py (config.data.dataset='replay').")
    # zarr silently returns the fill value for an absent chunk file; a partial copy must not load as zeros.
    if opened[key].nchunks_initialized != opened[key].nchunks:
      raise _fail(path, f"data/{key} has {opened[key].nchunks - opened[key].nchunks_initialized} of "
                  f"{opened[key].nchunks} chunk files missing", "The copy is incomplete; re-copy or "
                  "re-download the dataset (python -m dpjax.data.download). (zarr 3 leaves out chunks that hold only "
                  "the fill value unless written with config={'write_empty_chunks': True}.)")
  data = {}
  for key in keys:
    array = opened[key]
    if array.ndim == 4:
      data[key] = _load_image(path, f"data/{key}", array)
      continue
    data[key] = finite_float32(path, f"data/{key}", _read(path, f"data/{key}", array),
                               "Clean or re-download the dataset; non-finite values would poison the normalizer.")
  return ReplayBuffer(data=data, episode_ends=episode_ends)


def finite_float32(path, name: str, values: np.ndarray, fix: str) -> np.ndarray:
  """Floating arrays as float32, rejecting NaN/inf with a DatasetError naming the first bad step."""
  if not np.issubdtype(values.dtype, np.floating):
    return values
  values = values.astype(np.float32, copy=False)
  if not np.all(np.isfinite(values)):
    row = int(np.argwhere(~np.isfinite(values))[0, 0])
    raise _fail(path, f"{name} contains NaN/inf (first at step {row})", fix)
  return values


def write_zarr_replay(path, data: Mapping[str, np.ndarray], episode_ends, chunk_steps: int = 161) -> None:
  """Writes a replay buffer in the same layout (zarr format 2, blosc/zstd), overwriting `path`.

  Args:
    path: the `.zarr` folder to create.
    data: key -> [N, ...] arrays.
    episode_ends: int [E], exclusive end step of each episode (last == N).
    chunk_steps: rows per chunk along the step axis (161 in the official file).
  """
  episode_ends = np.asarray(episode_ends, dtype=np.int64)
  compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
  root = zarr.open_group(str(path), mode="w", zarr_format=2)
  data_group = root.create_group("data")
  for key, values in data.items():
    values = np.asarray(values)
    array = data_group.create_array(key, shape=values.shape, dtype=values.dtype,
                                    chunks=(min(chunk_steps, max(values.shape[0], 1)),) + values.shape[1:],
                                    compressors=compressor, config={"write_empty_chunks": True})
    array[...] = values   # every chunk, all-zero ones too: load_zarr_replay treats a missing chunk as a bad copy
  meta = root.create_group("meta")
  ends = meta.create_array("episode_ends", shape=episode_ends.shape, dtype=np.int64,
                           chunks=(max(episode_ends.shape[0], 1),), compressors=compressor)
  ends[...] = episode_ends
