#!/usr/bin/env bash
# The GPU benchmarks that gpu_check.sh leaves out (issues 12 and 13), in order of what they decide, each stopped by
# one wall-clock deadline (default 240 s) so the whole fits a short device call (order since session 20; session 18's
# call spent its 240 s on the lowering comparison and the image step and never reached the rest):
#   1. where the GPU's time goes, kernel by kernel (experiments/bench/kernel_profile.py: the low-dim CNN's training
#      and DDPM-100 at batch 1 under jax.profiler; kernels per step, busy vs waiting, time by kernel family and
#      duration): measured, where stage 2 and the byte model of BUILD_NOTES are compile-time estimates;
#   2. where the low-dim CNN's train step goes (experiments/bench/train_step_parts.py: step, forward, backward,
#      optimiser, EMA, each timed, kernel-counted and its bytes estimated): issue 12's 350 steps/s (193 on the
#      H100, session 18);
#   3. DDPM-100 at batch 1 with the chain's loop unrolled 1 and 10 steps per iteration
#      (experiments/bench/chain_unroll.py): issue 13's 20 ms (24.2 on the H100, session 18);
#   4. the image U-Net's train step with Adam's moments per array (its default since session 14; 97.5 steps/s on
#      the H100, session 18) and flat (session 13's): the step whose bytes the model of experiments/gpu_kernels/
#      says dominate;
#   5. low-dim CNN sampling latency at batch 50 (`dpjax.bench --notrain`);
#   6. the image transformer (never measured on a GPU): train step, DDPM-100 / DDIM-10 at batch 1;
#   7. only with LOWERING=1 (the call's $OUT takes 8 files): the U-Net's convolution lowering, measured in session
#      18 and kept for a new GPU or JAX: auto (taps in the sampling chain's calls on a GPU, im2col in training) vs
#      fused (auto + the Pallas conv-block kernels of config.policy.fused_sampling; its actions checked against
#      auto's) vs im2col vs lax.conv (cuDNN): DDPM-100 / DDIM-10 at batch 1, kernels per denoiser call, the train
#      step of auto and lax.conv (experiments/bench/conv_lowering.py). Session 18 on the H100: DDPM-100 24.2 / 24.5
#      / 25.1 / 113.8 ms, train 193 (auto) vs 169 (cuDNN) steps/s: auto stays, fused_sampling stays off (70 kernels
#      per call instead of 112, no faster).
# One JSON per stage and one log in OUT (8 files).
#
#   OUT=$OUT bash experiments/gpu_bench.sh       # on the lent device machine, after experiments/prepare_device.sh
#   QUICK=1 DEADLINE_S=900 bash experiments/gpu_bench.sh   # CPU dry run with the smoke sizes
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=experiments/device_common.sh
source experiments/device_common.sh
deadline=${DEADLINE_S:-240}
out=${OUT:-experiments/gpu_bench/$(date -u +%Y%m%dT%H%M%SZ)}
quick=$([ "${QUICK:-0}" = 1 ] && echo "--quick" || echo "")
mkdir -p "$out"
log="$out/bench.log"
stage() {   # stage NAME COMMAND...: runs COMMAND within the time left, its output appended to the log
  local name=$1; shift
  if [ "$(left)" -le 10 ]; then echo "== $name: skipped, deadline reached" | tee -a "$log"; return; fi
  echo "== $name ($(date -u +%T), $(left) s left)" | tee -a "$log"
  timeout "$(left)" "$@" 2>&1 | grep -v "libtpu\|cuda_timer" | tee -a "$log"
}
export PYTHONPATH=${PYTHONPATH:-$PWD}
stage "1/7 kernel profile" "$python" experiments/bench/kernel_profile.py $quick --out="$out/kernel_profile.json"
stage "2/7 low-dim CNN train step parts" "$python" experiments/bench/train_step_parts.py --variant=lowdim $quick \
    --out="$out/parts_lowdim.json"
stage "3/7 chain unroll" "$python" experiments/bench/chain_unroll.py --variant=lowdim $quick --unrolls=1,10 \
    --samplers=ddpm:100 --out="$out/chain_unroll.json"
stage "4/7 image U-Net, moments per array" "$python" -m dpjax.bench --variants=image $quick --steps=50 \
    --sample_batch_sizes= --flat_moments=false --out="$out/bench_image_moments_per_array.json"
stage "4/7 image U-Net, moments flat" "$python" -m dpjax.bench --variants=image $quick --steps=50 \
    --sample_batch_sizes= --flat_moments=true --out="$out/bench_image_moments_flat.json"
stage "5/7 low-dim CNN sampling" "$python" -m dpjax.bench --variants=lowdim $quick --notrain --repeats=10 \
    --samplers=ddpm:100,ddim:10 --sample_batch_sizes=50 --out="$out/sampling_lowdim.json"
stage "6/7 image transformer" "$python" -m dpjax.bench --variants=image_transformer $quick --steps=50 --repeats=5 \
    --samplers=ddpm:100,ddim:10 --sample_batch_sizes=1 --out="$out/bench_image_transformer.json"
if [ "${LOWERING:-0}" = 1 ]; then
  stage "7/7 U-Net convolution lowering" "$python" experiments/bench/conv_lowering.py --variant=lowdim $quick \
      --lowerings=auto,fused,im2col,lax.conv --out="$out/conv_lowering.json"
fi
echo "== done ($(date -u +%T))" | tee -a "$log"
