# Sourced by the scripts of a GPU session (gpu_check.sh, gpu_recipes.sh, gpu_distill.sh, gpu_bench.sh) after their
# `cd` to the repository root: the interpreter, the deadline clock, the log line and the paper's evaluation protocol
# (seeds from 100000, DDPM with the run's steps, EMA weights) on several checkpoints of one run at once, one
# dpjax.rollout process each (the simulation is CPU-bound, the chains share the GPU). The sourcing script sets
# $deadline (seconds) and, before the first `say`, $log.

python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
episodes=${EPISODES:-50}
max_steps=${MAX_STEPS:-300}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( deadline - $(elapsed) )); }
say() { echo "== $* ($(date -u +%T), t=$(elapsed) s)" | tee -a "$log"; }
# is_run_length N: N is a positive multiple of 500, so every tenth of a run (its checkpoints and validations) is a
# multiple of the 50-step log interval and of the 10 steps per dispatch.
is_run_length() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" != 0 ] && [ $(( $1 % 500 )) = 0 ]; }

# evaluate_in_background TIMEOUT_S MEMORY_FRACTION RUN_DIR STEP...: starts one evaluation per checkpoint in the
# background (wait for them with `wait`), each writing RUN_DIR/eval_step_<STEP>/eval.json and eval_step_<STEP>.log.
# Each process grows its GPU memory as it needs it, up to MEMORY_FRACTION of the device. With $eval_seed_per_checkpoint
# = 1, checkpoint N samples with policy seed N (`dpjax.rollout --policy_seed_per_checkpoint`): independent draws, as
# the original's in-training rollouts that the paper's best is a maximum of; else every checkpoint with seed 0.
evaluate_in_background() {
  local timeout_s=$1 fraction=$2 run=$3; shift 3
  local step seeding=""
  [ "${eval_seed_per_checkpoint:-0}" = 1 ] && seeding=--policy_seed_per_checkpoint
  for step in "$@"; do
    # shellcheck disable=SC2086  # $seeding: no word or one
    XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_MEM_FRACTION=$fraction timeout "$timeout_s" \
        "$python" -m dpjax.rollout --checkpoint="$run" --step="$step" --num_episodes="$episodes" \
        --max_steps="$max_steps" --out="$run/eval_step_$step" --num_videos=0 $seeding \
        > "$run/eval_step_$step.log" 2>&1 &
  done
}

# keep_newest_checkpoint RUN_DIR: deletes every checkpoint of a finished, evaluated run but its newest (a teacher for
# gpu_distill.sh), so runs with many checkpoints (929 MB each at full size) fit the device machine's disk.
keep_newest_checkpoint() {
  local dir=$1/checkpoints
  [ -d "$dir" ] || return 0
  ls "$dir" | grep -E '^[0-9]+$' | sort -n | head -n -1 | while read -r step; do rm -rf "${dir:?}/$step"; done
}

# evaluation_summaries RUN_DIR STEP...: the last lines of each evaluation's log (its score, or its error).
evaluation_summaries() {
  local run=$1; shift
  local step
  for step in "$@"; do tr '\r' '\n' < "$run/eval_step_$step.log" | grep -v "^rollout: " | tail -4; done
}
