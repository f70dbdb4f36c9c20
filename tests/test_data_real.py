"""The real Push-T replay buffer (skipped when absent, failed in CI); low-dim only, a few seconds."""
import numpy as np
import pytest
import zarr

from dpjax.data import normalizer, pusht, replay, split, windows

T, TO, TA = 16, 2, 8


@pytest.fixture(scope="module")
def lowdim(real_pusht_path):
  buffer = replay.load_zarr_replay(real_pusht_path, pusht.PUSHT_KEYS["lowdim"])
  return buffer, *pusht.pusht_arrays(buffer, "lowdim")


def test_size(lowdim):
  buffer, obs, action = lowdim
  assert buffer.num_episodes == 206 and buffer.num_steps == 25_650
  assert obs["low_dim"].shape == (25_650, 20) and obs["low_dim"].dtype == np.float32
  assert action.shape == (25_650, 2) and action.dtype == np.float32


def test_paper_split_and_window_count(lowdim):
  buffer, obs, action = lowdim
  train, val = split.split_episodes(buffer.num_episodes, 0.02, 90, seed=42)
  assert len(train) == 90 and len(val) == 4  # n_val = round(206 * 0.02) = 4
  source = windows.SequenceSource.from_episodes(obs, action, buffer.episode_ends, train, T, TO, TA)
  lengths = buffer.episode_lengths[train]
  assert len(source) == int(np.sum(np.maximum(lengths + (TO - 1) + (TA - 1) - T + 1, 0)))
  assert len(source) == 10_726   # configs/pusht.py derives the paper's epochs from this count
  batch = source.gather_batch(np.arange(0, len(source), 97))
  assert batch["obs"]["low_dim"].shape[1:] == (TO, 20) and batch["action"].shape[1:] == (T, 2)


def test_normalizer_on_real_data(lowdim):
  _, obs, action = lowdim
  stats = normalizer.fit_normalizer(obs, action)
  y = normalizer.normalize(stats["obs"]["low_dim"], obs["low_dim"])
  np.testing.assert_allclose(y.min(axis=0), -1.0, atol=1e-5)
  np.testing.assert_allclose(y.max(axis=0), 1.0, atol=1e-5)


def test_first_image_chunk_is_uint8(real_pusht_path, tmp_path):
  # Loading all 25,650 frames takes ~7 s; one chunk through the same conversion path checks the format.
  img = zarr.open_group(str(real_pusht_path), mode="r")["data"]["img"]
  assert img.shape == (25_650, 96, 96, 3)
  frames = img[:161]
  replay.write_zarr_replay(tmp_path / "one_chunk.zarr", {"img": frames}, [161])
  loaded = replay.load_zarr_replay(tmp_path / "one_chunk.zarr", ["img"]).data["img"]
  assert loaded.dtype == np.uint8
  np.testing.assert_array_equal(loaded, frames.astype(np.uint8))
