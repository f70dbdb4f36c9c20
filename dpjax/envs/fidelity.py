"""Replays demonstrations in `PushTEnv` and measures how closely the simulation reproduces the recordings.

    python -m dpjax.envs.fidelity --zarr PATH --episodes 20 [--images] [--out fidelity.json]

For each episode: the original seed-i reset is compared with the first recorded state; the environment is reset to
that state and the recorded actions are replayed; simulated agent and block poses, keypoints, final coverage and
(with --images) the rendered 96 x 96 observation images are compared with the recorded ones at every step.
"""
import argparse
import json

import numpy as np
import zarr

from dpjax.envs import pusht


def wrapped_angle_error(a, b):
  """|a - b| in radians, taken modulo 2 pi (the recorded angle is wrapped; the simulated one is too)."""
  return np.abs((np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi)


def load_episode(group, index):
  """Recorded arrays of one episode: state [T, 5], action [T, 2], keypoint [T, 9, 2]; `img` is read lazily."""
  ends = group["meta/episode_ends"][:]
  start, end = (0 if index == 0 else int(ends[index - 1])), int(ends[index])
  data = group["data"]
  episode = {key: data[key][start:end] for key in ("state", "action", "keypoint")}
  episode["slice"] = slice(start, end)
  return episode


def replay_episode(episode, render_images=False):
  """Replays one episode from its first recorded state.

  Returns:
    states float64 [T, 5] (simulated, aligned with the recording: states[t] follows actions[:t]),
    coverages [T] (coverages[0] of the reset state), images uint8 [T, 96, 96, 3] or None.
  """
  env = pusht.PushTEnv(obs_type="lowdim")
  env.reset_to_state(episode["state"][0])
  states, coverages = [env.state], [pusht.coverage_from_state(env.state)]
  images = [env.render(96, draw_action=False)] if render_images else None
  for action in episode["action"][:-1]:
    _, _, _, info = env.step(action)
    states.append(info["state"])
    coverages.append(info["coverage"])
    if render_images:
      images.append(env.render(96, draw_action=False))
  return np.stack(states), np.array(coverages), (np.stack(images) if render_images else None)


def episode_metrics(group, index, render_images=False):
  """Fidelity numbers of one episode (pixels of the 512 px window, degrees, 0..255 image intensities)."""
  episode = load_episode(group, index)
  recorded = episode["state"].astype(np.float64)
  seed_env = pusht.PushTEnv(obs_type="lowdim")
  seed_env.reset(index)
  seed_state = seed_env.state
  states, coverages, images = replay_episode(episode, render_images)

  agent_error = np.linalg.norm(states[:, :2] - recorded[:, :2], axis=-1)
  block_error = np.linalg.norm(states[:, 2:4] - recorded[:, 2:4], axis=-1)
  angle_error = np.degrees(wrapped_angle_error(states[:, 4], recorded[:, 4]))
  keypoint_error = np.linalg.norm(pusht.keypoints_from_state(states) - episode["keypoint"], axis=-1)
  metrics = {
      "episode": index,
      "steps": len(recorded),
      "seed_reset_max_pos_error_px": float(np.abs(seed_state[:4] - recorded[0, :4]).max()),
      "seed_reset_angle_error_deg": float(np.degrees(wrapped_angle_error(seed_state[4], recorded[0, 4]))),
      "agent_max_error_px": float(agent_error.max()),
      "agent_mean_error_px": float(agent_error.mean()),
      "block_max_error_px": float(block_error.max()),
      "block_mean_error_px": float(block_error.mean()),
      "angle_max_error_deg": float(angle_error.max()),
      "angle_mean_error_deg": float(angle_error.mean()),
      "keypoint_max_error_px": float(keypoint_error.max()),
      "keypoint_mean_error_px": float(keypoint_error.mean()),
      "final_coverage_sim": float(coverages[-1]),
      "final_coverage_recorded": float(pusht.coverage_from_state(recorded[-1])),
  }
  if render_images:
    recorded_images = group["data/img"][episode["slice"]]
    difference = np.abs(images.astype(np.float32) - recorded_images.astype(np.float32))
    metrics["image_mean_abs_diff"] = float(difference.mean())
    metrics["image_frac_pixels_differing"] = float((difference.max(axis=-1) > 0).mean())
  return metrics


def summarize(per_episode):
  """Worst case (max) and average over episodes of every metric."""
  keys = [k for k in per_episode[0] if k not in ("episode", "steps", "final_coverage_sim", "final_coverage_recorded")]
  summary = {f"{k}__max": max(m[k] for m in per_episode) for k in keys}
  summary.update({f"{k}__avg": float(np.mean([m[k] for m in per_episode])) for k in keys})
  coverage_gap = [abs(m["final_coverage_sim"] - m["final_coverage_recorded"]) for m in per_episode]
  summary["final_coverage_abs_diff__max"] = max(coverage_gap)
  summary["episodes"] = len(per_episode)
  summary["steps"] = int(sum(m["steps"] for m in per_episode))
  return summary


def format_table(per_episode):
  columns = [("ep", "episode", "{:d}"), ("steps", "steps", "{:d}"),
             ("seed_dpos", "seed_reset_max_pos_error_px", "{:.1e}"),
             ("agent_max", "agent_max_error_px", "{:.1e}"), ("block_max", "block_max_error_px", "{:.1e}"),
             ("block_mean", "block_mean_error_px", "{:.1e}"), ("ang_max_deg", "angle_max_error_deg", "{:.1e}"),
             ("kp_max", "keypoint_max_error_px", "{:.2e}"), ("kp_mean", "keypoint_mean_error_px", "{:.1e}"),
             ("cov_sim", "final_coverage_sim", "{:.4f}"), ("cov_rec", "final_coverage_recorded", "{:.4f}")]
  if "image_mean_abs_diff" in per_episode[0]:
    columns += [("img_mad", "image_mean_abs_diff", "{:.2e}"), ("img_frac", "image_frac_pixels_differing", "{:.1e}")]
  lines = [" ".join(f"{name:>11}" for name, _, _ in columns)]
  for m in per_episode:
    lines.append(" ".join(f"{fmt.format(m[key]):>11}" for _, key, fmt in columns))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--zarr", required=True, help="path of pusht_cchi_v7_replay.zarr")
  parser.add_argument("--episodes", type=int, default=20, help="replay episodes 0 .. N-1")
  parser.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                      help="also render and compare the 96x96 images (about 3x slower)")
  parser.add_argument("--out", default="", help="write per-episode metrics and the summary as JSON here")
  args = parser.parse_args(argv)

  group = zarr.open_group(args.zarr, mode="r")
  num_episodes = group["meta/episode_ends"].shape[0]
  if not 1 <= args.episodes <= num_episodes:
    parser.error(f"--episodes={args.episodes}: {args.zarr} holds {num_episodes} episodes; give 1 to {num_episodes}.")
  per_episode = [episode_metrics(group, i, args.images) for i in range(args.episodes)]
  summary = summarize(per_episode)
  print(format_table(per_episode))
  print(json.dumps(summary, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"summary": summary, "episodes": per_episode}, f, indent=1)
  return summary


if __name__ == "__main__":
  main()
