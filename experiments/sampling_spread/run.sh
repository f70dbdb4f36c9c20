#!/usr/bin/env bash
# Scores the quickstart run's three kept checkpoints (runs/quickstart: `make train`, configs/pusht.py:small) under
# policy seeds 1..9 on the paper's protocol (50 episodes, seeds 100000..100049, DDPM-100, EMA), one folder per
# seed; policy seed 0 is experiments/quickstart_cpu/session24_checkpoints/. Then the table:
#   python experiments/sampling_spread/table.py experiments/quickstart_cpu/session24_checkpoints \
#     experiments/sampling_spread/policy_seed_*
set -u
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
for s in 1 2 3 4 5 6 7 8 9; do
  "$python" -m dpjax.rollout --checkpoint=runs/quickstart --step=all --policy_seed=$s --num_videos=0 \
    --out=experiments/sampling_spread/policy_seed_$s
done
