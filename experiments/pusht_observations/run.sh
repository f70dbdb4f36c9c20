#!/bin/bash
# Which low-dim observation of Push-T? The quickstart recipe (configs/pusht.py:small, 90 episodes, seed 42) through
# configs/replay.py with other observation keys, each scored on 200 episodes (seeds 100000..100199) and paired with
# the paper's keypoints (experiments/frontier/episodes200/ddpm100, the quickstart run).
#   bash experiments/pusht_observations/run.sh NAME=OBS_KEYS ...      e.g. pose=pose=state
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-runs/s22}
data=${DPJAX_PUSHT_ZARR:-../shared/data/pusht/pusht_cchi_v7_replay.zarr}
mkdir -p "$out"
for spec in "$@"; do
  name=${spec%%=*}
  keys=${spec#*=}
  ( .venv/bin/python -m dpjax.train --config=configs/replay.py:small --workdir="$out/$name" \
      --config.data.path="$data" --config.data.obs_keys="$keys" --config.data.max_train_episodes=90 \
      > "$out/$name.log" 2>&1
    .venv/bin/python -m dpjax.rollout --checkpoint="$out/$name" --num_episodes=200 --num_videos=0 \
      > "$out/$name.eval.log" 2>&1 ) &
done
wait
