"""Demonstrations: zarr replay buffer -> sequence windows -> grain batches, plus the normalizer.

Push-T by default; any replay buffer of the original layout with config.data.dataset="replay" and the arrays named
by config.data.obs_keys / action_key (`obs_keys`).

    bundle = build_data(config)
    it = make_train_iterator(bundle, config, batch_size=config.train.batch_size)
    batch = next(it)   # raw numpy: {"obs": {...}, "action": float32 [B, T, Da]}

Submodules (zarr, grain) are imported inside the functions so `import dpjax.data` stays cheap.
"""
import dataclasses
import pathlib
from typing import Any


@dataclasses.dataclass(frozen=True)
class DataBundle:
  """Everything training needs from the data.

  Attributes:
    train_source: `windows.SequenceSource` over the training episodes.
    val_source: same over the validation episodes; None when there are none.
    normalizer: pytree {"obs": {key: {"scale", "offset"}}, "action": {"scale", "offset"}}.
    obs_shapes: per-step observation shapes, e.g. {"low_dim": (20,)} or
      {"image": (96, 96, 3), "agent_pos": (2,)}.
    obs_keys: how the observations were built from the buffer's arrays (`obs_keys.parse_obs_keys`), so a
      rollout builds them from the simulator's the same way.
    action_dim: Da.
    num_train_episodes / num_val_episodes: sizes of the split.
  """
  train_source: Any
  val_source: Any
  normalizer: dict
  obs_shapes: dict[str, tuple[int, ...]]
  obs_keys: dict
  action_dim: int
  num_train_episodes: int
  num_val_episodes: int


DATASETS = ("pusht", "replay")


def data_layout(data_config):
  """(observation keys, action terms, expected per-step shapes of known arrays) of `config.data` (`obs_keys`).

  "pusht": the arrays of config.data.obs_type unless config.data.obs_keys names others, checked against Push-T's
  shapes; "replay": any replay buffer, config.data.obs_keys required, no shape expectations.
  """
  from dpjax.data import obs_keys, pusht, replay  # pylint: disable=g-import-not-at-top
  dataset = data_config.get("dataset", "pusht")
  if dataset not in DATASETS:
    raise ValueError(f"config.data.dataset must be one of {DATASETS}, got {dataset!r}.")
  text = data_config.get("obs_keys", "")
  if dataset == "pusht":
    pusht.check_obs_type(data_config.obs_type)
    text = text or pusht.OBS_KEYS[data_config.obs_type]
  elif not text:
    raise ValueError("config.data.dataset='replay' needs the observation arrays named, e.g. "
                     "--config.data.obs_keys=state=eef_pos+gripper,wrist=wrist_rgb (dpjax/data/obs_keys.py).")
  step_shapes = replay.PUSHT_STEP_SHAPES if dataset == "pusht" else {}
  return obs_keys.parse_obs_keys(text), obs_keys.parse_action_key(data_config.get("action_key", "")), step_shapes


def run_obs_keys(run_dir):
  """The observation keys a training run was built from (its config.json), so a robot's raw readings become the
  policy's observations as in training: `obs_keys.build_obs(readings, run_obs_keys(run_dir))`."""
  from dpjax import config_json  # pylint: disable=g-import-not-at-top
  return data_layout(config_json.get_config(pathlib.Path(run_dir) / "config.json").data)[0]


def build_data(config) -> DataBundle:
  """Loads the replay buffer named by `config.data` and builds windows, split and normalizer.

  Reads config.data.{dataset, source, path, obs_type, obs_keys, action_key, val_ratio, max_train_episodes,
  split_seed, normalizer_fit} and config.{horizon, n_obs_steps, n_action_steps}; source "tfds" also the optional
  config.data.{tfds_name, tfds_split, tfds_key_map} (see `tfds_source`).
  """
  # pylint: disable=g-import-not-at-top
  from dpjax.data import locate, normalizer as normalizer_lib, obs_keys, replay, split, windows
  data_config = config.data
  if data_config.source not in ("zarr", "tfds"):
    raise ValueError(f"config.data.source must be 'zarr' or 'tfds', got {data_config.source!r}")
  if data_config.normalizer_fit not in ("all", "train"):
    raise ValueError("config.data.normalizer_fit must be 'all' or 'train', "
                     f"got {data_config.normalizer_fit!r}")
  obs_names, action_terms, step_shapes = data_layout(data_config)
  keys = obs_keys.replay_keys(obs_names, action_terms)
  is_pusht = data_config.get("dataset", "pusht") == "pusht"
  if not is_pusht and not data_config.path:
    raise ValueError("config.data.dataset='replay' reads your own replay buffer: give --config.data.path=/path/to/"
                     "demonstrations.zarr (or a TFDS folder with --config.data.source=tfds).")

  if data_config.source == "tfds":
    from dpjax.data import tfds_source  # Optional extra: tensorflow-datasets.
    buffer = tfds_source.load_from_config(data_config, keys, step_shapes)
  else:
    # Push-T is searched for (`locate`); your own buffer is where config.data.path says.
    path = locate.resolve_dataset_path(data_config.path) if is_pusht else pathlib.Path(data_config.path).expanduser()
    buffer = replay.load_zarr_replay(path, keys, step_shapes)
  obs, action = obs_keys.build_arrays(buffer.data, obs_names, action_terms)
  train_ids, val_ids = split.split_episodes(buffer.num_episodes, data_config.val_ratio,
                                            data_config.max_train_episodes, data_config.split_seed)
  if data_config.normalizer_fit == "all":
    # The paper fits on every episode, validation included.
    normalizer = normalizer_lib.fit_normalizer(obs, action)
  else:
    mask = split.episode_step_mask(buffer.episode_ends, train_ids)
    normalizer = normalizer_lib.fit_normalizer({k: v[mask] for k, v in obs.items()}, action[mask])

  def source(ids):
    return windows.SequenceSource.from_episodes(obs, action, buffer.episode_ends, ids, config.horizon,
                                                config.n_obs_steps, config.n_action_steps)

  return DataBundle(
      train_source=source(train_ids),
      val_source=source(val_ids) if len(val_ids) else None,
      normalizer=normalizer,
      obs_shapes={key: tuple(value.shape[1:]) for key, value in obs.items()},
      obs_keys=obs_names,
      action_dim=int(action.shape[-1]),
      num_train_episodes=int(len(train_ids)),
      num_val_episodes=int(len(val_ids)),
  )


def make_train_iterator(bundle: DataBundle, config, batch_size: int, yield_window_ids: bool = False):
  """Checkpointable grain iterator of raw training batches (or of their window ids), seeded by config.seed.

  Args:
    batch_size: global batch size (all processes); must be divisible by jax.process_count().
    yield_window_ids: yield int64 [B / P] window ids for the device-resident path (`device_data`).
  """
  from dpjax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_train_iterator(bundle.train_source, batch_size, int(config.seed),
                                      prefetch=int(config.data.prefetch),
                                      worker_count=int(config.data.worker_count),
                                      yield_window_ids=yield_window_ids)


__all__ = ["DATASETS", "DataBundle", "build_data", "data_layout", "make_train_iterator", "run_obs_keys"]
