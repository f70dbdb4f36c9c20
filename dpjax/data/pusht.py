"""Push-T observations and actions from the replay buffer, in the original datasets' layout."""
import numpy as np

from dpjax.data import obs_keys as obs_keys_lib
from dpjax.data import replay as replay_lib

OBS_TYPES = ("lowdim", "image")
# Per-step observation shapes of each observation type (what the policies and the simulator exchange).
OBS_SHAPES = {"lowdim": {"low_dim": (20,)}, "image": {"image": (96, 96, 3), "agent_pos": (2,)}}
ACTION_DIM = 2
# Each observation type's arrays, in `config.data.obs_keys` syntax (dpjax/data/obs_keys.py): low-dim is the 9
# keypoints (x, y) flattened, then the agent's x, y (the original PushTLowdimDataset's order); image is the camera
# and the agent's x, y.
OBS_KEYS = {"lowdim": "low_dim=keypoint+state[:2]", "image": "image=img,agent_pos=state[:2]"}


def check_obs_type(obs_type: str) -> None:
  if obs_type not in OBS_TYPES:
    raise ValueError(f"Unknown Push-T obs_type {obs_type!r}; choose from {OBS_TYPES}.")


def obs_keys(obs_type: str) -> obs_keys_lib.ObsKeys:
  check_obs_type(obs_type)
  return obs_keys_lib.parse_obs_keys(OBS_KEYS[obs_type])


# zarr keys each observation type needs; low-dim never touches the 2.8 GB image array.
PUSHT_KEYS = {t: obs_keys_lib.replay_keys(obs_keys(t), obs_keys_lib.parse_action_key("")) for t in OBS_TYPES}


def pusht_arrays(replay: replay_lib.ReplayBuffer,
                 obs_type: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Per-step observation arrays and actions.

  Args:
    replay: buffer loaded with at least `PUSHT_KEYS[obs_type]`.
    obs_type: "lowdim" or "image".

  Returns:
    obs: lowdim -> {"low_dim": float32 [N, 20]}; image -> {"image": uint8 [N, 96, 96, 3],
      "agent_pos": float32 [N, 2]} (`OBS_KEYS`).
    action: float32 [N, 2].
  """
  return obs_keys_lib.build_arrays(replay.data, obs_keys(obs_type), obs_keys_lib.parse_action_key(""))


# The arrays the simulator records at every step, as the dataset names them (`dpjax/envs/pusht.py`, obs_type
# "arrays"), so any observation built from the dataset by `config.data.obs_keys` is built the same way in rollouts.
SIMULATOR_ARRAYS = ("img", "keypoint", "n_contacts", "state")


def obs_keys_for_shapes(obs_shapes) -> obs_keys_lib.ObsKeys:
  """The preset whose observations have these shapes (a policy saved without its run's config); else a ValueError."""
  obs_shapes = {key: tuple(shape) for key, shape in dict(obs_shapes).items()}
  for obs_type, shapes in OBS_SHAPES.items():
    if obs_shapes == shapes:
      return obs_keys(obs_type)
  raise ValueError(f"This policy observes {obs_shapes}, not {OBS_SHAPES['lowdim']} or {OBS_SHAPES['image']}: give "
                   "the observation keys it was trained with (its run's config.data.obs_keys).")


def check_env_compatible(obs_shapes, action_dim: int, keys: obs_keys_lib.ObsKeys) -> None:
  """Raises unless a policy with these per-step observation shapes and action size, its observations built by
  `keys`, can act in the Push-T simulator (which records `SIMULATOR_ARRAYS` and takes 2-D actions)."""
  obs_shapes = {key: tuple(shape) for key, shape in dict(obs_shapes).items()}
  needed = list(obs_keys_lib.replay_keys(keys, ()))
  unknown = [key for key in needed if key not in SIMULATOR_ARRAYS]
  if unknown or int(action_dim) != ACTION_DIM:
    raise ValueError(f"This policy observes {needed} and acts in {action_dim} dims; the Push-T simulator records "
                     f"{list(SIMULATOR_ARRAYS)} and takes 2-D actions.")
  examples = {key: np.zeros((1, *replay_lib.PUSHT_STEP_SHAPES[key]), np.uint8 if key == "img" else np.float32)
              for key in needed}
  built = {name: values.shape[1:] for name, values in obs_keys_lib.build_obs(examples, keys).items()}
  if built != obs_shapes:
    raise ValueError(f"The observation keys build {built} from the simulator's arrays, but the policy observes "
                     f"{obs_shapes}: give the keys it was trained with.")
