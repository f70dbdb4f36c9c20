#!/usr/bin/env bash
# Which training recipe reaches issue 12's score with the full-size low-dim CNN: several recipes in one device call,
# sized to a wall-clock deadline (default 540 s). Each recipe trains from scratch (a fixed number of steps, a multiple
# of 500, with CHECKPOINTS checkpoints, default 20, and a validation every tenth); while the next recipe trains, the
# last one's checkpoints are evaluated side by side with the paper's protocol (50 episodes, seeds 100000..100049,
# DDPM-100, EMA), each checkpoint with its own sampling noise (policy seed = its step) as the original's in-training
# rollouts drew theirs, so the best is a maximum over independent draws like the paper's (experiments/sampling_spread/:
# with one seed for all, the draws share their luck and the best of ten sits ~0.01 lower); then all but the run's
# newest checkpoint are deleted (disk).
# A recipe that the deadline cuts keeps its checkpoints so far, evaluated; a recipe whose training would not fit the
# time left (its start-up and steps/s taken from the recipe before it) is skipped, and a shorter one after it may run.
# Writes gpu_recipes_<device>.json (device, versions and per recipe: its flags, steps/s, checkpoint stalls, losses,
# validation curve, every score, best and mean of the last 3) and recipes.log into OUT: two files, so the device
# tool's 8-file limit holds. No benchmark: experiments/gpu_check.sh and experiments/gpu_bench.sh time things.
#
#   OUT=$OUT bash experiments/gpu_recipes.sh             # the default recipes (below), on the lent device machine
#   RECIPES="cos4k 4000 --config.optim.learning_rate=3e-4; const4k 4000 --config.optim.learning_rate=3e-4 \
#     --config.optim.schedule=constant" OUT=$OUT bash experiments/gpu_recipes.sh
#
# Environment (all optional): RECIPES ("NAME STEPS FLAGS...; NAME STEPS FLAGS...": a name of letters, digits, _ and
# -, the step count, then --config.* flags for dpjax.train), PYTHON (default: .venv/bin/python, else python3), OUT
# (default experiments/gpu_recipes/<date>), WORK_DIR (the runs, default /tmp/gpu_recipes; a rerun replaces a recipe's
# run), DEADLINE_S (default 540), CONFIG (default configs/pusht.py), EPISODES (default 50), MAX_STEPS (steps per
# episode, default 300), CHECKPOINTS (per run, default 20; each recipe's steps a multiple of 50 x CHECKPOINTS),
# EVAL_SEED_PER_CHECKPOINT (default 1; 0: every checkpoint with policy seed 0, session 18's protocol). A CPU dry run
# with tiny sizes: CONFIG=configs/pusht.py:smoke RECIPES="a 1000; b 1000 --config.optim.schedule=constant"
# CHECKPOINTS=4 EPISODES=2 MAX_STEPS=10 DEADLINE_S=900 bash experiments/gpu_recipes.sh
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/device_common.sh
source experiments/device_common.sh
deadline=${DEADLINE_S:-540}
config=${CONFIG:-configs/pusht.py}
checkpoints_per_run=${CHECKPOINTS:-20}
eval_seed_per_checkpoint=${EVAL_SEED_PER_CHECKPOINT:-1}
if ! [[ "$checkpoints_per_run" =~ ^[1-9][0-9]*$ ]]; then
  echo "CHECKPOINTS=$checkpoints_per_run: give a positive number of checkpoints per run" >&2; exit 1
fi
# Session 18's choice (BUILD_NOTES.md, "GPU check"): the 4,000-step cosine recipe that scored 0.923 / 0.908 on the
# H100, with half its learning rate (the full-size network fell with the rate held at 3e-4) and with another seed
# (one run's luck), and a cosine schedule ending near that run's best step (2,800). Session 19 put second the same
# recipe on all 202 non-validation episodes: not issue 12's protocol, but issue 13's teacher (gpu_distill.sh), since
# reflow students of 90-episode teachers stayed ~0.05-0.07 below them on the CPU (experiments/distill_obs_noise/).
recipes=${RECIPES:-"cos4k_lr15 4000 --config.optim.learning_rate=1.5e-4; \
alleps4k 4000 --config.optim.learning_rate=3e-4 --config.data.max_train_episodes=0; \
cos4k_seed1 4000 --config.optim.learning_rate=3e-4 --config.seed=1; \
cos3k 3000 --config.optim.learning_rate=3e-4"}
IFS=';' read -ra given <<< "$recipes"
entries=()
for entry in "${given[@]}"; do
  read -r name steps flags <<< "$entry"
  [ -z "${name:-}" ] && continue                   # an empty entry: a trailing or doubled ';'
  entry="$name ${steps:-}${flags:+ $flags}"
  if ! [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || ! is_run_length "${steps:-}"; then
    echo "RECIPES entry '$entry': give NAME STEPS FLAGS..., a name of letters, digits, _ or -, and a positive" \
         "multiple of 500 steps (every tenth of the run is then a logged step), entries separated by ';'" >&2
    exit 1
  fi
  if [ $(( steps % (50 * checkpoints_per_run) )) != 0 ]; then
    echo "RECIPES entry '$entry' with CHECKPOINTS=$checkpoints_per_run: give a step count that is a multiple of" \
         "$(( 50 * checkpoints_per_run )) (each checkpoint a multiple of the 50-step log interval), or fewer" \
         "CHECKPOINTS" >&2
    exit 1
  fi
  entries+=("$entry")
done
if [ ${#entries[@]} = 0 ]; then
  echo "RECIPES='$recipes' names no recipe: give NAME STEPS FLAGS..., entries separated by ';'" >&2; exit 1
fi
out=${OUT:-experiments/gpu_recipes/$(date -u +%Y%m%dT%H%M%SZ)}
work=${WORK_DIR:-/tmp/gpu_recipes}
mkdir -p "$out" "$work"
log="$out/recipes.log"

# The last recipe's evaluations side by side, start-up and compile included: ten took 27 s on the H100 (session 18),
# CPU-bound on its 16 cores.
eval_reserve=$(( 30 + 2 * checkpoints_per_run ))
min_train_s=60             # start-up, data to device, compile and a few hundred steps: less is not worth starting
measured=""                # "START_UP_S STEPS_PER_S" of the last recipe that trained: what the next one will need
say "device"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true; } | tee -a "$log"

names=(); steps_evaluated=""
# after_evaluations: once the last recipe's evaluations are waited for, their scores into the log and its checkpoints
# but the newest deleted.
after_evaluations() {
  [ -z "$steps_evaluated" ] && return 0
  # shellcheck disable=SC2086  # RUN_DIR STEP...: one word each
  evaluation_summaries $steps_evaluated | tee -a "$log"
  keep_newest_checkpoint "${steps_evaluated%% *}"
}
for entry in "${entries[@]}"; do
  read -r name steps flags <<< "$entry"
  run=$work/$name
  need=$min_train_s
  if [ -n "$measured" ]; then
    need=$(awk -v m="$measured" -v steps="$steps" 'BEGIN { split(m, a, " "); printf "%d", a[1] + steps / a[2] + 1 }')
  fi
  if [ $(( $(left) - eval_reserve )) -lt "$need" ]; then
    say "$name: skipped, its training needs ~$need s and $(left) s are left"; continue
  fi
  rm -rf "$run"
  every=$(( steps / checkpoints_per_run ))
  say "train $name: $steps steps, ${flags:-no flags}"
  train_start=$(date +%s)
  # The training holds under half the GPU's memory; the evaluations beside it grow theirs as they need it.
  # shellcheck disable=SC2086  # $flags: one word per flag
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout $(( $(left) - eval_reserve )) "$python" -m dpjax.train \
      --config="$config" --workdir="$run" --config.train.num_steps="$steps" --config.train.checkpoint_every="$every" \
      --config.train.val_every=$(( steps / 10 )) --config.train.keep_checkpoints="$checkpoints_per_run" $flags 2>&1 \
      | tr '\r' '\n' \
      | grep -v "^train: .*step" | tee -a "$log"
  train_rc=${PIPESTATUS[0]}
  train_s=$(( $(date +%s) - train_start ))
  mkdir -p "$run"            # a training that died before making its run directory still gets its record
  echo "{\"exit_status\": $train_rc, \"wall_s\": $train_s}" > "$run/train_wall.json"
  say "$name: training ended (exit status $train_rc, $train_s s)"
  rate=$("$python" -c 'import sys; sys.path.insert(0, "experiments/bench"); import run_summary
print(run_summary.summarize(sys.argv[1])["train_steps_per_s"]["median"] or "")' "$run" 2>/dev/null)
  if [ -n "$rate" ]; then   # the wall time less the steps at the median rate is the start-up (compile included)
    measured=$(awk -v w="$train_s" -v r="$rate" -v n="$steps" 'BEGIN { s = w - n / r; print (s > 0 ? s : 0), r }')
  fi
  wait                       # the previous recipe's evaluations
  after_evaluations
  checkpoints=$(ls "$run/checkpoints" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tr '\n' ' ')
  names+=("$name")
  if [ -z "$checkpoints" ]; then
    say "$name: no checkpoint to evaluate (its error is above)"; steps_evaluated=""; continue
  fi
  say "$name: evaluating checkpoints $checkpoints side by side, in the background"
  # shellcheck disable=SC2086
  evaluate_in_background $(( $(left) + 20 )) 0.05 "$run" $checkpoints
  steps_evaluated="$run $checkpoints"
done
wait
after_evaluations

"$python" - "$out" "$work" "$(elapsed)" "$recipes" "${names[@]}" <<'EOF' 2>&1 | tee -a "$log"
"""Collects every recipe's numbers into one JSON file named after the device."""
import json, pathlib, sys
import flax, jax, optax, orbax.checkpoint
sys.path.insert(0, "experiments/bench")
import run_summary
out, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
total_s, recipes, names = float(sys.argv[3]), sys.argv[4], sys.argv[5:]
flags = {entry.split()[0]: " ".join(entry.split()[1:]) for entry in recipes.split(";") if entry.strip()}
device = jax.devices()[0]
record = {
    "device": {"platform": device.platform, "device_kind": device.device_kind, "device_count": jax.device_count()},
    "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                 "orbax_checkpoint": orbax.checkpoint.__version__},
    "total_wall_s": total_s,
    "recipes": {},
}
for name in names:
  run = work / name
  summary = run_summary.summarize(run)
  config = summary.pop("config") or {}
  train_wall = run / "train_wall.json"
  record["recipes"][name] = {
      "steps_and_flags": flags.get(name), "learning_rate": config.get("optim", {}).get("learning_rate"),
      "schedule": config.get("optim", {}).get("schedule"), "batch_size": config.get("train", {}).get("batch_size"),
      "train": json.loads(train_wall.read_text()) if train_wall.exists() else None,
      **summary,
  }
path = out / run_summary.device_file_name("gpu_recipes", device.device_kind)
path.write_text(json.dumps(record, indent=2))
for name, r in record["recipes"].items():
  curve = " ".join(f"{s}:{e['mean_score']:.3f}" for s, e in r["eval"].items())
  print(f"{name}: best {r['best_mean_score']} (step {r['best_step']}; of ten evenly spaced "
        f"{r['best_of_10_evenly_spaced']}), mean of last 3 {r['mean_of_last_3']}, "
        f"{r['train_steps_per_s']['median']} steps/s, stalls max {r['checkpoint_blocking_s']['max']} s; {curve}")
print(f"wrote {path}")
EOF
say "done"
