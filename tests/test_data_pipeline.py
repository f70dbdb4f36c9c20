"""Grain pipeline: determinism, exact resume, per-process sharding, validation batches, build_data."""
import pathlib

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

import dpjax.data
from dpjax import config_files
from dpjax.data import locate, pipeline, synthetic, windows

LENGTHS = (20, 12, 30, 9, 25, 17)
T, TO, TA = 16, 2, 8


@pytest.fixture(scope="module")
def source():
  data, ends = synthetic.synthetic_pusht_arrays(LENGTHS, image=False)
  obs = {"low_dim": np.concatenate([data["keypoint"].reshape(-1, 18), data["state"][:, :2]], axis=1)}
  return windows.SequenceSource.from_episodes(obs, data["action"], ends, np.arange(len(LENGTHS)), T, TO, TA)


def _iterator(source, seed=0, batch_size=8, **kwargs):
  kwargs.setdefault("process_index", 0)
  kwargs.setdefault("process_count", 1)
  return pipeline.make_train_iterator(source, batch_size, seed, **kwargs)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    np.testing.assert_array_equal(a["action"], b["action"])
    np.testing.assert_array_equal(a["obs"]["low_dim"], b["obs"]["low_dim"])


def test_batch_shapes(source):
  batch = next(_iterator(source))
  assert batch["action"].shape == (8, T, 2) and batch["action"].dtype == np.float32
  assert batch["obs"]["low_dim"].shape == (8, TO, 20) and batch["obs"]["low_dim"].dtype == np.float32


def test_deterministic_per_seed(source):
  _assert_same(_take(_iterator(source, seed=5), 6), _take(_iterator(source, seed=5), 6))
  a, b = _take(_iterator(source, seed=5), 3), _take(_iterator(source, seed=6), 3)
  assert any(not np.array_equal(x["action"], y["action"]) for x, y in zip(a, b))


def test_epochs_are_permutations_and_reshuffled(source):
  # 8 windows per batch; the dataset cycles through every window once per epoch.
  num_windows = len(source)
  batches = _take(_iterator(source), -(-2 * num_windows // 8))
  ids = np.concatenate([b["obs"]["low_dim"][:, TO - 1, 18] for b in batches])
  # Column 18 of the last obs step is the current global step: unique per window.
  epoch_1, epoch_2 = ids[:num_windows], ids[num_windows:2 * num_windows]
  assert len(np.unique(epoch_1)) == num_windows
  np.testing.assert_array_equal(np.sort(epoch_1), np.sort(epoch_2))
  assert not np.array_equal(epoch_1, epoch_2)


def test_resume_is_exact(source):
  iterator = _iterator(source, seed=1)
  _take(iterator, 5)
  state = iterator.get_state()
  expected = _take(iterator, 3)
  restored = _iterator(source, seed=1)
  restored.set_state(state)
  _assert_same(_take(restored, 3), expected)


def test_process_shards_make_up_the_global_batch(source):
  global_batches = _take(_iterator(source, seed=2, batch_size=8), 4)
  shards = [_take(_iterator(source, seed=2, batch_size=8, process_index=p, process_count=2), 4)
            for p in range(2)]
  for b, global_batch in enumerate(global_batches):
    parts = [shards[p][b]["action"] for p in range(2)]
    assert parts[0].shape == (4, T, 2)
    # Process p holds the contiguous block p of the global batch, where make_array_from_process_local_data
    # puts it: concatenated in process order they are the single-process batch, row for row.
    np.testing.assert_array_equal(np.concatenate(parts), global_batch["action"])


def test_batch_size_must_divide_process_count(source):
  with pytest.raises(ValueError, match="not divisible by the 3 JAX processes"):
    _iterator(source, batch_size=8, process_index=0, process_count=3)


def test_validation_batches_fixed_and_cover_every_window(source):
  batches = list(pipeline.validation_batches(source, 16, process_index=0, process_count=1))
  assert sum(len(b["action"]) for b in batches) == len(source)
  assert all(len(b["action"]) == 16 for b in batches[:-1])
  again = list(pipeline.validation_batches(source, 16, max_batches=2, process_index=0, process_count=1))
  _assert_same(again, batches[:2])
  np.testing.assert_array_equal(batches[0]["action"], source.gather_batch(np.arange(16))["action"])
  small = list(pipeline.validation_batches(source, 10_000, process_index=0, process_count=1))
  assert len(small) == 1 and small[0]["action"].shape[0] == len(source)
  # With 8 devices the last batch is trimmed to a multiple of 8: fewer than 8 windows left out.
  by_eight = list(pipeline.validation_batches(source, 16, multiple_of=8, process_index=0, process_count=1))
  assert all(len(b["action"]) % 8 == 0 for b in by_eight)
  assert 0 <= len(source) - sum(len(b["action"]) for b in by_eight) < 8
  # Two processes: each holds the contiguous half of every global batch.
  halves = [list(pipeline.validation_batches(source, 16, process_index=p, process_count=2)) for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([halves[0][0]["action"], halves[1][0]["action"]]),
                                batches[0]["action"])


def _load_config(arg=None):
  return config_files.get_config(arg)


@pytest.mark.parametrize("obs_type", ["lowdim", "image"])
def test_build_data_and_train_iterator(tmp_path, obs_type):
  path = synthetic.write_synthetic_pusht(tmp_path / "toy.zarr", LENGTHS + (40, 33), image=obs_type == "image")
  config = _load_config("smoke" if obs_type == "lowdim" else "image,smoke")
  config.data.path = str(path)
  config.data.val_ratio = 0.25
  config.data.max_train_episodes = 4
  bundle = dpjax.data.build_data(config)
  assert bundle.num_train_episodes == 4 and bundle.num_val_episodes == 2
  assert bundle.action_dim == 2
  if obs_type == "lowdim":
    assert bundle.obs_shapes == {"low_dim": (20,)}
  else:
    assert bundle.obs_shapes == {"image": (96, 96, 3), "agent_pos": (2,)}
  assert set(bundle.normalizer["obs"]) == set(bundle.obs_shapes)
  batch = next(dpjax.data.make_train_iterator(bundle, config, batch_size=config.train.batch_size))
  for key, shape in bundle.obs_shapes.items():
    assert batch["obs"][key].shape == (config.train.batch_size, config.n_obs_steps) + shape
  assert batch["action"].shape == (config.train.batch_size, config.horizon, 2)
  # Windows come only from training episodes (column 1 of action is the episode id).
  train_eps = {int(e) for e in np.unique(batch["action"][:, :, 1])}
  val_eps = {int(e) for e in np.unique(bundle.val_source.action[bundle.val_source.indices[:, 0], 1])}
  assert train_eps and not train_eps & val_eps


def test_build_data_normalizer_fit_train_and_no_val(tmp_path):
  path = synthetic.write_synthetic_pusht(tmp_path / "toy.zarr", LENGTHS, image=False)
  config = _load_config("smoke")
  config.data.path = str(path)
  config.data.val_ratio = 0.0
  config.data.max_train_episodes = 2
  config.data.normalizer_fit = "train"
  bundle = dpjax.data.build_data(config)
  assert bundle.val_source is None and bundle.num_train_episodes == 2
  config.data.normalizer_fit = "all"
  fit_all = dpjax.data.build_data(config).normalizer
  assert not np.array_equal(bundle.normalizer["action"]["scale"], fit_all["action"]["scale"])
  config.data.normalizer_fit = "some"
  with pytest.raises(ValueError, match="normalizer_fit"):
    dpjax.data.build_data(config)


def test_build_data_missing_path_names_env_var_and_download(tmp_path):
  config = _load_config("smoke")
  config.data.path = str(tmp_path / "missing.zarr")
  with pytest.raises(locate.DatasetNotFoundError, match="DPJAX_PUSHT_ZARR") as info:
    dpjax.data.build_data(config)
  assert "python -m dpjax.data.download" in str(info.value)
  assert pathlib.Path(config.data.path).name in str(info.value)


def test_orbax_checkpoint_round_trip(source, tmp_path):
  # How the trainer saves the iterator: one more item in its orbax Composite checkpoint.
  iterator = _iterator(source, seed=3)
  _take(iterator, 5)
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(5, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 3)
  restored = _iterator(source, seed=3)
  manager.restore(5, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(restored)))
  _assert_same(_take(restored, 3), expected)
  manager.close()
