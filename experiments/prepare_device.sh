#!/usr/bin/env bash
# Prepares what the lent GPU machine lacks (issue 12): it has Python 3.12 with jax, flax, optax, orbax, chex, numpy
# and torch, no internet, and gets only the working tree plus up to 8 carried ignored paths (64 MiB in all).
# Writes into .device/ (ignored by git, ~37 MB):
#   .device/wheels/      cp312 wheels of the other dependencies (grain, zarr, the Push-T simulator, ...), ~31 MB
#   .device/pusht.zarr   the Push-T demonstrations (~5 MB: the file's float32 images, 29.8 MB with zstd-5 and
#                        bit-shuffle, are rewritten as the uint8 they hold with zstd-9, 3.7 MB, the same values after
#                        loading; IMAGES=0 leaves them out, 1.3 MB, for the low-dim policies)
# The device tool's 64 MiB carry limit counts the working tree (tracked and untracked-not-ignored files, ~14 MB)
# with the carried paths; the script checks both together.
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
rm -rf .device/pusht.zarr/data/img
if [ "${IMAGES:-1}" = 1 ]; then
  "${PYTHON:-.venv/bin/python}" - "$zarr" .device/pusht.zarr <<'EOF'
import sys
import numcodecs
import numpy as np
import zarr
source = zarr.open_group(sys.argv[1], mode="r")["data"]["img"]
target = zarr.open_group(sys.argv[2], mode="r+")["data"].create_array(
    "img", shape=source.shape, dtype=np.uint8, chunks=source.chunks,
    compressors=numcodecs.Blosc(cname="zstd", clevel=9, shuffle=numcodecs.Blosc.NOSHUFFLE),
    config={"write_empty_chunks": True})
rows = source.chunks[0] * 16
for start in range(0, source.shape[0], rows):
  block = np.asarray(source[start:start + rows])
  if not np.array_equal(block, block.astype(np.uint8)):
    sys.exit(f"prepare_device.sh: images at rows {start}+ are not uint8 values; carry them as they are")
  target[start:start + rows] = block.astype(np.uint8)
EOF
fi
du -sh .device/wheels .device/pusht.zarr
tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
total=$(( tree + $(du -sb .device | cut -f1) ))
if [ "$total" -gt $(( 64 * 1024 * 1024 )) ]; then
  echo "prepare_device.sh: the working tree and .device are $(( total / 1024 / 1024 )) MiB, over the device tool's" \
       "64 MiB carry limit" >&2
  exit 1
fi
echo "prepare_device.sh: the working tree and .device carry $(( total / 1024 / 1024 )) MiB of the 64 MiB limit"
