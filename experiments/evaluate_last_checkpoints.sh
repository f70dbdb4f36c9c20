#!/usr/bin/env bash
# Evaluate every checkpoint kept in a run directory with the paper's protocol (50 episodes, seeds 100000..100049,
# DDPM with the run's step count, EMA weights), one eval folder per checkpoint; checkpoints that already have an
# eval.json are skipped, so an interrupted evaluation can be re-run.
#   experiments/evaluate_last_checkpoints.sh RUN_DIR OUT_DIR
set -euo pipefail
run_dir=$1
out_dir=$2
python=${PYTHON:-.venv/bin/python}
for step in $(ls "$run_dir/checkpoints" | grep -E '^[0-9]+$' | sort -n); do
  if [ -f "$out_dir/eval_step_$step/eval.json" ]; then
    echo "checkpoint $step: $out_dir/eval_step_$step/eval.json exists, skipped"
    continue
  fi
  "$python" -m dpjax.rollout --checkpoint="$run_dir" --step="$step" --num_episodes=50 \
      --out="$out_dir/eval_step_$step" --num_videos=2
done
