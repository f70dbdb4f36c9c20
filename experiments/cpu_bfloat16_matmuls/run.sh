#!/usr/bin/env bash
# The quickstart recipe (`make train` on a CPU: configs/pusht.py:small, 4,000 steps, seed 42) with
# --config.policy.compute_dtype=bfloat16_matmuls, scored like runs/quickstart (the float32 run, session 23's
# retraining of the same recipe): its three checkpoints on the paper's 50 test seeds, and each of the three on 200
# episodes (seeds 100000-100199), both runs, for episode-by-episode comparisons. BUILD_NOTES.md, "Session 26".
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=experiments/cpu_bfloat16_matmuls
RUN=${RUN:-runs/quickstart_bfloat16_matmuls}
REFERENCE=${REFERENCE:-runs/quickstart}
PY=${PY:-.venv/bin/python}
$PY -m dpjax.train --config=configs/pusht.py:small --workdir="$RUN" --config.policy.compute_dtype=bfloat16_matmuls
cp "$RUN/metrics.jsonl" "$RUN/wall_time.json" "$RUN/config.json" "$OUT/"
$PY -m dpjax.rollout --checkpoint="$RUN" --step=all --out="$OUT/eval"
for step in 4000 3000 3500; do
  for run in "$RUN" "$REFERENCE"; do
    $PY -m dpjax.rollout --checkpoint="$run" --step=$step --num_episodes=200 \
      --num_videos=0 --out="$OUT/episodes200_step_${step}_$(basename "$run")"
  done
done
