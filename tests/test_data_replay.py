"""Zarr replay buffer: loading, Push-T arrays, and every malformed-input error."""
import json
import logging
import os
import pathlib

import numpy as np
import pytest
import zarr

from dpjax.data import pusht, replay, synthetic

LENGTHS = (20, 12, 30, 9)


@pytest.fixture
def zarr_path(tmp_path):
  return synthetic.write_synthetic_pusht(tmp_path / "toy.zarr", LENGTHS, image=True)


def _write(tmp_path, **overrides):
  data, ends = synthetic.synthetic_pusht_arrays(LENGTHS, image=False)
  ends = overrides.pop("episode_ends", ends)
  data.update(overrides)
  path = tmp_path / "bad.zarr"
  replay.write_zarr_replay(path, data, ends)
  return path


def test_load_round_trip(zarr_path):
  data, ends = synthetic.synthetic_pusht_arrays(LENGTHS)
  buffer = replay.load_zarr_replay(zarr_path, ("action", "state", "keypoint", "img"))
  assert buffer.num_episodes == 4 and buffer.num_steps == sum(LENGTHS)
  np.testing.assert_array_equal(buffer.episode_ends, ends)
  for key in ("action", "state", "keypoint"):
    assert buffer.data[key].dtype == np.float32
    np.testing.assert_array_equal(buffer.data[key], data[key])
  assert buffer.data["img"].dtype == np.uint8
  np.testing.assert_array_equal(buffer.data["img"], data["img"].astype(np.uint8))
  np.testing.assert_array_equal(buffer.episode_lengths, LENGTHS)
  assert buffer.episode_slice(0) == slice(0, 20)
  assert buffer.episode_slice(2) == slice(32, 62)
  assert buffer.episode_slice(-1) == slice(62, 71)
  with pytest.raises(IndexError):
    buffer.episode_slice(4)


def test_only_requested_keys_loaded(zarr_path):
  buffer = replay.load_zarr_replay(zarr_path, pusht.PUSHT_KEYS["lowdim"])
  assert set(buffer.data) == {"keypoint", "state", "action"}
  assert "img" not in pusht.PUSHT_KEYS["lowdim"]


def test_pusht_lowdim_order(zarr_path):
  buffer = replay.load_zarr_replay(zarr_path, pusht.PUSHT_KEYS["lowdim"])
  obs, action = pusht.pusht_arrays(buffer, "lowdim")
  assert set(obs) == {"low_dim"} and obs["low_dim"].shape == (71, 20) and obs["low_dim"].dtype == np.float32
  # The original PushTLowdimDataset: keypoints flattened (x0, y0, x1, y1, ...), then agent x, y.
  expected = np.concatenate([buffer.data["keypoint"].reshape(71, 18), buffer.data["state"][:, :2]], axis=1)
  np.testing.assert_array_equal(obs["low_dim"], expected)
  np.testing.assert_array_equal(obs["low_dim"][5, :4], np.float32([5.0, -5.0, 5.1, -5.1]))
  assert action.shape == (71, 2) and action.dtype == np.float32


def test_pusht_image(zarr_path):
  buffer = replay.load_zarr_replay(zarr_path, pusht.PUSHT_KEYS["image"])
  obs, action = pusht.pusht_arrays(buffer, "image")
  assert obs["image"].shape == (71, 96, 96, 3) and obs["image"].dtype == np.uint8
  assert obs["agent_pos"].shape == (71, 2) and obs["agent_pos"].dtype == np.float32
  np.testing.assert_array_equal(obs["agent_pos"][:, 0], np.arange(71))
  assert action.shape == (71, 2)


def test_bad_obs_type_lists_choices(zarr_path):
  buffer = replay.load_zarr_replay(zarr_path, pusht.PUSHT_KEYS["lowdim"])
  with pytest.raises(ValueError, match="lowdim.*image"):
    pusht.pusht_arrays(buffer, "rgb")


def test_missing_path(tmp_path):
  with pytest.raises(replay.DatasetError, match="does not exist"):
    replay.load_zarr_replay(tmp_path / "nope.zarr", ["action"])


def test_not_a_zarr_group(tmp_path):
  (tmp_path / "empty.zarr").mkdir()
  with pytest.raises(replay.DatasetError, match="not a zarr group"):
    replay.load_zarr_replay(tmp_path / "empty.zarr", ["action"])


def test_missing_data_group(tmp_path):
  root = zarr.open_group(str(tmp_path / "x.zarr"), mode="w", zarr_format=2)
  root.create_group("meta")
  with pytest.raises(replay.DatasetError, match="no 'data' group"):
    replay.load_zarr_replay(tmp_path / "x.zarr", ["action"])


def test_missing_episode_ends(tmp_path):
  root = zarr.open_group(str(tmp_path / "x.zarr"), mode="w", zarr_format=2)
  root.create_group("data")
  root.create_group("meta")
  with pytest.raises(replay.DatasetError, match="meta/episode_ends"):
    replay.load_zarr_replay(tmp_path / "x.zarr", ["action"])


def test_missing_key_lists_available(zarr_path):
  with pytest.raises(replay.DatasetError, match=r"missing key\(s\) \['velocity'\].*available.*'action'"):
    replay.load_zarr_replay(zarr_path, ["action", "velocity"])


def test_wrong_step_shape(tmp_path):
  data, _ = synthetic.synthetic_pusht_arrays(LENGTHS, image=False)
  path = _write(tmp_path, keypoint=data["keypoint"][:, :8])
  with pytest.raises(replay.DatasetError,
                     match=r"data/keypoint has per-step shape \(8, 2\), expected \(9, 2\)"):
    replay.load_zarr_replay(path, ["keypoint"])


def test_rows_do_not_match_episode_ends(tmp_path):
  path = _write(tmp_path, episode_ends=np.array([20, 32, 62, 70]))
  with pytest.raises(replay.DatasetError, match="data/action has 71 rows but meta/episode_ends.* is 70"):
    replay.load_zarr_replay(path, ["action"])


@pytest.mark.parametrize("ends", [[20, 20, 62, 71], [32, 20, 62, 71], [0, 32, 62, 71]])
def test_episode_ends_not_increasing(tmp_path, ends):
  path = _write(tmp_path, episode_ends=np.array(ends))
  with pytest.raises(replay.DatasetError, match="strictly increasing"):
    replay.load_zarr_replay(path, ["action"])


def test_nan_in_low_dim(tmp_path):
  data, _ = synthetic.synthetic_pusht_arrays(LENGTHS, image=False)
  state = data["state"].copy()
  state[40, 3] = np.nan
  path = _write(tmp_path, state=state)
  with pytest.raises(replay.DatasetError, match="data/state contains NaN.*step 40"):
    replay.load_zarr_replay(path, ["state"])


def test_non_integral_image(tmp_path):
  data, ends = synthetic.synthetic_pusht_arrays(LENGTHS, image=True)
  data["img"] = data["img"].copy()
  data["img"][3, 0, 0, 0] = 1.5
  replay.write_zarr_replay(tmp_path / "x.zarr", data, ends)
  with pytest.raises(replay.DatasetError, match="not integral values in \\[0, 255\\]"):
    replay.load_zarr_replay(tmp_path / "x.zarr", ["img"])


def test_corrupt_chunk(zarr_path):
  chunk = pathlib.Path(zarr_path) / "data" / "state" / "1.0"
  assert chunk.exists()
  chunk.write_bytes(os.urandom(64))
  with pytest.raises(replay.DatasetError, match="array 'data/state' could not be decoded"):
    replay.load_zarr_replay(zarr_path, ["action", "state"])
  # The one line above is all a user sees: zarr's abandoned reads of the other chunks are not logged at exit.
  asyncio_logger = logging.getLogger("asyncio")
  record = lambda text: logging.LogRecord("asyncio", logging.ERROR, __file__, 1, text, None, None)
  assert not asyncio_logger.filter(record("Task was destroyed but it is pending!\ntask: <Task pending "
                                          "coro=<concurrent_map.<locals>.run() running at zarr/core/common.py:115>>"))
  assert asyncio_logger.filter(record("Task was destroyed but it is pending!\ntask: <Task pending coro=<mine()>>"))


def test_missing_chunk_file(zarr_path):
  (pathlib.Path(zarr_path) / "data" / "action" / "2.0").unlink()
  with pytest.raises(replay.DatasetError, match="data/action has 1 of 5 chunk files missing"):
    replay.load_zarr_replay(zarr_path, ["action"])


def _compress_with_unknown_codec(zarr_path, key):
  """Names a codec this install lacks in data/<key>'s metadata (the original's cached image buffers use
  imagecodecs' JPEG 2000, which numcodecs does not bring)."""
  meta = pathlib.Path(zarr_path) / "data" / key / ".zarray"
  fields = json.loads(meta.read_text())
  fields["compressor"] = {"id": "imagecodecs_jpeg2k", "level": 50}
  meta.write_text(json.dumps(fields))


def test_codec_not_installed_is_named_and_other_arrays_still_load(zarr_path):
  _compress_with_unknown_codec(zarr_path, "img")
  buffer = replay.load_zarr_replay(zarr_path, pusht.PUSHT_KEYS["lowdim"])   # the images are never opened
  assert buffer.num_steps == sum(LENGTHS)
  with pytest.raises(replay.DatasetError, match=r"data/img is compressed with a codec this install lacks .*"
                     r"imagecodecs_jpeg2k.*pip install imagecodecs"):
    replay.load_zarr_replay(zarr_path, pusht.PUSHT_KEYS["image"])
  with pytest.raises(replay.DatasetError, match="an array under data/ is compressed with a codec this install lacks"):
    replay.array_layout(zarr_path)
  with pytest.raises(replay.DatasetError, match=r"missing key\(s\) \['velocity'\].*not listed: an array's codec"):
    replay.load_zarr_replay(zarr_path, ["action", "velocity"])   # listing what there is parses every array
