#!/usr/bin/env bash
# Converts every step_N.ckpt of a train_original.py run (N >= MIN_STEP, default 3000) with `python -m dpjax.convert`
# and evaluates it with the paper's protocol (50 episodes, seeds 100000-100049, DDPM-100, EMA) through
# `python -m dpjax.rollout`: RUN/conv_N (the converted run), OUT/eval_step_N/eval.json. Steps already evaluated are
# skipped. Extra arguments go to dpjax.rollout.
#   experiments/original_torch_small/evaluate.sh RUN OUT [rollout flags]
set -euo pipefail
run=$1; out_dir=$2; shift 2
python=${PYTHON:-.venv/bin/python}
for step in $(ls "$run/checkpoints" | sed -n 's/^step_\([0-9]*\)\.ckpt$/\1/p' | sort -n); do
  ckpt="$run/checkpoints/step_$step.ckpt"
  [ "$step" -ge "${MIN_STEP:-3000}" ] || continue
  [ -f "$out_dir/eval_step_$step/eval.json" ] && continue
  [ -d "$run/conv_$step" ] || "$python" -m dpjax.convert --from_torch="$ckpt" --out="$run/conv_$step" > /dev/null
  "$python" -m dpjax.rollout --checkpoint="$run/conv_$step" --num_episodes=50 --num_videos=0 \
      --out="$out_dir/eval_step_$step" "$@" > /dev/null 2>&1
  "$python" -c "import json; print('step $step', json.load(open('$out_dir/eval_step_$step/eval.json'))['mean_score'])"
done
