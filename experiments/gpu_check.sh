#!/usr/bin/env bash
# One-command GPU check (issues 12 and 13), sized to a wall-clock deadline (default 540 s, under 9 minutes):
#   1. benchmark the full-size low-dim CNN: train step (the run's settings) and DDPM-100 / DDIM-10 latency at
#      batch 1 and 50 (`python -m dpjax.bench`); a failure here stops the check at once;
#   2. train it for the time left after reserving the evaluation and the extra benchmarks: the number of steps is
#      0.85 x (measured steps/s) x (budget), so the cosine schedule ends when the budget does;
#   3. evaluate its last EVAL_CHECKPOINTS (default 10: all of them, one every tenth of the run) with the paper's
#      protocol (50 episodes, seeds 100000..100049, DDPM-100, EMA), the evaluations side by side: the score against
#      the steps along the whole run (the CPU-sized U-Net peaks mid-run and then declines:
#      experiments/small_precision_lr/), and the best / mean of the last 3;
#   4. with EXTRA_BENCHES=1, extra benchmarks: flow-matching Euler-1/2 latency (issue 13) and the image CNN train
#      step (they take ~110 s of the training budget; experiments/gpu_bench.sh has every benchmark).
# Everything measured goes to one JSON file, gpu_check_<device>.json, next to the log and the benchmark JSONs.
#
#   bash experiments/gpu_check.sh                       # writes experiments/gpu_check/<date>/gpu_check_<device>.json
#   OUT=$OUT RUN_DIR=/tmp/gpu_run bash experiments/gpu_check.sh   # on the lent device machine (4-6 files in $OUT)
#
# Environment (all optional): PYTHON (default: .venv/bin/python, else python3), OUT (folder for the JSON files, the
# log and the metrics), RUN_DIR (the training run; default OUT/run), DEADLINE_S (whole check, default 540),
# TRAIN_BUDGET_S (fixes the training budget instead of deriving it from the deadline), NUM_STEPS (fixes the run's
# length instead, a multiple of 500: the schedule then ends there, however fast the GPU is), CONFIG (default
# configs/pusht.py), EPISODES (default 50), MAX_STEPS (steps per episode, default 300), EXTRA (more --config.*
# flags for dpjax.train, e.g. --config.optim.learning_rate=3e-4), BATCH_SIZE (the global batch of the benchmark and
# the run alike, so the step count fits the budget; default: the config's 256), EVAL_CHECKPOINTS (default 10),
# EVAL_SEED_PER_CHECKPOINT (default 1: checkpoint N samples with policy seed N, independent draws as the paper's
# in-training rollouts; 0: seed 0 for all), EXTRA_BENCHES (default 0; 1 runs stage 4).
# On the lent device machine: experiments/prepare_device.sh says how (wheels, data, the command).
# A CPU dry run with tiny sizes: CONFIG=configs/pusht.py:smoke TRAIN_BUDGET_S=20 EPISODES=2 MAX_STEPS=10 bash ...
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/device_common.sh
source experiments/device_common.sh
deadline=${DEADLINE_S:-540}
config=${CONFIG:-configs/pusht.py}
extra=${EXTRA:-}
batch_flag=""; train_batch_flag=""
if [ -n "${BATCH_SIZE:-}" ]; then
  batch_flag="--batch_size=$BATCH_SIZE"; train_batch_flag="--config.train.batch_size=$BATCH_SIZE"
fi
extra_benches=${EXTRA_BENCHES:-0}
eval_checkpoints=${EVAL_CHECKPOINTS:-10}
eval_seed_per_checkpoint=${EVAL_SEED_PER_CHECKPOINT:-1}   # device_common.sh: each checkpoint its own sampling noise
if [ -n "${NUM_STEPS:-}" ] && ! is_run_length "$NUM_STEPS"; then
  echo "NUM_STEPS=$NUM_STEPS: give a positive multiple of 500 (every tenth of the run is then a logged step)" >&2
  exit 1
fi
out=${OUT:-experiments/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
run=${RUN_DIR:-$out/run}
log="$out/check.log"

# The evaluations side by side, incl. start-up and compile (three took 33 s on the H100: ~30 s each, CPU-bound).
eval_reserve=$(( 90 + 5 * eval_checkpoints ))
bench_reserve=$([ "$extra_benches" = 1 ] && echo 110 || echo 0)
train_overhead=60                                  # start-up, data to device, compile, validation, last save
variant=${config#*:}; [ "$variant" = "$config" ] && variant=lowdim
quick=""; case "$variant" in *smoke*) quick="--quick" ;; esac

say "device"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true; } | tee -a "$log"

say "1/4 benchmark the low-dim CNN: train step and sampling latency"
timeout $(( $(left) - 60 )) "$python" -m dpjax.bench --variants=lowdim $quick $batch_flag --steps=50 --repeats=5 \
    --samplers=ddpm:100,ddim:10 --sample_batch_sizes=1,50 --out="$out/bench_lowdim.json" 2>&1 | tee -a "$log"
if [ ! -s "$out/bench_lowdim.json" ]; then
  say "the benchmark failed, so the rest would too: stopping (its error is above, in $log; a missing module means the
wheels were not installed: see experiments/prepare_device.sh)"; exit 1
fi
steps_per_s=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['records'][0]['train']['steps_per_s'])" \
    "$out/bench_lowdim.json")
budget=${TRAIN_BUDGET_S:-$(( $(left) - eval_reserve - bench_reserve - train_overhead ))}
# Whole multiples of 500 steps, so every tenth (checkpoints, validation) is a multiple of the 50-step log interval
# and of the 10 steps per dispatch: another interval would compile shorter dispatches (~25 s each, H100 check).
fit_steps=$("$python" -c "import sys; print(max(int(0.85 * float(sys.argv[1]) * float(sys.argv[2]) / 500) * 500, 500))" \
    "$steps_per_s" "$budget")
num_steps=${NUM_STEPS:-$fit_steps}
every=$(( num_steps / 10 ))

length=$([ -n "${NUM_STEPS:-}" ] && echo "fixed by NUM_STEPS" || echo "budget ${budget} s")
say "2/4 train $num_steps steps (${steps_per_s} steps/s measured, $length)"
train_start=$(date +%s)
timeout $(( $(left) - eval_reserve - bench_reserve )) "$python" -m dpjax.train --config="$config" --workdir="$run" \
    --config.train.num_steps="$num_steps" --config.train.checkpoint_every="$every" --config.train.val_every="$every" \
    --config.train.keep_checkpoints="$eval_checkpoints" $train_batch_flag $extra 2>&1 | tr '\r' '\n' \
    | grep -v "^train: .*step" | tee -a "$log"
train_rc=${PIPESTATUS[0]}
train_s=$(( $(date +%s) - train_start ))
say "training ended (exit status $train_rc, ${train_s} s)"
if [ "$train_rc" != 0 ] && [ "$train_rc" != 124 ] && [ ! -d "$run/checkpoints" ]; then
  say "training failed before its first checkpoint, so there is nothing to evaluate: stopping (its error is in $log)"
  exit 1
fi

say "3/4 evaluate the last $eval_checkpoints checkpoints side by side"
eval_start=$(date +%s)
steps=$(ls "$run/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -"$eval_checkpoints")
memory_fraction=$("$python" -c "import sys; print(round(0.8 / int(sys.argv[1]), 3))" "$eval_checkpoints")
# shellcheck disable=SC2086  # $steps: one word per checkpoint
evaluate_in_background $(( $(left) - bench_reserve + 20 )) "$memory_fraction" "$run" $steps
wait
# shellcheck disable=SC2086
evaluation_summaries "$run" $steps | tee -a "$log"
eval_s=$(( $(date +%s) - eval_start ))

if [ "$extra_benches" = 1 ]; then
  say "4/4 extra benchmarks: flow-matching Euler-1/2 latency, image CNN train step"
  timeout $(( $(left) / 2 )) "$python" -m dpjax.bench --variants=lowdim $quick --objective=flow --notrain \
      --repeats=10 --samplers=euler:1,euler:2 --sample_batch_sizes=1,50 --out="$out/bench_flow.json" 2>&1 \
      | tee -a "$log"
  timeout $(( $(left) - 5 )) "$python" -m dpjax.bench --variants=image $quick --steps=30 --sample_batch_sizes= \
      --out="$out/bench_image.json" 2>&1 | tee -a "$log"
fi
[ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$out/metrics.jsonl"

"$python" - "$out" "$run" "$budget" "$num_steps" "$train_s" "$eval_s" "$(elapsed)" "$train_rc" <<'EOF' 2>&1 | tee -a "$log"
"""Collects the check's numbers into one JSON file named after the device."""
import json, pathlib, sys
sys.path.insert(0, "experiments/bench")
import run_summary
out, run = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
budget, num_steps, train_s, eval_s, total_s, train_rc = (float(x) for x in sys.argv[3:])

def bench(name):
  path = out / f"bench_{name}.json"
  return json.loads(path.read_text())["records"][0] if path.exists() else None

lowdim = bench("lowdim")
summary = run_summary.summarize(run)
record = {
    "device": lowdim["device"], "config": summary.pop("config"),
    "bench_lowdim": lowdim, "bench_flow": bench("flow"), "bench_image": bench("image"),
    "train_budget_s": budget, "num_steps": int(num_steps), "train_exit_status": int(train_rc),
    "train_wall_s": train_s, "eval_wall_s": eval_s, "total_wall_s": total_s, **summary,
}
path = out / run_summary.device_file_name("gpu_check", lowdim["device"]["device_kind"])
path.write_text(json.dumps(record, indent=2))
print(json.dumps({k: record[k] for k in ("num_steps", "train_wall_s", "eval_wall_s", "total_wall_s",
                                          "train_steps_per_s", "checkpoint_blocking_s", "best_mean_score",
                                          "mean_of_last_3")}, indent=2))
print(f"wrote {path}")
EOF
say "done"
