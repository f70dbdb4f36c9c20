"""robomimic HDF5 -> zarr replay buffer (python -m dpjax.data.convert_hdf5), then training data from it."""
import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dpjax import config_files
from dpjax.data import build_data, convert_hdf5, describe, replay, rotation
from tests.conftest import REPO_ROOT

# Demonstration number -> length; written out of numeric order (demo_10 sorts before demo_2 as text).
LENGTHS = {10: 7, 0: 12, 2: 9}


def _robomimic(path, mask=None, changes=None):
  """A robomimic-layout file: actions [T, 7], obs/{robot0_eef_pos [T, 3] float64, object [T, 10],
  agentview_image [T, 8, 8, 3] uint8}, each value encoding (demo number, step); `changes` {demo number: {dataset:
  new value, or None to delete it}}."""
  with h5py.File(path, "w") as file:
    for number, length in LENGTHS.items():
      demo = file.create_group(f"data/demo_{number}")
      steps = np.arange(length, dtype=np.float64)[:, None]
      demo["actions"] = number * 100 + steps + np.zeros((1, 7))
      demo["obs/robot0_eef_pos"] = number * 100 + steps + np.zeros((1, 3))
      demo["obs/object"] = -(number * 100 + steps) + np.zeros((1, 10))
      demo["obs/agentview_image"] = np.full((length, 8, 8, 3), number, np.uint8)
      demo["next_obs/robot0_eef_pos"] = np.zeros((length, 3))   # not converted
      for name, value in (changes or {}).get(number, {}).items():
        del demo[name]
        if value is not None:
          demo[name] = value
    for name, demos in (mask or {}).items():
      file[f"mask/{name}"] = np.array([f"demo_{n}".encode() for n in demos])
  return path


def test_demonstrations_in_numeric_order_with_every_obs_key(tmp_path):
  out = convert_hdf5.convert(_robomimic(tmp_path / "lift.hdf5"), tmp_path / "lift.zarr")
  buffer = replay.load_zarr_replay(out, ["action", "agentview_image", "object", "robot0_eef_pos"], {})
  np.testing.assert_array_equal(buffer.episode_ends, [12, 21, 28])   # demo_0, demo_2, demo_10
  np.testing.assert_array_equal(buffer.data["action"][:, 0], np.concatenate([np.arange(12), 200 + np.arange(9),
                                                                              1000 + np.arange(7)]))
  assert buffer.data["action"].shape == (28, 7) and buffer.data["action"].dtype == np.float32
  np.testing.assert_array_equal(buffer.data["object"][:, 0], -buffer.data["robot0_eef_pos"][:, 0])
  assert buffer.data["agentview_image"].dtype == np.uint8 and buffer.data["agentview_image"][-1, 0, 0, 0] == 10
  assert set(replay.array_layout(out).arrays) == {"action", "agentview_image", "object", "robot0_eef_pos"}
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lift.zarr")]   # the staging folder is gone
  # What `describe` suggests trains.
  suggestion = describe.describe(out)
  assert suggestion["obs_keys"] == "agentview_image,state=object+robot0_eef_pos"
  config = config_files.get_config("image,smoke", REPO_ROOT / "configs" / "replay.py")
  config.data.path, config.data.obs_keys = str(out), suggestion["obs_keys"]
  assert build_data(config).obs_shapes == {"agentview_image": (8, 8, 3), "state": (13,)}


def test_keys_and_mask_select(tmp_path):
  path = _robomimic(tmp_path / "can.hdf5", mask={"train": [10, 0], "valid": [2]})
  out = convert_hdf5.main(["--hdf5", str(path), "--out", str(tmp_path / "can.zarr"), "--keys", "object",
                           "--mask", "train"])
  layout = replay.array_layout(out)
  assert set(layout.arrays) == {"action", "object"} and layout.arrays["object"] == ((10,), "float32")
  np.testing.assert_array_equal(layout.episode_ends, [12, 19])


@pytest.mark.parametrize("changes, args, message", [
    ({}, ["--mask", "test"], r"has no mask/test \(masks: \[\]\)"),
    ({}, ["--keys", "wrist_image"], r"data/demo_0/obs has no 'wrist_image'"),
    ({2: {"obs/object": np.zeros((4, 10))}}, [], r"data/demo_2/obs/object has 4 steps but its actions 9"),
    ({2: {"obs/object": np.zeros((9, 11))}}, [], r"'object' has per-step shapes \[\(10,\), \(11,\)\]"),
    ({0: {"actions": None}}, [], r"data/demo_0 has no 'actions'"),
])
def test_bad_files_are_one_line(tmp_path, changes, args, message):
  path = _robomimic(tmp_path / "bad.hdf5", changes=changes)
  with pytest.raises(SystemExit, match=message):
    convert_hdf5.main(["--hdf5", str(path), "--out", str(tmp_path / "out.zarr"), *args])
  assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("mask", ["empty", "elsewhere"])
def test_a_mask_that_selects_no_demonstration_is_one_line(tmp_path, mask):
  path = _robomimic(tmp_path / "bad.hdf5", mask={"empty": [], "elsewhere": [7]})   # no demo_7 in the file
  with pytest.raises(SystemExit, match=rf"mask/{mask} lists none of the data/demo_<i> groups\. Choose another"):
    convert_hdf5.main(["--hdf5", str(path), "--out", str(tmp_path / "out.zarr"), "--mask", mask])
  assert not (tmp_path / "out.zarr").exists()


def test_not_an_hdf5_file_and_an_existing_output_are_one_line(tmp_path):
  (tmp_path / "notes.hdf5").write_text("not hdf5")
  with pytest.raises(SystemExit, match="dpjax.data.convert_hdf5: .*signature"):
    convert_hdf5.main(["--hdf5", str(tmp_path / "notes.hdf5"), "--out", str(tmp_path / "out.zarr")])
  (tmp_path / "out.zarr").mkdir()
  with pytest.raises(SystemExit, match="out.zarr already exists"):
    convert_hdf5.main(["--hdf5", str(_robomimic(tmp_path / "a.hdf5")), "--out", str(tmp_path / "out.zarr")])


def test_abs_action_writes_the_6d_rotation_that_maps_back(tmp_path):
  rng = np.random.default_rng(0)
  actions = {n: np.concatenate([rng.normal(size=(length, 3)), Rotation.random(length, random_state=n).as_rotvec(),
                                rng.uniform(-1, 1, (length, 1))], 1) for n, length in LENGTHS.items()}
  path = _robomimic(tmp_path / "square_abs.hdf5", changes={n: {"actions": a} for n, a in actions.items()})
  out = convert_hdf5.main(["--hdf5", str(path), "--out", str(tmp_path / "square.zarr"), "--abs_action"])
  converted = replay.load_zarr_replay(out, ["action"], {}).data["action"]
  assert converted.shape == (28, 10)
  np.testing.assert_allclose(rotation.abs_actions_from_6d(converted),
                             np.concatenate([actions[0], actions[2], actions[10]]), atol=1e-5)
  # Actions that are not 7 per arm are refused in one line, and nothing is written.
  with pytest.raises(SystemExit, match=r"has 8-D actions, not absolute ones \(7 per arm.*leave it out"):
    convert_hdf5.main(["--hdf5", str(_robomimic(tmp_path / "eight.hdf5", changes={
        n: {"actions": np.zeros((length, 8))} for n, length in LENGTHS.items()})), "--out",
        str(tmp_path / "eight.zarr"), "--abs_action"])
  assert not (tmp_path / "eight.zarr").exists()
