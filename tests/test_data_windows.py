"""Sequence windows (padding, boundaries, counts) and the train/val episode split."""
import numpy as np
import pytest

from dpjax.data import split, synthetic, windows

LENGTHS = (20, 12, 30, 9, 3)
T, TO, TA = 16, 2, 8  # the paper's Push-T horizon, n_obs_steps, n_action_steps


def _arrays(lengths=LENGTHS):
  data, ends = synthetic.synthetic_pusht_arrays(lengths, image=True, image_size=4)
  obs = {"low_dim": np.concatenate([data["keypoint"].reshape(-1, 18), data["state"][:, :2]], axis=1),
         "image": data["img"].astype(np.uint8)}
  return obs, data["action"], ends


def _reference_window(data, ends, episode, offset):
  """Window starting `offset` steps into `episode`, edges repeated: the original sampler's meaning."""
  start = ends[episode - 1] if episode else 0
  steps = [start + min(max(offset + j, 0), ends[episode] - start - 1) for j in range(T)]
  return data[steps]


def test_window_count_matches_formula():
  _, _, ends = _arrays()
  ids = np.arange(len(LENGTHS))
  indices = windows.create_indices(ends, T, ids, pad_before=TO - 1, pad_after=TA - 1)
  expected = sum(max(0, n + (TO - 1) + (TA - 1) - T + 1) for n in LENGTHS)
  assert len(indices) == expected == 13 + 5 + 23 + 2 + 0  # each episode gives L - 7 windows, 0 if L <= 7


def test_windows_match_reference_and_never_cross_episodes():
  obs, action, ends = _arrays()
  ids = np.array([2, 0, 1])  # order given is the order of windows
  source = windows.SequenceSource.from_episodes(obs, action, ends, ids, T, TO, TA)
  k = 0
  for episode in ids:
    length = LENGTHS[episode]
    for offset in range(-(TO - 1), length - T + (TA - 1) + 1):
      item = source[k]
      np.testing.assert_array_equal(item["action"], _reference_window(action, ends, episode, offset))
      np.testing.assert_array_equal(item["obs"]["low_dim"],
                                    _reference_window(obs["low_dim"], ends, episode, offset)[:TO])
      # Column 1 of action is the episode id: a window never leaves its episode.
      assert np.all(item["action"][:, 1] == episode)
      k += 1
  assert k == len(source)


def test_first_and_last_windows_repeat_edge_steps():
  obs, action, ends = _arrays()
  source = windows.SequenceSource.from_episodes(obs, action, ends, np.array([0]), T, TO, TA)
  first = source[0]["action"][:, 0]
  np.testing.assert_array_equal(first, [0] * TO + list(range(1, T - TO + 1)))  # step 0 repeated To times
  last = source[len(source) - 1]["action"][:, 0]
  np.testing.assert_array_equal(last[-TA:], [19] * TA)  # last step (19) repeated
  np.testing.assert_array_equal(last[:T - TA + 1], np.arange(19 - (T - TA), 20))
  # The current observation (window step To-1) visits steps 0 .. L-Ta in order, once each, as in the original.
  current = [source[i]["obs"]["low_dim"][TO - 1, 18] for i in range(len(source))]
  np.testing.assert_array_equal(current, np.arange(len(source)))


def test_item_shapes_and_dtypes():
  obs, action, ends = _arrays()
  source = windows.SequenceSource.from_episodes(obs, action, ends, np.arange(5), T, TO, TA)
  item = source[3]
  assert item["obs"]["low_dim"].shape == (TO, 20) and item["obs"]["low_dim"].dtype == np.float32
  assert item["obs"]["image"].shape == (TO, 4, 4, 3) and item["obs"]["image"].dtype == np.uint8
  assert item["action"].shape == (T, 2) and item["action"].dtype == np.float32
  with pytest.raises(IndexError):
    source[len(source)]


def test_gather_batch_equals_stacked_items():
  obs, action, ends = _arrays()
  source = windows.SequenceSource.from_episodes(obs, action, ends, np.arange(5), T, TO, TA)
  ids = np.array([0, 7, 3, 35, 7])
  batch = source.gather_batch(ids)
  items = [source[i] for i in ids]
  np.testing.assert_array_equal(batch["action"], np.stack([it["action"] for it in items]))
  for key in obs:
    np.testing.assert_array_equal(batch["obs"][key], np.stack([it["obs"][key] for it in items]))


def test_indices_columns_like_original():
  ends = np.array([5, 8])
  indices = windows.create_indices(ends, 4, np.array([0, 1]), pad_before=1, pad_after=2)
  # Episode 0 (length 5): offsets -1..3; episode 1 (length 3): offsets -1..1.
  np.testing.assert_array_equal(indices, [
      [0, 3, 1, 4], [0, 4, 0, 4], [1, 5, 0, 4], [2, 5, 0, 3], [3, 5, 0, 2],
      [5, 8, 1, 4], [5, 8, 0, 3], [6, 8, 0, 2]])


def test_source_rejects_bad_inputs():
  obs, action, ends = _arrays()
  with pytest.raises(ValueError, match="float32"):
    windows.SequenceSource(obs, action.astype(np.float64), np.zeros((0, 4)), T, TO)
  with pytest.raises(ValueError, match="n_obs_steps"):
    windows.SequenceSource(obs, action, np.zeros((0, 4)), T, T + 1)


def test_split_paper_sizes_and_original_draws():
  train, val = split.split_episodes(206, 0.02, 90, seed=42)
  assert len(val) == 4 and len(train) == 90
  # The original get_val_mask / downsample_mask draws, written out.
  expected_val = np.sort(np.random.default_rng(42).choice(206, size=4, replace=False))
  np.testing.assert_array_equal(val, expected_val)
  rest = np.setdiff1d(np.arange(206), expected_val)
  expected_train = np.sort(rest[np.random.default_rng(42).choice(len(rest), size=90, replace=False)])
  np.testing.assert_array_equal(train, expected_train)


@pytest.mark.parametrize("num_episodes,val_ratio,max_train", [(10, 0.2, None), (10, 0.5, 3), (2, 0.9, 0),
                                                              (7, 0.01, 100), (1, 0.3, None)])
def test_split_disjoint_sorted_deterministic(num_episodes, val_ratio, max_train):
  train, val = split.split_episodes(num_episodes, val_ratio, max_train, seed=3)
  again = split.split_episodes(num_episodes, val_ratio, max_train, seed=3)
  np.testing.assert_array_equal(train, again[0])
  np.testing.assert_array_equal(val, again[1])
  assert not set(train) & set(val)
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
  n_val = min(max(1, round(num_episodes * val_ratio)), num_episodes - 1)
  assert len(val) == n_val
  assert len(train) == min(num_episodes - n_val, max_train or num_episodes)
  assert len(train) >= 1


def test_split_zero_ratio_and_seed_dependence():
  train, val = split.split_episodes(50, 0.0, None, seed=0)
  assert len(val) == 0 and len(train) == 50
  a = split.split_episodes(50, 0.1, 20, seed=0)
  b = split.split_episodes(50, 0.1, 20, seed=1)
  assert not np.array_equal(a[0], b[0])
  with pytest.raises(ValueError, match="val_ratio"):
    split.split_episodes(50, 1.0, None, seed=0)


def test_episode_step_mask():
  mask = split.episode_step_mask(np.array([3, 5, 9]), np.array([0, 2]))
  np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0, 1, 1, 1, 1])
