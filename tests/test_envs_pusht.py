"""Push-T environment: keypoint constants, seed resets, coverage and reward, vector env, video."""
import warnings

import imageio
import jax
import numpy as np
import pytest
import zarr

pytest.importorskip("gym_pusht")

from dpjax.envs import pusht, vector, video  # noqa: E402

GOAL_STATE = np.array([450.0, 450.0, *pusht.GOAL_POSE])  # agent in a far corner, block on the goal.


def _open(path):
  return zarr.open_group(str(path), mode="r")


@pytest.mark.realdata
def test_block_keypoints_reproduce_every_recorded_keypoint(real_pusht_path):
  group = _open(real_pusht_path)
  state, recorded = group["data/state"][:], group["data/keypoint"][:]
  ends = group["meta/episode_ends"][:]
  computed = pusht.keypoints_from_state(state)
  error = np.abs(computed - recorded).max(axis=(1, 2))
  # The typical step is float32 rounding of the recording.
  assert np.median(error) < 1e-4
  # The recorded keypoints lead the recorded state by a fraction of a step (see BLOCK_KEYPOINTS), so each step's
  # residual is bounded by a share of the keypoints' motion to the next recorded step (measured max 0.27).
  motion = np.abs(computed[1:] - computed[:-1]).max(axis=(1, 2))
  is_last = np.isin(np.arange(len(state)), ends - 1)
  inner = np.flatnonzero(~is_last)
  np.testing.assert_array_less(error[inner], 1e-4 + 0.3 * motion[inner])
  assert error[is_last].max() < 0.05
  assert error.max() < 2.5


@pytest.mark.realdata
@pytest.mark.parametrize("episode", [0, 1, 2, 7, 100, 205])
def test_seed_reset_is_recorded_first_state(real_pusht_path, episode):
  group = _open(real_pusht_path)
  start = 0 if episode == 0 else int(group["meta/episode_ends"][episode - 1])
  recorded = group["data/state"][start].astype(np.float64)
  env = pusht.PushTEnv()
  obs = env.reset(episode)
  # 1e-4 px: the recording is float32 (spacing 3e-5 at 512 px).
  np.testing.assert_allclose(env.state[:4], recorded[:4], atol=1e-4)
  assert abs((env.state[4] - recorded[4] + np.pi) % (2 * np.pi) - np.pi) < 1e-6
  np.testing.assert_allclose(obs[:18].reshape(9, 2), pusht.keypoints_from_state(env.state), atol=1e-4)


def test_reset_to_state_places_block_exactly():
  state = np.array([60.0, 60.0, 300.0, 250.0, 2.5])  # agent clear of the block, so the settling step is still.
  env = pusht.PushTEnv()
  obs = env.reset_to_state(state)
  np.testing.assert_allclose(env.state, state, atol=1e-9)
  np.testing.assert_array_equal(obs, pusht.obs_from_state(state))
  assert obs.shape == (pusht.OBS_DIM,) and obs.dtype == np.float32


def test_goal_pose_has_full_coverage_and_succeeds():
  assert pusht.coverage_from_state(GOAL_STATE) == pytest.approx(1.0, abs=1e-9)
  env = pusht.PushTEnv()
  env.reset_to_state(GOAL_STATE)
  _, reward, terminated, info = env.step(GOAL_STATE[:2])  # hold the agent still, far from the block
  assert info["coverage"] == pytest.approx(1.0, abs=1e-9)
  assert info["success"] and terminated and reward == 1.0
  np.testing.assert_allclose(info["state"], GOAL_STATE, atol=1e-9)


def test_coverage_matches_simulator_and_reward_clips():
  env = pusht.PushTEnv()
  env.reset(3)
  _, reward, terminated, info = env.step([256.0, 256.0])
  assert info["coverage"] == pytest.approx(pusht.coverage_from_state(info["state"]), abs=1e-9)
  assert reward == pytest.approx(min(info["coverage"] / 0.95, 1.0))
  assert terminated == (info["coverage"] > 0.95)
  assert [pusht.reward_from_coverage(c) for c in (0.0, 0.475, 0.95, 0.97, 1.0)] == pytest.approx([0, .5, 1, 1, 1])


def test_image_observation_and_render():
  env = pusht.PushTEnv(obs_type="image")
  obs = env.reset(0)
  assert obs["image"].shape == (96, 96, 3) and obs["image"].dtype == np.uint8
  assert obs["agent_pos"].dtype == np.float32
  np.testing.assert_array_equal(obs["agent_pos"], env.state[:2].astype(np.float32))
  frame = env.render(256)
  assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
  green = np.all(frame == (144, 238, 144), axis=-1)  # pygame "LightGreen": the goal T is drawn
  assert green.any()


@pytest.mark.parametrize("obs_type, shapes", [
    ("lowdim", {"low_dim": ((3, 20), np.float32)}),
    ("image", {"image": ((3, 96, 96, 3), np.uint8), "agent_pos": ((3, 2), np.float32)}),
])
def test_vector_env_shapes(obs_type, shapes):
  envs = vector.PushTVectorEnv(3, obs_type=obs_type)
  for obs in (envs.reset([0, 1, 2]), envs.step(np.full((3, 2), 256.0))[0]):
    assert {k: (v.shape, v.dtype) for k, v in obs.items()} == shapes


def test_the_recorded_arrays_build_the_presets_observations_bit_for_bit():
  from dpjax.data import obs_keys, pusht as pusht_data  # pylint: disable=g-import-not-at-top
  arrays = vector.PushTVectorEnv(2, obs_type="arrays", arrays=pusht_data.SIMULATOR_ARRAYS)
  presets = {t: vector.PushTVectorEnv(2, obs_type=t) for t in ("lowdim", "image")}
  rng = np.random.default_rng(0)
  recorded, expected = arrays.reset([3, 4]), {t: envs.reset([3, 4]) for t, envs in presets.items()}
  assert {k: (v.shape, v.dtype) for k, v in recorded.items()} == {
      "img": ((2, 96, 96, 3), np.uint8), "keypoint": ((2, 9, 2), np.float32), "n_contacts": ((2, 1), np.float32),
      "state": ((2, 5), np.float32)}
  assert (recorded["n_contacts"] == 0).all()
  for _ in range(5):
    for obs_type, obs in expected.items():
      built = obs_keys.build_obs(recorded, pusht_data.obs_keys(obs_type))
      assert built.keys() == obs.keys()
      for key in obs:
        np.testing.assert_array_equal(built[key], obs[key])
        assert built[key].dtype == obs[key].dtype
    action = rng.uniform(100, 400, (2, 2))
    recorded = arrays.step(action)[0]
    expected = {t: envs.step(action)[0] for t, envs in presets.items()}
  with pytest.raises(ValueError, match=r"records \['img', 'keypoint', 'n_contacts', 'state'\], not \['velocity'\]"):
    pusht.PushTEnv(obs_type="arrays", arrays=("state", "velocity"))


def test_vector_env_freezes_done_envs():
  envs = vector.PushTVectorEnv(2)
  envs.reset_to_states(np.stack([GOAL_STATE, [100.0, 100.0, 300.0, 300.0, 1.0]]))
  obs, rewards, dones, _ = envs.step(np.stack([GOAL_STATE[:2], [200.0, 100.0]]))
  assert dones.tolist() == [True, False] and rewards[0] == 1.0
  frozen_state = envs.envs[0].state
  later, later_rewards, later_dones, infos = envs.step(np.array([[300.0, 300.0], [300.0, 100.0]]))
  np.testing.assert_array_equal(later["low_dim"][0], obs["low_dim"][0])
  np.testing.assert_array_equal(envs.envs[0].state, frozen_state)  # not stepped: the agent did not move
  assert later_rewards[0] == rewards[0] and later_dones[0] and infos[0]["success"]
  assert not np.array_equal(later["low_dim"][1], obs["low_dim"][1])


def test_write_video_mp4_is_readable_without_a_fork_warning(tmp_path):
  jax.numpy.ones(3).block_until_ready()   # JAX running: it warns at every os.fork() from then on
  frames = np.random.default_rng(0).integers(0, 255, size=(5, 64, 64, 3), dtype=np.uint8)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    path = video.write_video(tmp_path / "rollout.mp4", frames, fps=10)
  assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]
  assert path.suffix == ".mp4"
  read = np.stack(imageio.mimread(path, format="FFMPEG"))
  assert read.shape == frames.shape


def test_write_video_falls_back_to_gif(tmp_path, monkeypatch):
  monkeypatch.setattr(video, "_ffmpeg_available", lambda: False)
  frames = np.zeros((3, 32, 32, 3), dtype=np.uint8)
  frames[:, 0, 0] = np.arange(3)[:, None] * 100  # distinct frames: GIF writers merge identical ones
  path = video.write_video(tmp_path / "rollout.mp4", frames)
  assert path.suffix == ".gif" and len(imageio.mimread(path)) == 3


def test_a_video_write_that_fails_midway_leaves_the_previous_video_whole(tmp_path, monkeypatch):
  frames = np.random.default_rng(0).integers(0, 255, size=(6, 64, 64, 3), dtype=np.uint8)
  path = video.write_video(tmp_path / "episode.mp4", frames)
  real_writer = imageio.get_writer

  class Killed(Exception):
    pass

  def writer_killed_after_two_frames(*args, **kwargs):
    writer, written = real_writer(*args, **kwargs), []

    def append_data(frame):
      if len(written) == 2:
        raise Killed
      written.append(writer.append_data(frame))
    return type("W", (), {"__enter__": lambda self: self, "append_data": staticmethod(append_data),
                          "__exit__": lambda self, *exc: writer.close()})()

  monkeypatch.setattr(video.imageio, "get_writer", writer_killed_after_two_frames)
  with pytest.raises(Killed):
    video.write_video(path, frames[:4])
  assert len(imageio.mimread(path, format="FFMPEG")) == 6   # the earlier evaluation's video, whole
  assert [p.name for p in tmp_path.iterdir()] == ["episode.mp4"]   # the partial one is gone
