#!/usr/bin/env bash
# One-command GPU check (issue 12): the full-size low-dim CNN trained for a wall-clock budget on this machine's
# accelerator, then the paper's evaluation (50 episodes, seeds 100000..100049, DDPM-100, EMA) of its last three
# checkpoints. Everything it measures goes to one JSON file; it is sized to finish in under 9 minutes on one
# H100/H200 (~2 min of benchmarks, TRAIN_BUDGET_S of training, ~1 min per evaluation).
#
#   bash experiments/gpu_check.sh                       # writes experiments/gpu_check/<device>_<date>.json
#   OUT=$OUT bash experiments/gpu_check.sh              # on the lent device machine: results come back via $OUT
#
# The number of steps is chosen from the measured throughput: the run first times the real train step
# (`python -m dpjax.bench`, 30 steps, the run's compute dtype and steps per dispatch), then trains
# steps_per_s * TRAIN_BUDGET_S steps so the cosine schedule ends when the budget does. Batch 256 and learning
# rate 1e-4 are the paper's (BUILD_NOTES.md, "GPU check").
#
# Environment (all optional): PYTHON (default: .venv/bin/python, else python3), OUT (folder for the JSON, logs and
# metrics: 7 files), RUN_DIR (the training run with its checkpoints; default OUT/run), TRAIN_BUDGET_S (default
# 300), CONFIG (default configs/pusht.py), EPISODES (default 50), MAX_STEPS (steps per episode, default 300),
# EXTRA (more --config.* flags for dpjax.train, e.g. --config.policy.compute_dtype=float32).
# On the lent device machine: experiments/prepare_device.sh says how (wheels, data, the command).
# A CPU dry run with tiny sizes: CONFIG=configs/pusht.py:smoke TRAIN_BUDGET_S=20 EPISODES=2 MAX_STEPS=10 bash ...
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
budget=${TRAIN_BUDGET_S:-300}
config=${CONFIG:-configs/pusht.py}
episodes=${EPISODES:-50}
max_steps=${MAX_STEPS:-300}
extra=${EXTRA:-}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${OUT:-experiments/gpu_check/$stamp}
mkdir -p "$out"
run=${RUN_DIR:-$out/run}
start=$(date +%s)

variant=${config#*:}; [ "$variant" = "$config" ] && variant=lowdim
bench_variant=lowdim; quick=""
case "$variant" in *smoke*) quick="--quick" ;; esac

echo "== 1/3 benchmark the train step ($(date -u +%T))"
"$python" -m dpjax.bench --variants="$bench_variant" $quick --steps=30 --repeats=3 --samplers=ddpm:100,ddim:10 \
    --sample_batch_sizes=1,50 --out="$out/bench.json" 2>&1 | tee "$out/bench.log"
echo "== 1b/3 the same step in float32, one step per dispatch (what auto is compared against) ($(date -u +%T))"
"$python" -m dpjax.bench --variants="$bench_variant" $quick --steps=30 --repeats=3 --samplers=ddpm:100 \
    --sample_batch_sizes=1 --compute_dtype=float32 --steps_per_dispatch=1 --out="$out/bench_float32.json" \
    2>&1 | tee -a "$out/bench.log"
steps_per_s=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['records'][0]['train']['steps_per_s'])" \
    "$out/bench.json")
num_steps=$("$python" -c "import sys; print(max(int(float(sys.argv[1]) * float(sys.argv[2]) / 10) * 10, 30))" \
    "$steps_per_s" "$budget")
every=$(( num_steps / 10 ))
echo "== 2/3 train $num_steps steps (${steps_per_s} steps/s measured, budget ${budget} s) ($(date -u +%T))"
train_start=$(date +%s)
"$python" -m dpjax.train --config="$config" --workdir="$run" --config.train.num_steps="$num_steps" \
    --config.train.checkpoint_every="$every" --config.train.val_every="$every" $extra 2>&1 | tee "$out/train.log"
train_s=$(( $(date +%s) - train_start ))

echo "== 3/3 evaluate the last 3 checkpoints ($(date -u +%T))"
eval_start=$(date +%s)
for step in $(ls "$run/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -3); do
  "$python" -m dpjax.rollout --checkpoint="$run" --step="$step" --num_episodes="$episodes" --max_steps="$max_steps" \
      --out="$run/eval_step_$step" --num_videos=0 2>&1 | tee -a "$out/eval.log"
done
eval_s=$(( $(date +%s) - eval_start ))
cp "$run/metrics.jsonl" "$out/metrics.jsonl"

"$python" - "$out" "$run" "$budget" "$num_steps" "$train_s" "$eval_s" "$(( $(date +%s) - start ))" <<'EOF'
"""Collects the check's numbers into one JSON file named after the device."""
import glob, json, pathlib, re, sys
out, run = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
budget, num_steps, train_s, eval_s, total_s = (float(x) for x in sys.argv[3:])
bench = json.loads((out / "bench.json").read_text())
metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
rates = [m["train/steps_per_second"] for m in metrics if "train/steps_per_second" in m]
blocking = [m["train/checkpoint_blocking_s"] for m in metrics if "train/checkpoint_blocking_s" in m]
evals = {int(re.search(r"eval_step_(\d+)", p).group(1)): json.loads(pathlib.Path(p).read_text())
         for p in glob.glob(str(run / "eval_step_*" / "eval.json"))}
scores = [evals[s]["mean_score"] for s in sorted(evals)]
record = {
    "device": bench["device"], "config": json.loads((run / "config.json").read_text()),
    "bench": bench["records"][0],
    "bench_float32_one_step_per_dispatch": json.loads((out / "bench_float32.json").read_text())["records"][0],
    "train_budget_s": budget, "num_steps": int(num_steps),
    "train_wall_s": train_s, "eval_wall_s": eval_s, "total_wall_s": total_s,
    "train_steps_per_s": {"first_window": rates[0] if rates else None,
                          "median": sorted(rates)[len(rates) // 2] if rates else None},
    "checkpoint_blocking_s": {"first": blocking[0] if blocking else None, "max": max(blocking, default=None)},
    "final_train_loss": next((m["train/loss"] for m in reversed(metrics) if "train/loss" in m), None),
    "final_val_loss_ema": next((m["val/loss_ema"] for m in reversed(metrics) if "val/loss_ema" in m), None),
    "eval": {str(s): {k: evals[s][k] for k in ("mean_score", "success_rate", "num_episodes", "wall_seconds")}
             for s in sorted(evals)},
    "best_mean_score": max(scores, default=None),
    "mean_of_last_3": sum(scores[-3:]) / len(scores[-3:]) if scores else None,
}
kind = re.sub(r"[^A-Za-z0-9]+", "_", bench["device"]["device_kind"]).strip("_").lower()
path = out / f"gpu_check_{kind}.json"
path.write_text(json.dumps(record, indent=2))
print(json.dumps({k: record[k] for k in ("num_steps", "train_wall_s", "eval_wall_s", "total_wall_s",
                                          "train_steps_per_s", "checkpoint_blocking_s", "best_mean_score",
                                          "mean_of_last_3")}, indent=2))
print(f"wrote {path}")
EOF
