"""Does the sampled chunks' validation error (`val/action_mse_ema`) pick checkpoints where the validation loss does
not? For each kept checkpoint of earlier CPU runs that were scored in the simulator, the EMA policy's action error
on every validation window (DDPM-100, the same noise for every checkpoint) beside its EMA validation loss (from the
run's metrics.jsonl) and its 50-episode score (seeds 100000-100049).

    PYTHONPATH=. .venv/bin/python experiments/val_action_error/measure.py > experiments/val_action_error/results.json
"""
import json
import pathlib
import sys

import jax

from dpjax import checkpoint, config_json, metrics, policy as policy_lib
from dpjax.data import build_data, pipeline

ROOT = pathlib.Path(__file__).resolve().parents[2]
# run directory (checkpoints kept) -> its evaluations (eval_step_<step>/eval.json) in experiments/.
RUNS = {
    "runs/lowdim_cnn_small_10k_constant": "experiments/small_precision_lr/steps10k_constant",
    "runs/lowdim_cnn_half_4k": "experiments/small_precision_lr/half_width",
    "runs/lowdim_cnn_half_4k_constant": "experiments/small_precision_lr/half_width_constant",
    "runs/lowdim_cnn_half_2500": "experiments/small_precision_lr/half_width_2500",
}
KEY = jax.random.key(0)   # one noise draw for every checkpoint: differences are the weights'


def measure(run_dir: pathlib.Path, eval_dir: pathlib.Path) -> list[dict]:
  config = config_json.get_config(run_dir / "config.json")
  bundle = build_data(config)
  batches = list(pipeline.validation_batches(bundle.val_source, 256))
  logged = metrics.read_metrics(run_dir)
  error_fn = jax.jit(policy_lib.action_error, static_argnums=1)
  rows = []
  for eval_json in sorted(eval_dir.glob("eval_step_*/eval.json"), key=lambda p: int(p.parent.name.split("_")[-1])):
    step = int(eval_json.parent.name.split("_")[-1])
    policy = checkpoint.load_policy(run_dir, step=step)
    errors = [float(error_fn(policy.params, policy.spec, policy.normalizer, b, jax.random.fold_in(KEY, i)))
              * len(b["action"]) for i, b in enumerate(batches)]
    rows.append({"run": str(run_dir.relative_to(ROOT)), "step": step,
                 "score": json.loads(eval_json.read_text())["mean_score"],
                 "val_action_mse_ema": sum(errors) / sum(len(b["action"]) for b in batches),
                 "val_loss_ema": logged.get(step, {}).get("val/loss_ema"),
                 "val_windows": sum(len(b["action"]) for b in batches)})
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return rows


def main():
  rows = []
  for run, evals in RUNS.items():
    rows += measure(ROOT / run, ROOT / evals)
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
