#!/bin/bash
# Session 21 prototype: observation augmentations of plain DDPM training (CPU-sized U-Net, the quickstart recipe,
# 90 episodes), each run then scored on 200 episodes (seeds 100000..100199, DDPM-100). The augmentations exist only
# in a prototype worktree: `git worktree add /tmp/wt_noise a6e00ec && git -C /tmp/wt_noise apply
# $PWD/experiments/obs_noise_teacher/prototype.patch`; it runs from there because `python -m` puts the working
# directory first on sys.path.
#   bash experiments/obs_noise_teacher/run.sh noise 0.02 0.05          # per-feature Gaussian shift (normalised units)
#   bash experiments/obs_noise_teacher/run.sh rigid 5,0.05,5 10,0.1,10  # T moved rigidly (px, rad), agent shifted (px)
set -u
kind=$1; shift
case "$kind" in
  noise) var=DPJAX_OBS_NOISE ;;
  rigid) var=DPJAX_OBS_RIGID ;;
  *) echo "first argument: noise or rigid" >&2; exit 1 ;;
esac
out=/work/main/runs/s21
export DPJAX_PUSHT_ZARR=/work/shared/data/pusht/pusht_cchi_v7_replay.zarr
cd /tmp/wt_noise || exit 1
for s in "$@"; do
  ( env "$var=$s" /work/main/.venv/bin/python -m dpjax.train \
      --config=configs/pusht.py:small --workdir="$out/${kind}_$s" > "$out/${kind}_$s.log" 2>&1
    /work/main/.venv/bin/python -m dpjax.rollout --checkpoint="$out/${kind}_$s" --num_episodes=200 \
      --num_videos=0 > "$out/${kind}_$s.eval.log" 2>&1 ) &
done
wait
