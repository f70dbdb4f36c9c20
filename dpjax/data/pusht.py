"""Push-T observations and actions from the replay buffer, in the original datasets' layout."""
import numpy as np

from dpjax.data import replay as replay_lib

OBS_TYPES = ("lowdim", "image")
# Per-step observation shapes of each observation type (what the policies and the simulator exchange).
OBS_SHAPES = {"lowdim": {"low_dim": (20,)}, "image": {"image": (96, 96, 3), "agent_pos": (2,)}}
# zarr keys each observation type needs; low-dim never touches the 2.8 GB image array.
PUSHT_KEYS = {
    "lowdim": ("keypoint", "state", "action"),
    "image": ("img", "state", "action"),
}


def check_obs_type(obs_type: str) -> None:
  if obs_type not in OBS_TYPES:
    raise ValueError(f"Unknown Push-T obs_type {obs_type!r}; choose from {OBS_TYPES}.")


def pusht_arrays(replay: replay_lib.ReplayBuffer,
                 obs_type: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Per-step observation arrays and actions.

  Args:
    replay: buffer loaded with at least `PUSHT_KEYS[obs_type]`.
    obs_type: "lowdim" or "image".

  Returns:
    obs: lowdim -> {"low_dim": float32 [N, 20]} = 9 keypoints (x, y) flattened, then agent (x, y), the
      order of the original PushTLowdimDataset; image -> {"image": uint8 [N, 96, 96, 3],
      "agent_pos": float32 [N, 2]}.
    action: float32 [N, 2].
  """
  check_obs_type(obs_type)
  missing = [k for k in PUSHT_KEYS[obs_type] if k not in replay.data]
  if missing:
    raise ValueError(f"Replay buffer lacks {missing} needed for obs_type {obs_type!r}; load it with "
                     f"keys=PUSHT_KEYS[{obs_type!r}].")
  num_steps = replay.num_steps
  agent_pos = replay.data["state"][:, :2].astype(np.float32)
  action = replay.data["action"].astype(np.float32)
  if obs_type == "lowdim":
    keypoint = replay.data["keypoint"].reshape(num_steps, -1).astype(np.float32)
    obs = {"low_dim": np.concatenate([keypoint, agent_pos], axis=-1)}
  else:
    image = replay.data["img"]
    if image.dtype != np.uint8:
      raise ValueError(f"Push-T images must be uint8 (load_zarr_replay converts them), got {image.dtype}.")
    obs = {"image": image, "agent_pos": agent_pos}
  return obs, action
