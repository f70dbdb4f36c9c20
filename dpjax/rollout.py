r"""Evaluate a trained policy in the Push-T simulator with the paper's test protocol.

    python -m dpjax.rollout --checkpoint=runs/pusht_lowdim            # 50 episodes, seeds 100000..100049
    python -m dpjax.rollout --checkpoint=RUN --num_episodes=10 --sampler=ddim --num_inference_steps=10
    python -m dpjax.rollout --checkpoint=RUN --step=all               # every kept checkpoint, then a summary

Protocol (Chi et al. 2023, Push-T): each episode runs at most 300 control steps; the policy sees the last
n_obs_steps observations (the first repeated while the history is short), predicts a `horizon`-step chunk, and
actions [n_obs_steps - 1, n_obs_steps - 1 + n_action_steps) are executed before re-planning. An episode's score is
its maximum reward; `mean_score` over the episodes is the paper's number. All environments advance together and
the policy is queried once per re-planning step for the whole batch.

Results go to RUN_DIR/eval/ (or --out): eval.json and videos of the first episodes with the goal drawn; with
--record_obs also visited_obs.npz, every observation history the policy planned from (`dpjax.visited_obs`: the
states an on-policy distillation lets the teacher label). With several steps (--step=all or a list), each
checkpoint's go to RUN_DIR/eval/checkpoints/<step>/ and summary.json beside them has every mean score, the best and
the mean of the last 3 and 10 (`evaluate_checkpoints`).
"""
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
from absl import flags

from dpjax import cli, control, files, policy as policy_lib, visited_obs
from dpjax.data import obs_keys as obs_keys_lib, pusht, run_obs_keys
from dpjax.diffusion import sampler, schedules

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Training run directory (holding checkpoints/) to evaluate.")
flags.DEFINE_string("step", None, "Checkpoint step, latest (the default) or best: the one with the highest "
                    "in-training rollout score (see config.train.keep_best_checkpoints); or several, each scored in "
                    "turn with the best and the mean of the last ones summarised: all (every kept checkpoint) or a "
                    "comma-separated list of steps.")
flags.DEFINE_integer("num_episodes", 50, "Number of test episodes.")
flags.DEFINE_integer("seed_start", 100000, "Seed of the first episode; episode i uses seed_start + i.")
flags.DEFINE_list("seeds", None, "Explicit comma-separated episode seeds (overrides num_episodes/seed_start).")
flags.DEFINE_integer("max_steps", 300, "Maximum control steps per episode.")
flags.DEFINE_enum("sampler", None, list(policy_lib.SAMPLERS), "Reverse-chain sampler (default: the run's config): "
                  "ddpm or ddim for a noise-prediction policy; euler, heun or ancestral (stochastic) for a "
                  "flow policy.")
flags.DEFINE_integer("num_inference_steps", None, "Reverse-chain steps (default: the run's config); network calls "
                     "per chunk are this, twice for heun.")
flags.DEFINE_enum("timestep_spacing", None, list(schedules.TIMESTEP_SPACINGS),
                  "Which training steps a DDPM/DDIM chain of fewer than K steps visits (default: the run's, usually "
                  "leading; trailing starts from pure noise).")
flags.DEFINE_enum("compute_dtype", None, list(policy_lib.COMPUTE_DTYPES),
                  "Compute dtype of the networks (default: the run's, usually auto = float32 on CPU, bfloat16 on "
                  "GPU/TPU; bfloat16_matmuls: bfloat16 matmul operands only, for CPUs with bfloat16 units); "
                  "weights stay float32.")
flags.DEFINE_bool("fused_sampling", None, "U-Net policies: run each conv block's norm, Mish, FiLM and residual as "
                  "one Pallas kernel in the chain on CUDA at small batch (default: the run's, usually off).")
flags.DEFINE_integer("n_action_steps", None, "Actions executed from each planned chunk before re-planning "
                     "(default: the run's; 1 .. horizon - n_obs_steps + 1). Fewer re-plan more often.")
flags.DEFINE_integer("latency_steps", 0, "Control steps the policy takes to answer, simulated: each chunk is planned "
                     "that many steps before the current one runs out and its first that many actions are skipped "
                     "(0 to the actions a chunk has left after those it executes).")
flags.DEFINE_bool("ema", True, "Use the EMA weights (default) or, with --noema, the raw weights.")
flags.DEFINE_string("out", None, "Output folder (default: CHECKPOINT/eval; for several steps "
                    "CHECKPOINT/eval/checkpoints, one folder per step and summary.json).")
flags.DEFINE_integer("num_videos", 4, "Save videos of this many first episodes.")
flags.DEFINE_integer("video_size", 256, "Video frame size in pixels.")
flags.DEFINE_integer("policy_seed", 0, "Seed of the policy's sampling noise.")
flags.DEFINE_bool("policy_seed_per_checkpoint", False, "Checkpoint N samples with policy seed --policy_seed + N, so "
                  "each checkpoint draws its own noise, as the original's in-training rollouts did (the paper's best "
                  "is over such draws). Default: one seed for all, which pairs the checkpoints' draws.")
flags.DEFINE_bool("record_obs", False, "Also write OUT/visited_obs.npz: the observation history of every re-plan "
                  "of every unfinished episode (for config.distill.visited_obs; use seeds other than the test's).")


# evaluate()'s arguments that decide its scores besides the weights (`protocol`'s).
PROTOCOL_ARGS = ("seeds", "num_episodes", "seed_start", "max_steps", "method", "num_inference_steps", "policy_seed",
                 "latency_steps", "obs_keys")
# Means over the last k evaluated checkpoints in a summary: issue 12's 3, and the paper's 10 (Chi et al. 2023,
# Table 1: the best checkpoint / the mean of the last 10, checkpoints every 50 epochs).
MEAN_OF_LAST = (3, 10)


def protocol(spec: policy_lib.PolicySpec, *, seeds=None, num_episodes: int = 50, seed_start: int = 100000,
             max_steps: int = 300, method: str | None = None, num_inference_steps: int | None = None,
             policy_seed: int = 0, latency_steps: int = 0, obs_keys: obs_keys_lib.ObsKeys | None = None) -> dict:
  """The settings `evaluate` runs a policy of `spec` under, as eval.json records them: everything that decides the
  scores besides the weights (arguments as `evaluate`'s; defaults resolved from the spec). Raises ValueError for
  settings that cannot run (no episodes, no control step, a sampler of the other objective, observations the
  simulator does not record)."""
  seeds = list(range(seed_start, seed_start + num_episodes)) if seeds is None else [int(s) for s in seeds]
  if not seeds:
    raise ValueError("No episodes to run: give --num_episodes >= 1 or --seeds.")
  if max_steps < 1:
    raise ValueError(f"--max_steps={max_steps}: an episode needs at least one control step.")
  keys = _obs_keys(spec, obs_keys)
  pusht.check_env_compatible(spec.obs_shapes, spec.action_dim, keys)
  method = spec.sampler if method is None else method
  num_inference_steps = spec.num_inference_steps if num_inference_steps is None else num_inference_steps
  sampler.check_method(spec.objective, method)
  control.check_latency_steps(latency_steps, spec)
  return {
      "num_episodes": len(seeds),
      "seeds": seeds,
      "max_steps": max_steps,
      "sampler": method,
      "num_inference_steps": num_inference_steps,
      "network_calls_per_chunk": sampler.network_calls(method, num_inference_steps),
      "timestep_spacing": spec.timestep_spacing,
      "n_action_steps": spec.n_action_steps,
      "latency_steps": latency_steps,
      "obs_keys": obs_keys_lib.format_obs_keys(keys),
      "compute_dtype": policy_lib.compute_dtype_name(spec.compute_dtype),
      "fused_sampling": spec.fused_sampling,
      "policy_seed": policy_seed,
  }


def _obs_keys(spec: policy_lib.PolicySpec, obs_keys: obs_keys_lib.ObsKeys | None) -> obs_keys_lib.ObsKeys:
  """How the policy's observations are built from the simulator's arrays: `obs_keys`, else the Push-T preset with
  the policy's observation shapes."""
  return pusht.obs_keys_for_shapes(spec.obs_shapes) if obs_keys is None else obs_keys


def evaluate(policy: policy_lib.Policy, *, seeds=None, num_episodes: int = 50, seed_start: int = 100000,
             max_steps: int = 300, method: str | None = None, num_inference_steps: int | None = None,
             out_dir=None, num_videos: int = 4, video_size: int = 256, policy_seed: int = 0,
             show_progress: bool = True, checkpoint_step: int | None = None, ema: bool | None = None,
             record_obs: bool = False, obs_keys: obs_keys_lib.ObsKeys | None = None, latency_steps: int = 0,
             checkpoint_id: str | None = None) -> dict:
  """Runs the test protocol; returns (and writes to out_dir/eval.json) the scores and the settings they were
  measured under (`protocol`), with `checkpoint_step`, `checkpoint_id` (`checkpoint.checkpoint_identity`) and `ema`
  (which weights), where the caller names them.
  record_obs (needs out_dir): also writes out_dir/visited_obs.npz with the history of every re-plan of every
  unfinished episode. obs_keys: how the policy's observations are built from the simulator's arrays (its run's
  `config.data.obs_keys`, `data.run_obs_keys`); default: the Push-T preset with the policy's observation shapes.
  latency_steps: control steps the policy takes to answer (`control.RecedingHorizonController`: each chunk is
  planned that much earlier and its late actions are skipped; the simulator does not wait, except for an episode's
  first plan)."""
  from dpjax.envs import vector, video  # the simulator is an optional extra
  spec = policy.spec
  settings = protocol(spec, seeds=seeds, num_episodes=num_episodes, seed_start=seed_start, max_steps=max_steps,
                      method=method, num_inference_steps=num_inference_steps, policy_seed=policy_seed,
                      latency_steps=latency_steps, obs_keys=obs_keys)
  if record_obs and out_dir is None:
    raise ValueError("record_obs writes out_dir/visited_obs.npz; give out_dir.")
  if out_dir is not None and num_videos > 0 and video_size < 1:
    raise ValueError(f"--video_size={video_size}: give the videos' side in pixels (>= 1; 256 by default).")
  if out_dir is not None:   # made (or refused) now, not after every episode has run
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
  seeds, keys = settings["seeds"], _obs_keys(spec, obs_keys)
  controller = control.RecedingHorizonController(policy, jax.random.key(policy_seed), method=settings["sampler"],
                                                 num_inference_steps=settings["num_inference_steps"],
                                                 latency_steps=latency_steps)
  envs = vector.PushTVectorEnv(len(seeds), obs_type="arrays", arrays=obs_keys_lib.replay_keys(keys, ()))
  obs = obs_keys_lib.build_obs(envs.reset(seeds), keys)
  num_videos = min(num_videos, len(seeds)) if out_dir is not None else 0
  frames = [[envs.envs[i].render(video_size)] for i in range(num_videos)]
  max_reward = np.zeros(len(seeds))
  success = np.zeros(len(seeds), bool)
  done = np.zeros(len(seeds), bool)
  visited = []   # (control step, episode indices, their histories) of every re-plan, with record_obs
  start = time.perf_counter()
  progress = _progress(max_steps, show_progress)
  for control_step in range(max_steps):
    if done.all():
      break
    was_done = done.copy()
    num_plans = controller.num_plans
    action = controller.act(obs)
    if record_obs and controller.num_plans > num_plans:
      running = np.flatnonzero(~was_done)
      visited.append((control_step, running, {k: v[running] for k, v in controller.last_plan_obs.items()}))
    arrays, reward, step_done, infos = envs.step(action)
    obs = obs_keys_lib.build_obs(arrays, keys)
    max_reward = np.maximum(max_reward, np.where(done, max_reward, reward))
    success |= np.array([bool(info.get("success", False)) for info in infos]) & ~done
    done = done | step_done
    for i in range(num_videos):
      if not was_done[i]:  # a finished episode's video ends on its last frame
        frames[i].append(envs.envs[i].render(video_size))
    progress.update(1)
    progress.set_postfix(mean_score=f"{max_reward.mean():.3f}", refresh=False)
  progress.close()
  result = {
      "mean_score": float(max_reward.mean()),
      "success_rate": float(success.mean()),
      "scores": [float(r) for r in max_reward],
      "successes": [bool(x) for x in success],
      **settings,
      "wall_seconds": time.perf_counter() - start,
  }
  if checkpoint_step is not None:
    result["checkpoint_step"] = int(checkpoint_step)
  if checkpoint_id is not None:
    result["checkpoint_id"] = checkpoint_id
  if ema is not None:
    result["ema"] = bool(ema)
  if out_dir is not None:
    result["videos"] = [str(video.write_video(out_dir / f"episode_{seeds[i]}.mp4", np.stack(frames[i]), fps=10))
                        for i in range(num_videos)]
    if record_obs:
      result["visited_obs"] = str(_save_visited(out_dir / "visited_obs.npz", visited, seeds))
      result["num_visited_obs"] = int(sum(len(rows) for _, rows, _ in visited))
    files.write_text_atomic(out_dir / "eval.json", json.dumps(result, indent=2))
  return result


def _save_visited(path, visited, seeds):
  """Writes the re-plans' histories [(control step, episode indices [n], {key: [n, To, ...]}), ...] as one file."""
  seeds = np.asarray(seeds)
  rows = [episodes for _, episodes, _ in visited]
  obs = {k: np.concatenate([o[k] for _, _, o in visited]) for k in visited[0][2]}
  steps = np.concatenate([np.full(len(episodes), step) for step, episodes, _ in visited])
  return visited_obs.save(path, obs, seeds[np.concatenate(rows)], steps)


def _progress(total: int, show: bool):
  from tqdm import tqdm
  return tqdm(total=total, desc="rollout", unit="step", disable=not show, dynamic_ncols=True)


def evaluate_checkpoints(run_dir, steps, out_dir, *, use_ema: bool = True, adapt=None,
                         policy_seed_per_checkpoint: bool = False, **evaluate_args) -> dict:
  """Scores checkpoints `steps` of the run in `run_dir` one after another under one protocol, in this process (the
  sampling chain compiles once for all of them): out_dir/<step>/eval.json each (`evaluate`, with `evaluate_args`),
  then out_dir/summary.json (`score_summary` of their mean scores, "settings": `protocol`'s with `ema`, and the
  checkpoints skipped); returns the summary. A step whose out_dir/<step>/eval.json was written under the same
  settings and weights is read, not run again, so a stopped evaluation resumes where it stopped. A checkpoint that
  cannot be loaded (damaged, or deleted meanwhile by a training run that keeps only its newest) is skipped with a
  line naming it and why. adapt: Policy -> Policy, applied to each loaded policy (the command line's sampling
  overrides). policy_seed_per_checkpoint: each checkpoint samples with its own policy seed (`checkpoint_policy_seed`),
  recorded in its eval.json; the summary's settings then hold the base seed and the rule."""
  from dpjax import checkpoint
  out_dir = pathlib.Path(out_dir)
  base_seed = evaluate_args.pop("policy_seed", 0)
  results, skipped, settings, first_step = {}, {}, None, None
  for step in steps:
    evaluate_args["policy_seed"] = checkpoint_policy_seed(base_seed, step, policy_seed_per_checkpoint)
    protocol_args = {k: v for k, v in evaluate_args.items() if k in PROTOCOL_ARGS}
    try:
      pol = checkpoint.load_policy(run_dir, use_ema=use_ema, step=step)
    except checkpoint.CheckpointError as e:   # damaged, or deleted since (a running training keeps the newest)
      print(f"dpjax.rollout: skipped checkpoint {step}: {e}")
      skipped[str(step)] = str(e)
      continue
    pol = adapt(pol) if adapt is not None else pol
    step_settings = protocol(pol.spec, **protocol_args)
    if settings is not None:
      _check_one_protocol(settings, step_settings, first_step, step, policy_seed_per_checkpoint)
    else:
      settings, first_step = step_settings, step
    identity = checkpoint.checkpoint_identity(run_dir, step)
    wanted = {**step_settings, "checkpoint_step": int(step), "checkpoint_id": identity, "ema": use_ema}
    earlier = _read_eval(out_dir / str(step) / "eval.json")
    if earlier is not None and _same_settings(earlier, wanted, evaluate_args.get("record_obs", False)):
      print(f"dpjax.rollout: checkpoint {step} was evaluated under these settings: {out_dir / str(step)}")
      results[step] = earlier
      continue
    results[step] = evaluate(pol, out_dir=out_dir / str(step), checkpoint_step=step, checkpoint_id=identity,
                             ema=use_ema, **evaluate_args)
  if not results:
    raise checkpoint.CheckpointError(f"No checkpoint among steps {list(steps)} of {run_dir} could be loaded (why: the "
                                     "lines above); name intact steps with --step, or train again.")
  # Only a rule that is on joins the settings, so summaries written before it existed compare with today's.
  seeding = {"policy_seed": base_seed, "policy_seed_per_checkpoint": True} if policy_seed_per_checkpoint else {}
  summary = {**score_summary({step: r["mean_score"] for step, r in results.items()}),
             "success_rates": {str(step): r["success_rate"] for step, r in sorted(results.items())},
             "run": str(run_dir), "settings": {**settings, "ema": use_ema, **seeding}, "skipped": skipped}
  files.write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2))
  return summary


def _check_one_protocol(first: dict, current: dict, first_step: int, step: int, seed_per_checkpoint: bool) -> None:
  """A ValueError when checkpoint `step` would be scored under other settings than `first_step` (a run resumed with
  another sampler saves it in its later checkpoints): one summary, one protocol."""
  differ = [k for k in first if first[k] != current.get(k) and not (k == "policy_seed" and seed_per_checkpoint)]
  if differ:
    shown = ", ".join(f"{k}={current.get(k)!r} (checkpoint {first_step}: {first[k]!r})" for k in differ)
    raise ValueError(f"checkpoint {step} samples with {shown}; give the setting on the command line (e.g. --sampler, "
                     "--num_inference_steps) so every checkpoint is scored alike, or name the steps with --step.")


def checkpoint_policy_seed(policy_seed: int, step: int, per_checkpoint: bool) -> int:
  """The policy seed that checkpoint `step` samples with: `policy_seed`, or with `per_checkpoint` policy_seed + step.
  One seed for every checkpoint draws the same noise for each, so their scores share its luck (measured on the
  quickstart run: standard deviations of 0.019 shared and 0.017 each; experiments/sampling_spread/) and their
  differences are sharper; a seed per checkpoint makes each score an independent draw, as the original's in-training
  rollouts were (their noise came from a generator that training moved on), which the paper's best is a maximum of."""
  return policy_seed + int(step) if per_checkpoint else policy_seed


def score_summary(mean_scores: dict[int, float]) -> dict:
  """Mean scores by checkpoint step -> the checkpoint-selection numbers papers report: the best checkpoint's score
  and step (the latest of equal ones), and the mean over the last k evaluated checkpoints for each k in MEAN_OF_LAST
  (None where fewer than k were evaluated)."""
  steps = sorted(mean_scores)
  best = max(steps, key=lambda step: (mean_scores[step], step))
  summary = {"mean_scores": {str(step): mean_scores[step] for step in steps}, "best_step": best,
             "best_mean_score": mean_scores[best]}
  for k in MEAN_OF_LAST:
    summary[f"mean_of_last_{k}"] = float(np.mean([mean_scores[s] for s in steps[-k:]])) if len(steps) >= k else None
  return summary


def _read_eval(path: pathlib.Path) -> dict | None:
  """An eval.json's record, or None where there is none (or an unreadable one, which is then run again)."""
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def _same_settings(earlier: dict, wanted: dict, record_obs: bool) -> bool:
  """Whether an earlier evaluation's record answers this one: the same settings, weights, and visited observations
  where they are asked for."""
  return all(earlier.get(k) == v for k, v in wanted.items()) and (not record_obs or "visited_obs" in earlier)


def main(argv):
  cli.start_run_reader(argv, FLAGS.checkpoint)
  cli.use_compilation_cache(FLAGS.compilation_cache_dir)
  from dpjax import checkpoint
  # Missing or damaged checkpoints, a policy the simulator cannot run, bad values, a full disk: one line.
  with cli.errors_as_one_line("dpjax.rollout", (checkpoint.CheckpointError, ValueError, OSError)):
    run_dir = pathlib.Path(FLAGS.checkpoint)
    # The run's own observation keys; a run without config.json (an older import) observes a Push-T preset.
    keys = run_obs_keys(run_dir) if (run_dir / "config.json").exists() else None
    args = dict(seeds=FLAGS.seeds, num_episodes=FLAGS.num_episodes, seed_start=FLAGS.seed_start,
                max_steps=FLAGS.max_steps, method=FLAGS.sampler, num_inference_steps=FLAGS.num_inference_steps,
                num_videos=FLAGS.num_videos, video_size=FLAGS.video_size, policy_seed=FLAGS.policy_seed,
                record_obs=FLAGS.record_obs, obs_keys=keys, latency_steps=FLAGS.latency_steps)
    several = checkpoint.names_several_steps(FLAGS.step)
    try:
      if several:
        steps = checkpoint.steps_from_flag(FLAGS.step, run_dir)
        out = pathlib.Path(FLAGS.out) if FLAGS.out else run_dir / "eval" / "checkpoints"
        summary = evaluate_checkpoints(run_dir, steps, out, use_ema=FLAGS.ema, adapt=_with_sampling_flags,
                                       policy_seed_per_checkpoint=FLAGS.policy_seed_per_checkpoint, **args)
      else:
        step = checkpoint.step_from_flag(FLAGS.step, run_dir, "dpjax.rollout")
        pol, step = checkpoint.load_policy_and_step(run_dir, use_ema=FLAGS.ema, step=step)
        pol = _with_sampling_flags(pol)
        args["policy_seed"] = checkpoint_policy_seed(FLAGS.policy_seed, step, FLAGS.policy_seed_per_checkpoint)
        out = pathlib.Path(FLAGS.out) if FLAGS.out else run_dir / "eval"
        result = evaluate(pol, out_dir=out, checkpoint_step=step, ema=FLAGS.ema,
                          checkpoint_id=checkpoint.checkpoint_identity(run_dir, step), **args)
    except ImportError as e:
      if FLAGS.traceback:
        raise
      raise SystemExit(f"dpjax.rollout: the Push-T simulator is not installed ({e}); pip install -e '.[env]'.") from e
  if several:
    print(_summary_table(summary))
    print(f"dpjax.rollout: wrote {out / 'summary.json'}")
    return
  summary = {k: result[k] for k in ("mean_score", "success_rate", "num_episodes", "wall_seconds")}
  print(json.dumps(summary, indent=2))
  print(f"dpjax.rollout: wrote {out / 'eval.json'}")


def _with_sampling_flags(pol: policy_lib.Policy) -> policy_lib.Policy:
  """The policy with the command line's overrides of its run's sampling settings."""
  if FLAGS.compute_dtype:
    pol = pol.replace(spec=dataclasses.replace(pol.spec, compute_dtype=FLAGS.compute_dtype))
  if FLAGS.timestep_spacing:
    pol = pol.replace(spec=dataclasses.replace(pol.spec, timestep_spacing=FLAGS.timestep_spacing))
  if FLAGS.n_action_steps is not None:
    pol = policy_lib.with_n_action_steps(pol, FLAGS.n_action_steps)
  if FLAGS.fused_sampling is not None:
    policy_lib.check_fused_sampling(pol.spec.denoiser, FLAGS.fused_sampling)
    pol = pol.replace(spec=dataclasses.replace(pol.spec, fused_sampling=FLAGS.fused_sampling))
  return pol


def _summary_table(summary: dict) -> str:
  """`evaluate_checkpoints`' summary as a markdown table of mean scores by step, then the selection numbers."""
  lines = ["| checkpoint | mean score | success rate |", "|---|---|---|"]
  lines += [f"| {step} | {score:.3f} | {summary['success_rates'][step]:.2f} |"
            for step, score in summary["mean_scores"].items()]
  lines.append(f"best: {summary['best_mean_score']:.3f} (step {summary['best_step']})")
  for k in MEAN_OF_LAST:
    mean = summary[f"mean_of_last_{k}"]
    lines.append(f"mean of the last {k}: " + (f"{mean:.3f}" if mean is not None else f"- (fewer than {k} evaluated)"))
  return "\n".join(lines)


def run_main():
  cli.run(main, "dpjax.rollout")


if __name__ == "__main__":
  run_main()
