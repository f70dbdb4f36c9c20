r"""How much of a checkpoint's 50-episode score is the sampler's luck, and what that makes of "the best checkpoint".

Reads every <folder>/<step>/eval.json under the folders given (each folder one `dpjax.rollout --step=all` of the same
run under one --policy_seed; the test seeds, DDPM-100, EMA weights), then prints:
  1. per checkpoint: its mean score under each policy seed, and their mean, standard deviation, min and max;
  2. the spread split up: within a checkpoint (the policy seed's, i.e. the DDPM chain's noise on fixed test seeds),
     and of that the part a seed shares across the checkpoints and the rest; between checkpoints (what remains of
     the checkpoints' seed-averaged scores after that noise);
  3. per test episode, how often its outcome changes with the policy seed (an episode under 0.3 in some draws and
     over 0.9 in others is a coin the sampler tosses);
  4. the expected best of K evaluations of checkpoints on a plateau like these, as `rollout --step=all` reports
     "best" and the paper reports its best of ~100 in-training rollouts (5,000 epochs, one every 50): drawn from the
     measured episodes (each new evaluation a checkpoint at random, each test episode's score from one of its
     policy seeds at random), and from a normal model with the measured spreads, for independent noise per
     checkpoint and for one policy seed shared by all.

    python experiments/sampling_spread/table.py experiments/quickstart_cpu/session24_checkpoints \
      experiments/sampling_spread/policy_seed_*
"""
import pathlib
import sys

import numpy as np

from dpjax import compare

KS = (1, 3, 10, 20, 30, 60, 100)
DRAWS = 20000


def load_scores(folders) -> dict[int, dict[int, np.ndarray]]:
  """{step: {policy_seed: per-episode scores in test-seed order}} from the folders' <step>/eval.json files."""
  scores: dict[int, dict[int, np.ndarray]] = {}
  seeds = None
  for folder in folders:
    for path in sorted(pathlib.Path(folder).glob("*/eval.json")):
      record = compare.load_eval(path)
      if seeds is None:
        seeds = record["seeds"]
      if record["seeds"] != seeds:
        raise ValueError(f"{path} ran other test seeds than the first evaluation; give evaluations of one protocol.")
      step, policy_seed = int(path.parent.name), int(record.get("policy_seed", 0))
      scores.setdefault(step, {})[policy_seed] = np.asarray(record["scores"], float)
  if not scores:
    raise ValueError(f"no <step>/eval.json under {list(folders)}; give folders written by dpjax.rollout --step=all.")
  return scores


def complete(scores: dict[int, dict[int, np.ndarray]]) -> dict[int, dict[int, np.ndarray]]:
  """The evaluations of the policy seeds that every checkpoint ran (an evaluation still running has not)."""
  shared = set.intersection(*(set(by_seed) for by_seed in scores.values()))
  return {step: {s: by_seed[s] for s in sorted(shared)} for step, by_seed in scores.items()}


def means(scores: dict[int, dict[int, np.ndarray]]) -> np.ndarray:
  """[checkpoints, policy seeds] mean scores."""
  return np.array([[runs.mean() for runs in scores[step].values()] for step in sorted(scores)])


def spread(table: np.ndarray) -> dict:
  """One evaluation's mean score, table[checkpoint, policy seed], split two ways as mean + checkpoint effect + policy
  seed effect + residual: the standard deviations of the checkpoints' true differences (between_sd), of a policy
  seed's luck shared by every checkpoint it scores (seed_sd: neighbouring checkpoints drawing the same noise answer
  alike), and of the rest (residual_sd); within_sd is one evaluation's spread across policy seeds, seed and rest."""
  c, n = table.shape
  grand = table.mean()
  resid = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + grand
  residual_var = (resid ** 2).sum() / max((c - 1) * (n - 1), 1)
  within_var = table.var(axis=1, ddof=1).mean()
  seed_var = max(table.mean(axis=0).var(ddof=1) - residual_var / c, 0.0) if c > 1 else within_var
  between_var = max(table.mean(axis=1).var(ddof=1) - within_var / n, 0.0) if c > 1 else 0.0
  return {"mean": float(grand), "within_sd": float(np.sqrt(within_var)), "between_sd": float(np.sqrt(between_var)),
          "seed_sd": float(np.sqrt(seed_var)), "residual_sd": float(np.sqrt(residual_var))}


def expected_best_recombined(scores: dict[int, dict[int, np.ndarray]], k: int, rng) -> float:
  """E[max of k evaluations], each a new one recombined from the measured: a checkpoint at random, then every test
  episode's score from one of that checkpoint's policy seeds at random (episodes' draws are independent: one
  environment each). Keeps each test episode's difficulty and the outcomes' real, non-normal spread."""
  steps = sorted(scores)
  per_step = [np.stack([scores[step][s] for s in sorted(scores[step])]) for step in steps]   # [seeds, episodes]
  best = np.full(DRAWS, -np.inf)
  for _ in range(k):
    step_of_draw = rng.integers(0, len(steps), DRAWS)
    total = np.zeros(DRAWS)
    for i, runs in enumerate(per_step):
      rows = step_of_draw == i
      picks = rng.integers(0, runs.shape[0], size=(int(rows.sum()), runs.shape[1]))
      total[rows] = runs[picks, np.arange(runs.shape[1])].mean(axis=1)
    best = np.maximum(best, total)
  return float(best.mean())


def expected_best_normal(s: dict, k: int, rng, *, shared_seed: bool) -> float:
  """E[max of k checkpoints' evaluations] on a plateau, each checkpoint's true score spread by between_sd around the
  mean: scored with independent noise (within_sd each; the original's in-training rollouts, whose noise comes from a
  generator training has moved on), or all with one policy seed (seed_sd shared, residual_sd each; `rollout
  --step=all` and the GPU scripts, every checkpoint with --policy_seed=0). Capped at 1 (a perfect score)."""
  true = s["mean"] + s["between_sd"] * rng.standard_normal((DRAWS, k))
  if shared_seed:
    noise = s["seed_sd"] * rng.standard_normal((DRAWS, 1)) + s["residual_sd"] * rng.standard_normal((DRAWS, k))
  else:
    noise = s["within_sd"] * rng.standard_normal((DRAWS, k))
  return float(np.minimum(true + noise, 1.0).max(axis=1).mean())


def flipping_episodes(scores: dict[int, dict[int, np.ndarray]]) -> list[tuple[int, float, float, float]]:
  """(episode index, min, mean, max score over every evaluation) of the episodes whose outcome the draw decides:
  under 0.3 in some evaluation and over 0.9 in another."""
  stacked = np.stack([s for by_seed in scores.values() for s in by_seed.values()])
  lo, hi = stacked.min(axis=0), stacked.max(axis=0)
  return [(i, float(lo[i]), float(stacked[:, i].mean()), float(hi[i]))
          for i in range(stacked.shape[1]) if lo[i] < 0.3 and hi[i] > 0.9]


def main(folders):
  scores = complete(load_scores(folders))
  table = means(scores)
  steps = sorted(scores)
  print(f"| checkpoint | mean score per policy seed ({table.shape[1]}) | mean | sd | min | max |")
  print("|---|---|---|---|---|---|")
  for step, row in zip(steps, table):
    print(f"| {step} | {' '.join(f'{m:.3f}' for m in row)} | {row.mean():.3f} | {row.std(ddof=1):.3f} | "
          f"{row.min():.3f} | {row.max():.3f} |")
  s = spread(table)
  print(f"\nall {table.size} evaluations: mean {s['mean']:.3f}; standard deviations: within a checkpoint (policy "
        f"seed) {s['within_sd']:.4f}, of which a seed's luck shared by the checkpoints {s['seed_sd']:.4f} and the "
        f"rest {s['residual_sd']:.4f}; between checkpoints' true scores {s['between_sd']:.4f}")
  flips = flipping_episodes(scores)
  print(f"\nepisodes under 0.3 in some evaluation and over 0.9 in another: {len(flips)} of "
        f"{len(next(iter(scores[steps[0]].values())))}")
  for i, lo, mean, hi in flips:
    print(f"  episode {i}: min {lo:.3f}, mean {mean:.3f}, max {hi:.3f}")
  rng = np.random.default_rng(0)
  print("\n| K checkpoints scored | expected best: recombined episodes, independent noise | normal model, independent "
        "noise | normal model, one policy seed for all |")
  print("|---|---|---|---|")
  for k in KS:
    print(f"| {k} | {expected_best_recombined(scores, k, rng):.3f} | "
          f"{expected_best_normal(s, k, rng, shared_seed=False):.3f} | "
          f"{expected_best_normal(s, k, rng, shared_seed=True):.3f} |")


if __name__ == "__main__":
  try:
    main(sys.argv[1:] or ["experiments/quickstart_cpu/session24_checkpoints"])
  except ValueError as e:
    sys.exit(f"table.py: {e}")
