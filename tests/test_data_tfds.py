"""TFDS/RLDS source: zarr -> RLDS converter, reader, and identical training batches from either source."""
import json
import os
import sys

import jax
import numpy as np
import pytest

try:
  import tensorflow_datasets as tfds
except ImportError:
  # Like the real-data tests: skipped on a laptop without the extra, a failure in CI.
  if os.environ.get("CI"):
    raise
  pytest.skip("needs the tfds extra: pip install 'dpjax[tfds]'", allow_module_level=True)

import dpjax.data  # noqa: E402
from dpjax.data import convert_tfds, pusht, replay, synthetic, tfds_source  # noqa: E402
from tests import smoke  # noqa: E402

LENGTHS = (30, 25, 40, 35, 28, 33)


@pytest.fixture(scope="module")
def zarr_path(tmp_path_factory):
  return synthetic.write_synthetic_pusht(tmp_path_factory.mktemp("zarr") / "pusht.zarr", LENGTHS, image=True,
                                         values="random_walk")


@pytest.fixture(scope="module")
def tfds_path(zarr_path, tmp_path_factory):
  """The converted dataset's version folder, written through the CLI entry point."""
  return convert_tfds.main(["--zarr", str(zarr_path), "--out", str(tmp_path_factory.mktemp("tfds"))])


def _configs(zarr_path, tfds_path, variant):
  zarr_config = smoke.smoke_config(zarr_path, variant)
  tfds_config = smoke.smoke_config(tfds_path, variant)
  tfds_config.data.source = "tfds"
  return zarr_config, tfds_config


def test_reader_returns_the_zarr_arrays_bit_exact(zarr_path, tfds_path):
  keys = ("action", "state", "keypoint", "img")
  expected = replay.load_zarr_replay(zarr_path, keys)
  loaded = tfds_source.load_tfds_replay(tfds_path, keys)
  np.testing.assert_array_equal(loaded.episode_ends, expected.episode_ends)
  assert loaded.episode_ends.dtype == np.int64
  for key in keys:
    assert loaded.data[key].dtype == expected.data[key].dtype, key
    np.testing.assert_array_equal(loaded.data[key], expected.data[key], err_msg=key)
  # Reading is TensorFlow-free: tfds' numpy path plus PIL for the PNGs.
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("variant", ["smoke", "image,smoke"])
def test_build_data_same_batches_and_normalizer_from_either_source(zarr_path, tfds_path, variant):
  zarr_config, tfds_config = _configs(zarr_path, tfds_path, variant)
  bundles = [dpjax.data.build_data(c) for c in (zarr_config, tfds_config)]
  zarr_bundle, tfds_bundle = bundles
  assert tfds_bundle.obs_shapes == zarr_bundle.obs_shapes
  assert tfds_bundle.action_dim == zarr_bundle.action_dim
  assert (tfds_bundle.num_train_episodes, tfds_bundle.num_val_episodes) == (
      zarr_bundle.num_train_episodes, zarr_bundle.num_val_episodes)
  jax.tree.map(np.testing.assert_array_equal, tfds_bundle.normalizer, zarr_bundle.normalizer)
  np.testing.assert_array_equal(tfds_bundle.val_source.indices, zarr_bundle.val_source.indices)

  iterators = [dpjax.data.make_train_iterator(b, c, batch_size=8)
               for b, c in zip(bundles, (zarr_config, tfds_config))]
  for _ in range(3):
    zarr_batch, tfds_batch = (next(it) for it in iterators)
    jax.tree.map(np.testing.assert_array_equal, tfds_batch, zarr_batch)
    assert jax.tree.map(lambda x: x.dtype, tfds_batch) == jax.tree.map(lambda x: x.dtype, zarr_batch)


def test_converter_writes_rlds_array_record_with_metadata(zarr_path, tfds_path):
  assert tfds_path.name == convert_tfds.DATASET_VERSION and tfds_path.parent.name == "pusht"
  assert list(tfds_path.glob("pusht-train.array_record-*")), sorted(p.name for p in tfds_path.iterdir())
  assert not (tfds_path.parents[1] / "downloads").exists()
  builder = tfds.builder_from_directory(str(tfds_path))
  assert builder.info.file_format.value == "array_record"
  assert builder.info.splits["train"].num_examples == len(LENGTHS)
  metadata = builder.info.metadata
  assert metadata["num_episodes"] == len(LENGTHS) and metadata["num_steps"] == sum(LENGTHS)
  assert metadata["source_path"] == str(zarr_path.resolve())
  assert metadata[tfds_source.METADATA_KEY_MAP] == {
      "action": "action", "img": "observation/image", "keypoint": "observation/keypoint",
      "state": "observation/state"}
  assert json.loads((tfds_path / "metadata.json").read_text())["num_episodes"] == len(LENGTHS)

  features = tfds_source.step_features(builder)
  assert set(features) == {"action", "is_first", "is_last", "is_terminal", "observation/image",
                           "observation/keypoint", "observation/state"}
  assert isinstance(features["observation/image"], tfds.features.Image)
  assert features["observation/image"].shape == (96, 96, 3)
  assert features["observation/keypoint"].shape == (9, 2)

  source = tfds.data_source("pusht", data_dir=str(tfds_path.parents[1]), split="train")
  for episode, length in enumerate(LENGTHS):
    example = source[episode]
    assert example["episode_metadata"][tfds_source.EPISODE_INDEX] == episode
    steps = example["steps"]
    assert len(steps) == length
    flags = np.array([[s["is_first"], s["is_last"], s["is_terminal"]] for s in (steps[0], steps[length - 1])])
    np.testing.assert_array_equal(flags, [[True, length == 1, False], [length == 1, True, False]])


def test_resolve_tfds_dir_accepts_version_dataset_and_data_dir(tfds_path):
  assert tfds_source.resolve_tfds_dir(tfds_path) == tfds_path
  assert tfds_source.resolve_tfds_dir(tfds_path.parent) == tfds_path
  assert tfds_source.resolve_tfds_dir(tfds_path.parents[1]) == tfds_path
  assert tfds_source.resolve_tfds_dir(tfds_path.parents[1], name="pusht") == tfds_path
  with pytest.raises(replay.DatasetError, match="no dataset 'nope'"):
    tfds_source.resolve_tfds_dir(tfds_path.parents[1], name="nope")


def test_clear_errors_for_bad_path_and_wrong_dataset(zarr_path, tfds_path, tmp_path):
  keys = pusht.PUSHT_KEYS["lowdim"]
  with pytest.raises(replay.DatasetError, match="does not exist.*convert_tfds"):
    tfds_source.load_tfds_replay(tmp_path / "missing", keys)
  with pytest.raises(replay.DatasetError, match="config.data.path is empty"):
    tfds_source.load_tfds_replay("", keys)
  with pytest.raises(replay.DatasetError, match="holds no TFDS dataset"):
    tfds_source.load_tfds_replay(zarr_path, keys)  # a zarr where a TFDS folder is expected
  with pytest.raises(replay.DatasetError, match="split 'test'.*splits: \\['train'\\]"):
    tfds_source.load_tfds_replay(tfds_path, keys, split="test")
  with pytest.raises(replay.DatasetError, match="observation/nope.*tfds_key_map=state="):
    tfds_source.load_tfds_replay(tfds_path, keys, key_map={**tfds_source.DEFAULT_KEY_MAP,
                                                           "state": "observation/nope"})
  with pytest.raises(replay.DatasetError, match="per-step shape \\(9, 2\\).*expected \\(5,\\)"):
    tfds_source.load_tfds_replay(tfds_path, keys, key_map={**tfds_source.DEFAULT_KEY_MAP,
                                                           "state": "observation/keypoint"})
  with pytest.raises(FileExistsError, match="already exists"):
    convert_tfds.convert_zarr_to_tfds(zarr_path, tfds_path.parents[1])
  with pytest.raises(replay.DatasetError, match="not a zarr replay buffer"):
    convert_tfds.convert_zarr_to_tfds(tfds_path, tmp_path / "out")
  config = smoke.smoke_config(tmp_path / "missing")
  config.data.source = "tfds"
  with pytest.raises(replay.DatasetError, match="does not exist"):
    dpjax.data.build_data(config)
  config.data.source = "hdf5"
  with pytest.raises(ValueError, match="'zarr' or 'tfds'"):
    dpjax.data.build_data(config)


def test_not_rlds_dataset_is_rejected(tmp_path):

  class Flat(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"x": np.float32}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      yield "0", {"x": 1.0}

  Flat(data_dir=str(tmp_path), file_format="array_record").download_and_prepare(
      download_dir=str(tmp_path / "dl"))
  with pytest.raises(replay.DatasetError, match="not an RLDS dataset.*'x'"):
    tfds_source.load_tfds_replay(tmp_path / "flat", pusht.PUSHT_KEYS["lowdim"])


def test_other_observation_names_through_the_key_map(zarr_path, tmp_path):
  """A dataset whose steps use other names loads via its metadata map or an explicit one."""
  key_map = {"action": "action", "state": "observation/agent", "keypoint": "observation/block_kp"}
  path = convert_tfds.convert_zarr_to_tfds(zarr_path, tmp_path, name="other", key_map=key_map)
  keys = pusht.PUSHT_KEYS["lowdim"]
  expected = replay.load_zarr_replay(zarr_path, keys)
  for loaded in (tfds_source.load_tfds_replay(path, keys),
                 tfds_source.load_tfds_replay(tmp_path, keys, name="other", key_map=key_map)):
    for key in keys:
      np.testing.assert_array_equal(loaded.data[key], expected.data[key])
  with pytest.raises(replay.DatasetError, match="'observation/keypoint', which the dataset lacks"):
    tfds_source.load_tfds_replay(path, keys, key_map=tfds_source.DEFAULT_KEY_MAP)


def test_single_channel_camera_round_trips(tmp_path):
  """A grey camera [N, H, W, 1], which training takes, converts (as a grey PNG) and reads back bit-exact."""
  rng = np.random.default_rng(0)
  data = {"action": rng.normal(size=(12, 2)).astype(np.float32),
          "wrist": rng.integers(0, 256, (12, 8, 8, 1)).astype(np.uint8)}
  replay.write_zarr_replay(tmp_path / "grey.zarr", data, [5, 12])
  path = convert_tfds.convert_zarr_to_tfds(tmp_path / "grey.zarr", tmp_path / "tfds", name="grey")
  loaded = tfds_source.load_tfds_replay(path, ["action", "wrist"], step_shapes={})
  for key, values in data.items():
    np.testing.assert_array_equal(loaded.data[key], values, err_msg=key)


def test_two_arrays_for_one_step_path_are_refused(tmp_path):
  # img maps to observation/image by default, as does an array named image: the later would replace the earlier.
  n = 10
  data = {"img": np.zeros((n, 96, 96, 3), np.uint8), "image": np.full((n, 96, 96, 3), 7, np.uint8),
          "action": np.zeros((n, 2), np.float32)}
  replay.write_zarr_replay(tmp_path / "two.zarr", data, [4, 10])
  with pytest.raises(SystemExit, match=r"^dpjax.data.convert_tfds: key_map .* writes several arrays to "
                     r"\['observation/image'\]; give each its own step path"):
    convert_tfds.main(["--zarr", str(tmp_path / "two.zarr"), "--out", str(tmp_path / "tfds")])


@pytest.mark.realdata
def test_converted_real_pusht_gives_the_zarr_batches(real_pusht_path, tmp_path):
  """Real Push-T, low-dim keys (images would take ~40 s): same normalizer and batches from either source."""
  path = convert_tfds.convert_zarr_to_tfds(real_pusht_path, tmp_path, keys=pusht.PUSHT_KEYS["lowdim"])
  zarr_config, tfds_config = _configs(real_pusht_path, path, "smoke")
  for config in (zarr_config, tfds_config):
    config.data.val_ratio = 0.02  # the paper's split
  bundles = [dpjax.data.build_data(c) for c in (zarr_config, tfds_config)]
  assert bundles[1].num_train_episodes == bundles[0].num_train_episodes == 90
  jax.tree.map(np.testing.assert_array_equal, bundles[1].normalizer, bundles[0].normalizer)
  iterators = [dpjax.data.make_train_iterator(b, c, batch_size=256)
               for b, c in zip(bundles, (zarr_config, tfds_config))]
  for _ in range(3):
    jax.tree.map(np.testing.assert_array_equal, next(iterators[1]), next(iterators[0]))


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # what `import` sees when not installed
  config = smoke.smoke_config(tmp_path)
  config.data.source = "tfds"
  with pytest.raises(ImportError, match=r"pip install 'dpjax\[tfds\]'"):
    dpjax.data.build_data(config)


def test_key_map_from_the_command_line_string():
  assert tfds_source.parse_key_map("") is None
  assert tfds_source.parse_key_map("img=observation/rgb, state=observation/state") == {
      "img": "observation/rgb", "state": "observation/state"}
  with pytest.raises(ValueError, match="KEY=STEP_PATH"):
    tfds_source.parse_key_map("img")
