#!/usr/bin/env bash
# Prepares what the lent GPU machine lacks (issue 12): it has Python 3.12 with jax, flax, optax, orbax, chex, numpy
# and torch, no internet, and gets only the working tree plus up to 8 carried ignored paths (64 MiB in all).
# Writes into .device/ (ignored by git, ~34 MB):
#   .device/wheels/      cp312 wheels of the other dependencies (grain, zarr, the Push-T simulator, ...), ~31 MB
#   .device/pusht.zarr   the Push-T demonstrations without images (~2.5 MB; the low-dim policies need no more);
#                        with IMAGES=1, with them (~31 MB, for the image policies: .device is then ~64 MB, at the
#                        device tool's 64 MiB carry limit)
# Then, with the device tool: carry [".device"], and the calls of BUILD_NOTES.md "GPU check" (call 1:
#   experiments/gpu_recipes.sh, ~7 min; call 2: experiments/gpu_bench.sh, ~3.5 min; then gpu_distill.sh or
#   gpu_check.sh), e.g.
#   [ -d /tmp/py/grain ] || python3 -m pip install -q --no-deps --target /tmp/py .device/wheels/*.whl; \
#     export PYTHONPATH=$PWD:/tmp/py DPJAX_PUSHT_ZARR=$PWD/.device/pusht.zarr PYTHON=python3; \
#     DEADLINE_S=400 OUT=$OUT bash experiments/gpu_recipes.sh > /dev/null 2>&1; tail -c 6000 $OUT/recipes.log
set -euo pipefail
cd "$(dirname "$0")/.."
zarr=${DPJAX_PUSHT_ZARR:-../shared/data/pusht/pusht_cchi_v7_replay.zarr}
mkdir -p .device/wheels
pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --no-deps -d .device/wheels \
    grain==0.2.18 array_record portpicker ml_collections==1.1.0 zarr==3.1.6 numcodecs==0.16.6 donfig google-crc32c \
    tensorboardX==2.6.5 gym-pusht==0.1.8 gymnasium farama-notifications pymunk==6.11.1 pygame==2.5.2 shapely cffi \
    pycparser imageio tqdm cloudpickle flatbuffers==25.12.19
rm -rf .device/pusht.zarr
cp -r "$zarr" .device/pusht.zarr
[ "${IMAGES:-0}" = 1 ] || rm -rf .device/pusht.zarr/data/img
du -sh .device/wheels .device/pusht.zarr
total=$(du -sb .device | cut -f1)
if [ "$total" -gt $(( 64 * 1024 * 1024 )) ]; then
  echo "prepare_device.sh: .device is $(( total / 1024 / 1024 )) MiB, over the device tool's 64 MiB carry limit:" \
       "prepare it without IMAGES=1" >&2
  exit 1
fi
