"""Your own replay buffer: config.data.obs_keys / action_key parsing, the arrays they build, and training on them
(configs/replay.py)."""
import jax
import numpy as np
import pytest

import dpjax
from dpjax import checkpoint, config_files, metrics, rollout, train
from dpjax.data import build_data, obs_keys, pusht, replay, run_obs_keys
from tests.conftest import REPO_ROOT

LENGTHS = (30, 25, 40, 35, 28)


def _robot_arrays(image: bool = False) -> dict:
  """A 7-joint robot: float joints, an integer gripper flag per step, an 8-D action, optionally a 16x16 camera."""
  rng = np.random.default_rng(0)
  n = sum(LENGTHS)
  data = {"joint_pos": np.cumsum(rng.normal(size=(n, 7)), axis=0).astype(np.float32),
          "gripper": rng.integers(0, 2, size=(n,)), "action": rng.normal(size=(n, 8)).astype(np.float32)}
  if image:
    data["wrist_rgb"] = rng.integers(0, 256, size=(n, 16, 16, 3)).astype(np.uint8)
  return data


@pytest.fixture
def robot_zarr(tmp_path):
  path = tmp_path / "robot.zarr"
  replay.write_zarr_replay(path, _robot_arrays(image=True), np.cumsum(LENGTHS))
  return path


def _replay_config(path, obs_keys_text, variant="smoke", action_key=""):
  config = config_files.get_config(variant, REPO_ROOT / "configs" / "replay.py")
  config.data.path = str(path)
  config.data.obs_keys = obs_keys_text
  config.data.action_key = action_key
  config.data.val_ratio = 0.2
  return config


def test_pusht_presets_parse_to_their_arrays():
  low_dim = pusht.obs_keys("lowdim")
  assert list(low_dim) == ["low_dim"]
  assert [(t.key, t.columns) for t in low_dim["low_dim"]] == [("keypoint", None), ("state", (None, 2))]
  assert list(pusht.obs_keys("image")) == ["image", "agent_pos"]
  assert pusht.PUSHT_KEYS == {"lowdim": ("action", "keypoint", "state"), "image": ("action", "img", "state")}


def test_terms_indices_and_bare_names():
  parsed = obs_keys.parse_obs_keys(" joint_pos , grip=gripper[0], tail=joint_pos[-1]+joint_pos[2:4] ")
  assert list(parsed) == ["joint_pos", "grip", "tail"]
  assert parsed["grip"][0].columns == (0, 1)
  assert [t.columns for t in parsed["tail"]] == [(-1, None), (2, 4)]
  assert [t.key for t in obs_keys.parse_action_key("")] == ["action"]
  assert [t.columns for t in obs_keys.parse_action_key("action[:7]")] == [(None, 7)]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("state,,img", "empty entry"),
    ("state[a]", "not an array name"),
    ("state[]", "empty index"),
    ("joint_pos+gripper", "name it"),
    ("1x=state", "Python identifier"),
    ("s=state,s=img", "named twice"),
])
def test_bad_obs_keys_name_the_problem(text, message):
  with pytest.raises(ValueError, match=message):
    obs_keys.parse_obs_keys(text)


def test_bad_action_key_names_the_problem():
  with pytest.raises(ValueError, match="without NAME= or commas"):
    obs_keys.parse_action_key("a=action")


def test_arrays_are_concatenated_sliced_and_cast_in_the_order_written():
  data = _robot_arrays(image=True)
  obs, action = obs_keys.build_arrays(
      data, obs_keys.parse_obs_keys("wrist=wrist_rgb,state=gripper+joint_pos[-3:]"),
      obs_keys.parse_action_key("action[:7]"))
  n = sum(LENGTHS)
  assert obs["wrist"].dtype == np.uint8 and obs["wrist"].shape == (n, 16, 16, 3)
  assert obs["state"].dtype == np.float32 and obs["state"].shape == (n, 4)
  np.testing.assert_array_equal(obs["state"][:, 0], data["gripper"].astype(np.float32))
  np.testing.assert_array_equal(obs["state"][:, 1:], data["joint_pos"][:, 4:])
  np.testing.assert_array_equal(action, data["action"][:, :7])


@pytest.mark.parametrize("obs_text, action_text, message", [
    ("state=joint_pos[7:]", "", "selects no values"),
    ("state=joint_pos[:10]", "", r"'joint_pos\[:10\]' reaches past data/joint_pos, which has 7 values per step"),
    ("state=joint_pos[5:9]", "", r"reaches past data/joint_pos"),
    ("joint_pos", "action[:9]", r"config.data.action_key: 'action\[:9\]' reaches past data/action, which has 8"),
    ("cam=wrist_rgb+joint_pos", "", "own unsliced entry"),
    ("cam=wrist_rgb[:2]", "", "own unsliced entry"),
    ("joint_pos", "wrist_rgb", "image array"),
    ("velocity", "", r"lack \['velocity'\] named by config.data.obs_keys"),
    ("joint_pos", "torque", r"lack \['torque'\] named by config.data.action_key"),
])
def test_bad_arrays_name_the_problem(obs_text, action_text, message):
  with pytest.raises(ValueError, match=message):
    obs_keys.build_arrays(_robot_arrays(image=True), obs_keys.parse_obs_keys(obs_text),
                          obs_keys.parse_action_key(action_text))


def test_a_grey_camera_without_its_channel_axis_is_named():
  data = {**_robot_arrays(), "grey": np.zeros((sum(LENGTHS), 24, 24), np.uint8)}
  with pytest.raises(ValueError, match=r"data/grey is uint8 \[N, H, W\] = \(\d+, 24, 24\), a grey camera\? Store it "
                     r"as \[N, H, W, 1\]"):
    obs_keys.build_obs(data, obs_keys.parse_obs_keys("grey"))


def test_readings_without_the_batch_axis_are_named():
  keys = obs_keys.parse_obs_keys("state=joint_pos+gripper")
  with pytest.raises(ValueError, match=r"build_obs takes arrays with one leading batch .*\{key: value\[None\]\}"):
    obs_keys.build_obs({"joint_pos": np.zeros((1, 7), np.float32), "gripper": np.float32(1.0)}, keys)
  with pytest.raises(ValueError, match=r"build_obs takes arrays with one leading batch"):
    obs_keys.build_obs({"joint_pos": np.zeros(7, np.float32), "gripper": np.zeros(1, np.float32)}, keys)
  assert obs_keys.build_obs({"joint_pos": np.zeros((1, 7)), "gripper": np.ones(1)}, keys)["state"].shape == (1, 8)


def test_replay_path_may_start_at_home(robot_zarr, monkeypatch):
  # The shell leaves "~" in --config.data.path=~/x.zarr alone; Push-T's and TFDS' paths expand it, and so does replay.
  monkeypatch.setenv("HOME", str(robot_zarr.parent))
  bundle = build_data(_replay_config("~/robot.zarr", "state=joint_pos"))
  assert bundle.obs_shapes == {"state": (7,)}


def test_channel_first_images_are_refused():
  data = {"cam": np.zeros((4, 3, 16, 16), np.uint8), "action": np.zeros((4, 2), np.float32)}
  with pytest.raises(ValueError, match="channel-first"):
    obs_keys.build_arrays(data, obs_keys.parse_obs_keys("cam"), obs_keys.parse_action_key(""))


def test_replay_dataset_builds_windows_of_the_named_arrays(robot_zarr):
  bundle = build_data(_replay_config(robot_zarr, "wrist=wrist_rgb,state=joint_pos+gripper", action_key="action[:7]"))
  assert bundle.obs_shapes == {"wrist": (16, 16, 3), "state": (8,)} and bundle.action_dim == 7
  assert bundle.num_train_episodes + bundle.num_val_episodes == len(LENGTHS)
  assert bundle.num_train_episodes == 4   # configs/replay.py trains on every non-validation episode
  assert sorted(bundle.normalizer["obs"]) == ["state", "wrist"]
  batch = bundle.train_source.gather_batch(np.arange(3))
  assert batch["obs"]["state"].shape == (3, 2, 8) and batch["action"].shape == (3, 16, 7)


@pytest.mark.parametrize("field, value, message", [
    ("path", "", "give --config.data.path"),
    ("obs_keys", "", "needs the observation arrays named"),
    ("dataset", "robomimic", "must be one of"),
])
def test_replay_dataset_config_errors(robot_zarr, field, value, message):
  config = _replay_config(robot_zarr, "joint_pos")
  config.data[field] = value
  with pytest.raises(ValueError, match=message):
    build_data(config)


def test_replay_dataset_reads_only_the_named_arrays_and_skips_pusht_shapes(tmp_path):
  data = _robot_arrays()
  data["state"] = np.zeros((sum(LENGTHS), 3), np.float32)   # Push-T's "state" is 5-D; no Push-T check here
  data["img"] = np.full((sum(LENGTHS), 2, 2, 3), np.nan, np.float32)   # would fail to load as images
  path = tmp_path / "robot.zarr"
  replay.write_zarr_replay(path, data, np.cumsum(LENGTHS))
  assert build_data(_replay_config(path, "state=state+joint_pos")).obs_shapes == {"state": (10,)}


def test_pusht_through_obs_keys_is_the_pusht_preset(real_pusht_path):
  preset = config_files.get_config("smoke")
  preset.data.path = str(real_pusht_path)
  explicit = _replay_config(real_pusht_path, pusht.OBS_KEYS["lowdim"])
  explicit.data.max_train_episodes = preset.data.max_train_episodes
  explicit.data.val_ratio = preset.data.val_ratio
  a, b = build_data(preset), build_data(explicit)
  assert a.obs_shapes == b.obs_shapes == {"low_dim": (20,)} and a.num_train_episodes == b.num_train_episodes == 90
  jax.tree.map(np.testing.assert_array_equal, a.normalizer, b.normalizer)
  ids = np.arange(0, len(a.train_source), 97)
  jax.tree.map(np.testing.assert_array_equal, a.train_source.gather_batch(ids), b.train_source.gather_batch(ids))


def test_trains_samples_and_refuses_the_pusht_simulator(tmp_path):
  path = tmp_path / "robot.zarr"
  replay.write_zarr_replay(path, _robot_arrays(), np.cumsum(LENGTHS))
  config = _replay_config(path, "joints=joint_pos,gripper", action_key="action[:7]")
  config.train.num_steps = 2
  config.train.val_every = 2
  final = train.train_and_evaluate(config, tmp_path / "run")
  assert np.isfinite(final["train/loss"])
  # configs/replay.py logs the sampled chunks' error on held-out windows (no simulator scores these runs).
  assert final["val/action_mse_ema"] == metrics.read_metrics(tmp_path / "run")[2]["val/action_mse_ema"] > 0
  policy = checkpoint.load_policy(tmp_path / "run")
  obs = {"joints": np.zeros((3, 2, 7), np.float32), "gripper": np.ones((3, 2, 1), np.float32)}
  actions = np.asarray(dpjax.sample(policy, obs, jax.random.key(0)))
  assert actions.shape == (3, config.horizon, 7) and np.isfinite(actions).all()
  # At the robot: its raw readings (a leading axis of 2 robots) become the observations as in training.
  keys = run_obs_keys(tmp_path / "run")
  controller = dpjax.RecedingHorizonController(policy, jax.random.key(1))
  rng = np.random.default_rng(1)
  for _ in range(3):
    readings = {"joint_pos": rng.normal(size=(2, 7)), "gripper": np.array([0, 1]), "camera": np.zeros((2, 4, 4, 3))}
    action = controller.act(obs_keys.build_obs(readings, keys))
    assert action.shape == (2, 7) and np.isfinite(action).all()
  with pytest.raises(ValueError, match="give the observation keys it was trained with"):
    rollout.evaluate(policy, num_episodes=1, show_progress=False)
  with pytest.raises(ValueError, match=r"observes \['gripper', 'joint_pos'\] .* the Push-T simulator records"):
    rollout.evaluate(policy, num_episodes=1, show_progress=False, obs_keys=keys)
  config.train.rollout_every = 2
  with pytest.raises(ValueError, match="rollout_every=0"):
    train.train_and_evaluate(config, tmp_path / "with_rollouts")


def test_a_crop_larger_than_the_camera_is_a_config_error(robot_zarr):
  config = _replay_config(robot_zarr, "wrist=wrist_rgb,joint_pos", variant="image,smoke")
  bundle = build_data(config)
  with pytest.raises(ValueError, match=r"crop_shape=\(84, 84\) does not fit the \(16, 16\) images of 'wrist'"):
    dpjax.policy.spec_from_config(config, bundle.obs_shapes, bundle.action_dim)
  config.policy.resnet18.crop_shape = (14, 14)
  assert dpjax.policy.spec_from_config(config, bundle.obs_shapes, bundle.action_dim).obs_shapes[1][0] == "wrist"


def test_replay_dataset_from_rlds_matches_its_zarr(robot_zarr, tmp_path):
  from dpjax.data import convert_tfds  # pylint: disable=g-import-not-at-top
  version_dir = convert_tfds.convert_zarr_to_tfds(robot_zarr, tmp_path / "tfds", name="robot",
                                                  keys=["joint_pos", "gripper", "action"])
  from_zarr = _replay_config(robot_zarr, "state=joint_pos[:3]+gripper")
  from_rlds = _replay_config(version_dir, "state=joint_pos[:3]+gripper")
  from_rlds.data.source = "tfds"
  a, b = build_data(from_zarr), build_data(from_rlds)
  assert a.obs_shapes == b.obs_shapes == {"state": (4,)}
  jax.tree.map(np.testing.assert_array_equal, a.normalizer, b.normalizer)
  ids = np.arange(len(a.train_source))
  jax.tree.map(np.testing.assert_array_equal, a.train_source.gather_batch(ids), b.train_source.gather_batch(ids))


def test_a_pusht_runs_obs_keys_are_its_obs_types(tmp_path):
  for variant, obs_type in (("smoke", "lowdim"), ("image,smoke", "image")):
    (tmp_path / "config.json").write_text(config_files.get_config(variant).to_json())
    assert run_obs_keys(tmp_path) == pusht.obs_keys(obs_type)


def test_pusht_with_other_observations_rolls_out_in_the_simulator(tmp_path):
  """Any observation built from the arrays the simulator records (keypoint, state, img, n_contacts) is built the same
  way in rollouts, in training's and in `dpjax.rollout`'s."""
  from dpjax.data import synthetic  # pylint: disable=g-import-not-at-top
  data, ends = synthetic.synthetic_pusht_arrays(LENGTHS, image=False, values="random_walk")
  data["n_contacts"] = np.ones((sum(LENGTHS), 1), np.float32)
  path = tmp_path / "pusht.zarr"
  replay.write_zarr_replay(path, data, ends)
  config = _replay_config(path, "pose=state,tee=keypoint[:4]+n_contacts")
  config.train.num_steps, config.train.val_every = 2, 0
  config.train.rollout_every, config.train.rollout_episodes, config.rollout.max_steps = 2, 2, 4
  final = train.train_and_evaluate(config, tmp_path / "run")
  assert 0.0 <= final["rollout/mean_score"] <= 1.0
  policy = checkpoint.load_policy(tmp_path / "run")
  assert policy.spec.obs_shapes == (("pose", (5,)), ("tee", (5,)))
  result = rollout.evaluate(policy, num_episodes=2, max_steps=4, show_progress=False,
                            obs_keys=run_obs_keys(tmp_path / "run"), record_obs=True, out_dir=tmp_path / "eval")
  assert result["obs_keys"] == "pose=state,tee=keypoint[:4]+n_contacts"
  visited = np.load(tmp_path / "eval" / "visited_obs.npz")
  assert visited["obs/tee"].shape[1:] == (2, 5) and (visited["obs/tee"][:, 0, 4] == 0).all()   # no contacts at reset
  with pytest.raises(ValueError, match=r"build \{'pose': \(5,\)\} from the simulator's arrays, but the policy"):
    rollout.evaluate(policy, num_episodes=1, show_progress=False, obs_keys=obs_keys.parse_obs_keys("pose=state"))
