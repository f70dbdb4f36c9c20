#!/bin/bash
# How much inference latency does a chunked policy absorb? The quickstart policy (runs/quickstart: configs/pusht.py:small,
# 90 episodes, seed 42) scored on 200 episodes (seeds 100000..100199, DDPM-100, EMA) with each latency in control
# steps: every chunk planned that many steps before the current one runs out, its late actions skipped
# (`python -m dpjax.rollout --latency_steps`). Two evaluations at a time.
#   bash experiments/latency/run.sh [RUN] [LATENCIES]       defaults: runs/quickstart, "0 1 2 3 4 5 6 7"
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${1:-runs/quickstart}
latencies=${2:-0 1 2 3 4 5 6 7}
here=experiments/latency
running=0
for d in $latencies; do
  .venv/bin/python -m dpjax.rollout --checkpoint="$run" --num_episodes=200 --num_videos=0 --latency_steps="$d" \
    --out="$here/latency_$d" > "$here/latency_$d.log" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge 2 ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait
