#!/bin/bash
# Session 21 prototype: DDPM-100 with its per-step noise scaled by a temperature, 200 episodes of the 90-episode
# CPU-sized policy runs/lowdim_cnn_small_10k_constant (experiments/small_precision_lr/steps10k_constant). The
# temperature exists only in a prototype worktree: `git worktree add /tmp/wt_noise a6e00ec && git -C /tmp/wt_noise
# apply $PWD/experiments/sampling_temperature/prototype.patch` (python -m puts the working directory first on sys.path).
#   bash experiments/sampling_temperature/run.sh 0.5 0.0
out=/work/main/runs/s21
cd /tmp/wt_noise || exit 1
for t in "$@"; do
  DPJAX_SAMPLE_TEMP=$t /work/main/.venv/bin/python -m dpjax.rollout \
    --checkpoint=/work/main/runs/lowdim_cnn_small_10k_constant --num_episodes=200 --num_videos=0 \
    --out="$out/temp_$t" > "$out/temp_$t.log" 2>&1 &
done
wait
