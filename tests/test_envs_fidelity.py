"""Replaying demonstrations in PushTEnv reproduces the recorded poses, keypoints, coverage and images."""
import json

import pytest
import zarr

pytest.importorskip("gym_pusht")

from dpjax.envs import fidelity  # noqa: E402

# Replayed open loop from the first state, the three episodes drift by at most 4e-5 px (the recording is float32:
# spacing 3e-5 px at 512 px). Over all 206 episodes the per-episode max is 2.6e-5 px at the median and < 1.3e-3 px
# in 205 (episode 107 reaches 0.23 px, where a contact amplifies float32 rounding). 1e-3 px leaves room for platform
# rounding, while any physics change (gains, substeps, friction, inertia, placement order) moves the block by whole
# pixels within a few steps.
POSE_TOLERANCE_PX = 1e-3
ANGLE_TOLERANCE_DEG = 1e-3


@pytest.mark.realdata
@pytest.mark.parametrize("episode", [0, 1, 2])
def test_replay_reproduces_recording(real_pusht_path, episode):
  metrics = fidelity.episode_metrics(zarr.open_group(str(real_pusht_path), mode="r"), episode, render_images=True)
  assert metrics["seed_reset_max_pos_error_px"] < 1e-4
  assert metrics["agent_max_error_px"] < POSE_TOLERANCE_PX
  assert metrics["block_max_error_px"] < POSE_TOLERANCE_PX
  assert metrics["angle_max_error_deg"] < ANGLE_TOLERANCE_DEG
  assert abs(metrics["final_coverage_sim"] - metrics["final_coverage_recorded"]) < 1e-6
  # Rendering (pygame 2.5.2 + OpenCV resize) is bit-exact with the dataset's images.
  assert metrics["image_mean_abs_diff"] == 0.0 and metrics["image_frac_pixels_differing"] == 0.0
  # Keypoints lead the recorded state slightly (see pusht.BLOCK_KEYPOINTS); the mean stays at a few 1e-3 px.
  assert metrics["keypoint_mean_error_px"] < 5e-3


@pytest.mark.realdata
def test_cli_writes_json(real_pusht_path, tmp_path, capsys):
  out = tmp_path / "fidelity.json"
  fidelity.main(["--zarr", str(real_pusht_path), "--episodes", "1", "--no-images", "--out", str(out)])
  report = json.loads(out.read_text())
  assert report["summary"]["episodes"] == 1 and len(report["episodes"]) == 1
  assert "block_max_error_px" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.parametrize("episodes", ["0", "207"])
def test_cli_refuses_episodes_the_file_lacks(real_pusht_path, capsys, episodes):
  with pytest.raises(SystemExit):
    fidelity.main(["--zarr", str(real_pusht_path), "--episodes", episodes, "--no-images"])
  assert f"--episodes={episodes}: {real_pusht_path} holds 206 episodes; give 1 to 206." in capsys.readouterr().err
