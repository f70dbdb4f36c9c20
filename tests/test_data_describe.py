"""python -m dpjax.data.describe: what a replay buffer holds, and an obs_keys line that trains."""
import json

import numpy as np
import pytest

from dpjax import config_files
from dpjax.data import build_data, describe, replay
from tests.conftest import REPO_ROOT

LENGTHS = (12, 20, 9)


def _write(path, with_action=True):
  rng = np.random.default_rng(0)
  n = sum(LENGTHS)
  data = {"eef_pos": rng.normal(size=(n, 3)), "gripper": rng.integers(0, 2, size=(n,)),
          "wrist_rgb": rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.uint8)}
  if with_action:
    data["action"] = rng.normal(size=(n, 4)).astype(np.float32)
  replay.write_zarr_replay(path, data, np.cumsum(LENGTHS))
  return data


def test_arrays_episodes_and_a_suggestion_that_trains(tmp_path, capsys):
  data = _write(tmp_path / "robot.zarr")
  description = describe.main([str(tmp_path / "robot.zarr"), "--json"])
  assert json.loads(capsys.readouterr().out) == description
  assert (description["num_episodes"], description["num_steps"]) == (3, 41)
  assert description["episode_length"] == {"min": 9, "mean": 41 / 3, "max": 20}
  arrays = description["arrays"]
  assert arrays["wrist_rgb"] == {"per_step_shape": [8, 8, 3], "dtype": "uint8", "kind": "camera"}
  assert arrays["gripper"]["per_step_shape"] == [] and arrays["gripper"]["kind"] == "low-dim"
  np.testing.assert_allclose(arrays["eef_pos"]["min"], data["eef_pos"].min(axis=0))
  np.testing.assert_allclose(arrays["action"]["max"], data["action"].max(axis=0), rtol=1e-6)
  assert description["obs_keys"] == "wrist_rgb,state=eef_pos+gripper" and description["action_key"] == "action"
  config = config_files.get_config("image,smoke", REPO_ROOT / "configs" / "replay.py")
  config.data.path, config.data.obs_keys = str(tmp_path / "robot.zarr"), description["obs_keys"]
  assert build_data(config).obs_shapes == {"wrist_rgb": (8, 8, 3), "state": (4,)}
  assert "To start: python -m dpjax.train --config=configs/replay.py:image" in describe.format_table(description)


def test_no_action_array_leaves_the_action_to_the_user(tmp_path):
  _write(tmp_path / "robot.zarr", with_action=False)
  description = describe.describe(tmp_path / "robot.zarr")
  assert description["action_key"] == ""
  assert "--config.data.action_key=<the action array>" in describe.format_table(description)


def test_text_arrays_are_other_and_camera_names_become_identifiers(tmp_path):
  n = sum(LENGTHS)
  data = {"task": np.array(["pick up"] * n), "eef.pos": np.zeros((n, 3), np.float32),
          "cam-front": np.zeros((n, 8, 8, 3), np.uint8), "action": np.zeros((n, 2), np.float32)}
  replay.write_zarr_replay(tmp_path / "robot.zarr", data, np.cumsum(LENGTHS))
  description = describe.describe(tmp_path / "robot.zarr")
  assert description["arrays"]["task"]["kind"] == "other"   # a language instruction: described, not trained on
  assert description["obs_keys"] == "cam_front=cam-front,state=eef.pos"
  config = config_files.get_config("image,smoke", REPO_ROOT / "configs" / "replay.py")
  config.data.path, config.data.obs_keys = str(tmp_path / "robot.zarr"), description["obs_keys"]
  assert build_data(config).obs_shapes == {"cam_front": (8, 8, 3), "state": (3,)}


def test_a_bad_buffer_is_one_line(tmp_path):
  with pytest.raises(SystemExit, match=r"dpjax.data.describe: .*nope.zarr: does not exist"):
    describe.main([str(tmp_path / "nope.zarr")])
  data = {"state": np.zeros((5, 2), np.float32)}
  replay.write_zarr_replay(tmp_path / "bad.zarr", data, [3, 2])
  with pytest.raises(SystemExit, match="strictly increasing"):
    describe.main([str(tmp_path / "bad.zarr")])
