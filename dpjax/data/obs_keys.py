"""Which replay-buffer arrays make the policy's observations and action: `config.data.obs_keys` / `action_key`.

    "low_dim=keypoint+state[:2]"              one observation, 18 keypoint values then the agent's x, y (Push-T)
    "wrist=wrist_rgb,state=eef_pos+gripper"   a camera and one low-dim observation of two arrays
    "action[:7]"                              an action of the first 7 values of data/action

An observation entry is `NAME=TERM[+TERM...]`, or a bare `TERM` named after its array. A term is an array under
`data/` with an optional slice `[a:b]` (or index `[i]`) of its per-step values, flattened in C order. An array with
per-step shape [H, W, C] is a camera: alone in its entry and never sliced. Low-dim terms are concatenated in the
order written. Everything is checked before training starts, with errors that name the entry and the fix.
"""
import dataclasses
import re
from typing import Mapping

import numpy as np

from dpjax.data import normalizer as normalizer_lib

# The action array's name in the original Diffusion Policy's replay buffers (Push-T, robomimic, real robots).
DEFAULT_ACTION_KEY = "action"
_TERM = re.compile(r"^(?P<key>[A-Za-z_][\w.\-]*)(?:\[(?P<start>-?\d*)(?P<colon>:)?(?P<stop>-?\d*)\])?$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class Term:
  """One array of the replay buffer, optionally a slice of its flattened per-step values.

  Attributes:
    key: array name under `data/`.
    columns: (start, stop) Python slice bounds (None = open), or None for every value.
    text: the term as written (for error messages).
  """
  key: str
  columns: tuple[int | None, int | None] | None
  text: str


# observation name -> its terms, in the order written.
ObsKeys = dict[str, tuple[Term, ...]]


def _parse_term(text: str, field: str) -> Term:
  match = _TERM.match(text)
  if not match:
    raise ValueError(f"{field}: {text!r} is not an array name with an optional slice, e.g. state or state[:2].")
  if match["start"] is None and match["colon"] is None and match["stop"] is None:
    return Term(match["key"], None, text)
  start = int(match["start"]) if match["start"] else None
  stop = int(match["stop"]) if match["stop"] else None
  if not match["colon"]:   # an index [i]: one value
    if start is None:
      raise ValueError(f"{field}: {text!r} has an empty index; write e.g. {match['key']}[0] or {match['key']}[:2].")
    stop = start + 1 if start != -1 else None
  return Term(match["key"], (start, stop), text)


def parse_obs_keys(text: str) -> ObsKeys:
  """`config.data.obs_keys` -> {name: (Term, ...)}."""
  field = "config.data.obs_keys"
  entries = [entry.strip() for entry in (text or "").split(",")]
  if not any(entries):
    raise ValueError(f"{field} is empty; name the observation arrays, e.g. --{field}=state=eef_pos+gripper,wrist=rgb")
  obs_keys = {}
  for entry in entries:
    if not entry:
      raise ValueError(f"{field}={text!r} has an empty entry; separate entries with single commas.")
    name, sep, terms_text = entry.partition("=")
    terms = tuple(_parse_term(term.strip(), field) for term in (terms_text if sep else entry).split("+"))
    name = name.strip() if sep else terms[0].key
    if not sep and len(terms) > 1:
      raise ValueError(f"{field}: entry {entry!r} joins several arrays; name it, e.g. state={entry}.")
    if not _NAME.match(name):
      raise ValueError(f"{field}: observation name {name!r} must be a Python identifier (letters, digits, _).")
    if name in obs_keys:
      raise ValueError(f"{field}: observation {name!r} is named twice; give each entry its own name.")
    obs_keys[name] = terms
  return obs_keys


def parse_action_key(text: str) -> tuple[Term, ...]:
  """`config.data.action_key` ("action[:7]", "eef_delta+gripper_cmd"; empty: `DEFAULT_ACTION_KEY`) -> (Term, ...)."""
  field = "config.data.action_key"
  text = (text or "").strip() or DEFAULT_ACTION_KEY
  if "=" in text or "," in text:
    raise ValueError(f"{field}={text!r}: the action is one array or a sum of arrays (a+b), without NAME= or commas.")
  return tuple(_parse_term(term.strip(), field) for term in text.split("+"))


def format_obs_keys(obs_keys: ObsKeys) -> str:
  """The `config.data.obs_keys` text of parsed keys (every entry named): `parse_obs_keys`' inverse."""
  return ",".join(f"{name}={'+'.join(t.text for t in terms)}" for name, terms in obs_keys.items())


def replay_keys(obs_keys: ObsKeys, action_terms: tuple[Term, ...]) -> tuple[str, ...]:
  """The `data/` arrays to load, sorted (no other array is read)."""
  return tuple(sorted({t.key for terms in obs_keys.values() for t in terms} | {t.key for t in action_terms}))


def _low_dim_values(data: Mapping[str, np.ndarray], term: Term, field: str) -> np.ndarray:
  """float32 [N, D] of one low-dim term."""
  values = np.asarray(data[term.key])
  if values.dtype == np.uint8 and values.ndim == 3:
    raise ValueError(f"{field}: data/{term.key} is uint8 [N, H, W] = {values.shape}, a grey camera? Store it as "
                     "[N, H, W, 1] to train it as a camera, or as float values to use it as low-dim.")
  flat = values.reshape(values.shape[0], -1)
  if term.columns is not None:
    start, stop = term.columns
    size = flat.shape[1]
    if any(bound is not None and not -size <= bound <= size for bound in (start, stop)):
      raise ValueError(f"{field}: {term.text!r} reaches past data/{term.key}, which has {size} values per step; "
                       f"choose a slice inside [0, {size}).")
    flat = flat[:, start:stop]
    if flat.shape[1] == 0:
      raise ValueError(f"{field}: {term.text!r} selects no values of data/{term.key}, which has "
                       f"{values[0].size} per step; choose a slice inside [0, {values[0].size}).")
  return flat.astype(np.float32)


def _camera(data: Mapping[str, np.ndarray], name: str, terms: tuple[Term, ...]) -> np.ndarray | None:
  """uint8 [N, H, W, C] when the entry is a camera, None when it is low-dim; errors for mixed entries."""
  cameras = [t for t in terms if normalizer_lib.is_image(np.shape(data[t.key])[1:])]
  if not cameras:
    return None
  if len(terms) > 1 or cameras[0].columns is not None:
    raise ValueError(f"config.data.obs_keys: {name!r} joins or slices the camera array data/{cameras[0].key}; give "
                     f"each camera its own unsliced entry, e.g. {cameras[0].key}={cameras[0].key}.")
  images = data[cameras[0].key]
  height, width, channels = images.shape[1:]
  if channels > 4 and height <= 4:
    raise ValueError(f"data/{cameras[0].key} has per-step shape {images.shape[1:]}, which looks channel-first; "
                     "store camera images channel-last, as [N, H, W, C] uint8.")
  if images.dtype != np.uint8:
    raise ValueError(f"data/{cameras[0].key} holds {images.dtype} images; cameras must be uint8 (load_zarr_replay "
                     "converts integral floats in [0, 255]).")
  return images


def build_obs(data: Mapping[str, np.ndarray], obs_keys: ObsKeys) -> dict[str, np.ndarray]:
  """The policy's observations from raw arrays: a replay buffer's [N, ...] steps, or a robot's current readings
  with a leading batch axis (e.g. {"eef_pos": [1, 3], "wrist_rgb": [1, H, W, 3]}), built exactly as in training.

  Returns:
    name -> uint8 [N, H, W, C] (a camera) or float32 [N, D] (its terms' values, concatenated).
  """
  missing = [key for key in replay_keys(obs_keys, ()) if key not in data]
  if missing:
    raise ValueError(f"The arrays lack {missing} named by config.data.obs_keys; they have {sorted(data)}.")
  leading = {key: np.shape(data[key])[:1] for key in replay_keys(obs_keys, ())}
  if len(set(leading.values())) > 1 or () in leading.values():
    raise ValueError(f"build_obs takes arrays with one leading batch (or step) axis of the same length, e.g. "
                     f"{{key: value[None]}} for one robot's readings; got leading shapes {leading}.")
  obs = {}
  for name, terms in obs_keys.items():
    images = _camera(data, name, terms)
    obs[name] = images if images is not None else np.concatenate(
        [_low_dim_values(data, t, "config.data.obs_keys") for t in terms], axis=-1)
  return obs


def build_action(data: Mapping[str, np.ndarray], action_terms: tuple[Term, ...]) -> np.ndarray:
  """float32 [N, Da]: the action terms' values, concatenated."""
  missing = sorted({t.key for t in action_terms} - set(data))
  if missing:
    raise ValueError(f"The arrays lack {missing} named by config.data.action_key; they have {sorted(data)}.")
  for term in action_terms:
    if normalizer_lib.is_image(np.shape(data[term.key])[1:]):
      raise ValueError(f"config.data.action_key: data/{term.key} is an image array, not an action.")
  return np.concatenate([_low_dim_values(data, t, "config.data.action_key") for t in action_terms], axis=-1)


def build_arrays(data: Mapping[str, np.ndarray], obs_keys: ObsKeys,
                 action_terms: tuple[Term, ...]) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(`build_obs`, `build_action`) of a replay buffer's arrays {name: [N, ...]}."""
  return build_obs(data, obs_keys), build_action(data, action_terms)
