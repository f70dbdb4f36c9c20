#!/bin/bash
# GPU kernel counts on a machine without a GPU (deviceless XLA:GPU for an H100, experiments/bench/deviceless_gpu.py):
# the train step and its parts, one denoiser call, one sampling-chain iteration, for the dpjax checkout in SRC.
#
#   make gpu-aot                                                      # once: jax's CUDA plugin in .venv-gpu-aot
#   TAG=head bash experiments/gpu_kernels/run.sh                      # this checkout -> experiments/gpu_kernels/head/
#   git worktree add /tmp/dpjax_old dedc4a5 && SRC=/tmp/dpjax_old TAG=dedc4a5 bash experiments/gpu_kernels/run.sh
#
# The scripts are this checkout's (experiments/bench/); the measured dpjax is SRC's (PYTHONPATH).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC=${SRC:-$ROOT}
TAG=${TAG:?name the results folder, e.g. TAG=head}
TARGET=${TARGET:-h100}
PY=${PY:-$ROOT/.venv-gpu-aot/bin/python}
OUT=$HERE/$TAG
mkdir -p "$OUT"
run() { (cd "$SRC" && PYTHONPATH="$SRC" "$PY" "$@") 2> >(grep -v -i warning >&2); }

for variant in lowdim image; do
  run "$ROOT/experiments/bench/train_step_parts.py" --target="$TARGET" --variant=$variant \
    --out="$OUT/train_step_parts_$variant.json" | tee "$OUT/train_step_parts_$variant.txt"
done
# The transformer's GEMMs need autotuning to pick Triton tiles: cuBLAS ones compile without it.
XLA_FLAGS=--xla_gpu_enable_triton_gemm=false run "$ROOT/experiments/bench/train_step_parts.py" --target="$TARGET" \
  --variant=transformer --out="$OUT/train_step_parts_transformer.json" | tee "$OUT/train_step_parts_transformer.txt"
run "$ROOT/experiments/bench/kernels_per_call.py" --target="$TARGET" > "$OUT/kernels_per_call.txt"
: > "$OUT/chain_body_kernels.txt"
for sampler in ddpm:100 ddim:10; do
  for batch in 1 50; do
    echo "$sampler batch $batch: $(run "$ROOT/experiments/bench/chain_body_kernels.py" --target="$TARGET" \
      --sampler=$sampler --batch_size=$batch | tr '\n' ' ')" | tee -a "$OUT/chain_body_kernels.txt"
  done
done
# config.policy.fused_sampling (session 15; a checkout without it fails these lines, not the ones above)
for variant in lowdim image; do
  for batch in 1 50; do
    for fused in "" --fused_sampling; do
      echo "$variant ddpm:100 batch $batch ${fused:-(unfused)}: $(run "$ROOT/experiments/bench/chain_body_kernels.py" \
        --target="$TARGET" --variant=$variant --sampler=ddpm:100 --batch_size=$batch $fused | tr '\n' ' ')" \
        | tee -a "$OUT/chain_body_kernels.txt" || true
    done
  done
done
