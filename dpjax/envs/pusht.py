"""Push-T, faithful to the original Diffusion Policy environment (Chi et al., 2023).

The physics, drawing and coverage come from gym-pusht 0.1.8, whose simulator equals the original
`diffusion_policy.env.pusht.PushTEnv` (PD gains 100/20, 100 Hz simulation under 10 Hz control, zero damping,
friction 1, the original T inertia). Three things are ours, because gym-pusht differs from the original there:

- `reset(seed)` draws the start state with the original `np.random.RandomState(seed)` recipe; gym-pusht uses
  another generator, so its seed i is not demonstration i's start.
- Block placement order. The T rotates about its centre of gravity, not its origin, so setting the angle after the
  position moves the block. The original has both orders: `legacy=True` (position, then angle) is what the
  demonstrations were recorded with and what every original test config evaluates with (`legacy_test: True`);
  `reset(seed)` therefore places the seed's draw in that order, which reproduces demonstration i's first recorded
  state for seed i. `reset_to_state(state)` instead sets the angle first, so the block lands exactly on `state`
  (a recorded state is an actual pose); gym-pusht's `reset_to_state` uses the legacy order and misses it.
- The low-dim observation is the dataset's 9 block keypoints + agent position; gym-pusht offers the 8 T corners.

Coordinates are pixels of the 512 x 512 window; angles are radians.
"""
import os

# pygame must find a video driver at import time; "dummy" renders off-screen on headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import shapely.geometry  # noqa: E402
from gym_pusht.envs import pusht as gym_pusht_env  # noqa: E402

from dpjax.data.pusht import SIMULATOR_ARRAYS  # noqa: E402

WINDOW_SIZE = 512
SIM_HZ = 100
CONTROL_HZ = 10
SUCCESS_THRESHOLD = 0.95  # coverage above which the original counts (and ends) an episode as solved.
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # block x, y, angle of the green target T.
OBS_DIM = 20  # 9 keypoints (x, y) + agent (x, y).

# The 9 block keypoints in the block's own frame, pixels. The original `PymunkKeypointManager` samples them once by
# farthest-point sampling on the rendered T plus a uniform [0, 1) jitter, so they are not round numbers. Recovered
# from the real dataset (pusht_cchi_v7_replay.zarr): for every recorded step, R(-angle) @ (keypoint - block xy)
# with the recorded `state` and `keypoint`; the median over all 25,650 steps, rounded to 1e-5 px. The residual is
# float32 rounding (2e-5 px) on the median step. The recorded keypoints lead the recorded state slightly (they look
# like the pose of about one 10 ms physics substep later), so on steps where the block moves fast the residual grows
# to at most 0.3 x the keypoints' motion to the next step (max 2.05 px, on first steps of episodes whose reset
# pushes the block); tests/test_envs_pusht.py checks that bound on every recorded step.
BLOCK_KEYPOINTS = np.array([
    [9.26979, 90.04097],
    [-60.98347, -1.18673],
    [60.91276, -1.39336],
    [-0.27050, 25.54362],
    [-14.06493, 122.81586],
    [39.00274, 32.85740],
    [-39.96642, 32.72966],
    [-16.82434, 62.86318],
    [23.54146, -1.70029],
])


def seed_state(seed):
  """The original `PushTEnv.reset` start state for `seed` (legacy RandomState, kept for data compatibility).

  Returns:
    float64 [5]: agent x, y, block x, y, block angle.
  """
  rs = np.random.RandomState(seed=seed)
  return np.array([
      rs.randint(50, 450), rs.randint(50, 450),
      rs.randint(100, 400), rs.randint(100, 400),
      rs.randn() * 2 * np.pi - np.pi,
  ], dtype=np.float64)


def keypoints_from_state(state):
  """Block keypoints in window pixels.

  Args:
    state: [..., 5] agent x, y, block x, y, block angle.

  Returns:
    float64 [..., 9, 2].
  """
  state = np.asarray(state, dtype=np.float64)
  angle = state[..., 4, None]
  cos, sin = np.cos(angle), np.sin(angle)
  local_x, local_y = BLOCK_KEYPOINTS[:, 0], BLOCK_KEYPOINTS[:, 1]
  world_x = cos * local_x - sin * local_y + state[..., 2, None]
  world_y = sin * local_x + cos * local_y + state[..., 3, None]
  return np.stack([world_x, world_y], axis=-1)


def obs_from_state(state):
  """Low-dim observation, the dataset's order: 9 keypoints (x, y) flattened, then agent x, y.

  Args:
    state: [..., 5].

  Returns:
    float32 [..., 20].
  """
  state = np.asarray(state, dtype=np.float64)
  keypoints = keypoints_from_state(state).reshape(*state.shape[:-1], 18)
  return np.concatenate([keypoints, state[..., :2]], axis=-1).astype(np.float32)


def _tee_vertices():
  """The T's two rectangles in the block frame (as the original `add_tee`, scale 30, length 4): [2, 4, 2]."""
  scale, length = 30.0, 4.0
  bar = [(-length * scale / 2, scale), (length * scale / 2, scale), (length * scale / 2, 0), (-length * scale / 2, 0)]
  stem = [(-scale / 2, scale), (-scale / 2, length * scale), (scale / 2, length * scale), (scale / 2, scale)]
  return np.array([bar, stem])


def coverage_from_state(state):
  """Area(block T intersect goal T) / area(goal T) for a recorded or simulated state, with shapely as the original.

  Args:
    state: [5].

  Returns:
    float in [0, 1].
  """
  def tee_geometry(x, y, angle):
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    polygons = [shapely.geometry.Polygon(v @ rotation.T + [x, y]) for v in _tee_vertices()]
    return shapely.geometry.MultiPolygon(polygons)

  block = tee_geometry(*np.asarray(state, dtype=np.float64)[2:5])
  goal = tee_geometry(*GOAL_POSE)
  return goal.intersection(block).area / goal.area


def reward_from_coverage(coverage):
  """The original reward: coverage scaled so that the success threshold already earns 1."""
  return float(np.clip(coverage / SUCCESS_THRESHOLD, 0.0, 1.0))


class PushTEnv:
  """One Push-T environment.

  Observations:
    obs_type="lowdim": float32 [20], see `obs_from_state`.
    obs_type="image": {"image": uint8 [S, S, 3], "agent_pos": float32 [2]}, S = render_size (96 in the dataset).
    obs_type="arrays": the dataset's arrays named in `arrays` (`dpjax.data.pusht.SIMULATOR_ARRAYS`): "keypoint"
      float32 [9, 2], "state" float32 [5], "n_contacts" float32 [1] (the last step's contacts; 0 after a reset),
      "img" uint8 [S, S, 3] (rendered only when asked for); a policy's observations are built from them by its
      run's `config.data.obs_keys`, as from the dataset.
  Actions: float [2], the agent's target position in window pixels.
  """

  def __init__(self, obs_type="lowdim", render_size=96, arrays=("keypoint", "n_contacts", "state")):
    if obs_type not in ("lowdim", "image", "arrays"):
      raise ValueError(f"obs_type must be 'lowdim', 'image' or 'arrays', got {obs_type!r}")
    unknown = sorted(set(arrays) - set(SIMULATOR_ARRAYS))
    if unknown:
      raise ValueError(f"The simulator records {list(SIMULATOR_ARRAYS)}, not {unknown}.")
    self.obs_type = obs_type
    self.render_size = render_size
    self.arrays = tuple(arrays)
    self._n_contacts = 0
    # Only gym-pusht's simulator is used; its observation and reset paths are bypassed (see module docstring).
    self._sim = gym_pusht_env.PushTEnv(obs_type="state", render_mode="rgb_array")
    self._sim._setup()  # pylint: disable=protected-access

  @property
  def state(self):
    """float64 [5]: agent x, y, block x, y, block angle wrapped to [0, 2 pi) as the dataset records it."""
    sim = self._sim
    return np.array([*sim.agent.position, *sim.block.position, sim.block.angle % (2 * np.pi)], dtype=np.float64)

  def reset(self, seed):
    """Resets to the original (legacy_test=True) start for `seed`; demonstration i started from seed i."""
    return self._place(seed_state(seed), angle_first=False)

  def reset_to_state(self, state):
    """Starts a fresh space with the agent and block exactly at `state` [5] (angle set before position)."""
    return self._place(state, angle_first=True)

  def _place(self, state, angle_first):
    state = np.asarray(state, dtype=np.float64).tolist()
    sim = self._sim
    sim._setup()  # pylint: disable=protected-access
    sim._last_action = None  # pylint: disable=protected-access
    self._n_contacts = 0
    sim.agent.position = state[:2]
    if angle_first:
      sim.block.angle = state[4]
      sim.block.position = state[2:4]
    else:
      sim.block.position = state[2:4]
      sim.block.angle = state[4]
    # The original steps once so that the new pose takes effect (contacts are resolved before the first action).
    sim.space.step(1.0 / SIM_HZ)
    return self._obs()

  def step(self, action):
    """Advances 0.1 s: 10 simulator steps of PD control towards `action` [2].

    Returns:
      obs, reward (float), terminated (coverage > 0.95, as the original's `done`),
      info {"coverage", "success", "state" [5], "n_contacts"}.
    """
    action = np.asarray(action, dtype=np.float64).reshape(2)
    _, _, _, _, sim_info = self._sim.step(action)
    coverage = float(sim_info["coverage"])
    success = coverage > SUCCESS_THRESHOLD
    self._n_contacts = sim_info["n_contacts"]
    info = {"coverage": coverage, "success": success, "state": self.state, "n_contacts": sim_info["n_contacts"]}
    return self._obs(), reward_from_coverage(coverage), success, info

  def render(self, size=256, draw_action=True):
    """RGB frame with the goal T, for videos.

    Args:
      size: output side in pixels (the 512 px window is resized with OpenCV, as the original does).
      draw_action: mark the latest commanded target with a red cross.

    Returns:
      uint8 [size, size, 3].
    """
    sim = self._sim
    screen = sim._draw()  # pylint: disable=protected-access
    # gym-pusht's marker thickness is int(size / 96): below 96 px it would be 0, which OpenCV rejects.
    draw_action = draw_action and size >= 96
    return sim._get_img(screen, width=size, height=size, render_action=draw_action)  # pylint: disable=protected-access

  def _obs(self):
    state = self.state
    if self.obs_type == "lowdim":
      return obs_from_state(state)
    if self.obs_type == "arrays":
      # float32 as the dataset stores them; `obs_from_state` casts the same float64 values, so the preset low-dim
      # observation built from these is bit for bit the "lowdim" one.
      arrays = {"keypoint": lambda: keypoints_from_state(state).astype(np.float32),
                "state": lambda: state.astype(np.float32),
                "n_contacts": lambda: np.array([self._n_contacts], np.float32),
                "img": lambda: self.render(self.render_size, draw_action=False)}
      return {name: arrays[name]() for name in self.arrays}
    return {"image": self.render(self.render_size, draw_action=False), "agent_pos": state[:2].astype(np.float32)}
