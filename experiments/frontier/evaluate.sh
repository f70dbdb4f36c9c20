#!/usr/bin/env bash
# Score one run at several network-call budgets with the paper's protocol (50 episodes, seeds 100000..100049, EMA
# weights of the run's latest checkpoint): one folder per setting, OUT_DIR/<sampler><steps>/eval.json. Settings
# that already have an eval.json are skipped, so an interrupted evaluation can be re-run.
#   experiments/frontier/evaluate.sh RUN_DIR OUT_DIR sampler:steps [sampler:steps ...]
#   experiments/frontier/evaluate.sh runs/lowdim_cnn_small_ddpm experiments/frontier/ddpm ddim:1 ddim:10 ddpm:100
set -euo pipefail
run_dir=$1
out_dir=$2
shift 2
python=${PYTHON:-.venv/bin/python}
for setting in "$@"; do
  sampler=${setting%%:*}
  steps=${setting##*:}
  out="$out_dir/$sampler$steps"
  if [ -f "$out/eval.json" ]; then
    echo "$out/eval.json exists, skipped"
    continue
  fi
  "$python" -m dpjax.rollout --checkpoint="$run_dir" --sampler="$sampler" --num_inference_steps="$steps" \
      --num_episodes=50 --out="$out" --num_videos=0
done
