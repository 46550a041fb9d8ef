#!/usr/bin/env bash
# What one call on a leased GPU machine runs (the device tool: `run`, with build/gpu-deps,
# build/gpu-check and build/release/examples/train_teacher_cuda carried): benchmarks/gpu/check.sh
# on the binaries built here (SEQSWAP_CHECK_REUSE: nvcc's minutes are spent on this machine, not
# on the lease; any that does not load there is rebuilt there), benchmarks/gpu/train_check.sh and
# benchmarks/gpu/profile.sh; the summaries and every log in one archive under $OUT (what comes
# back is at most 8 files).
# Prepare here first:
#   bash benchmarks/gpu/stage.sh && bash benchmarks/gpu/check.sh &&
#   cmake --preset release && cmake --build build/release --target train_teacher_cuda
# and carry build/gpu-deps, build/gpu-check and build/release/examples/train_teacher_cuda (44 MB).
# The tracked tree (86 MB, most of it models/training and docs/results) is over the 64 MiB a call
# takes along; for the call, take those two out of the index and ignore them:
#   printf '/models/training/\n/docs/results/\n' >>.git/info/exclude
#   git rm -r -q --cached models/training docs/results
# and afterwards put them back: git reset -q -- models/training docs/results, and remove the two
# lines from .git/info/exclude (the files themselves never leave the working tree).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-build/gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64:$PWD/build/gpu-deps/lib"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | head -3
env -u OUT SEQSWAP_CHECK_REUSE=1 SEQSWAP_CHECK_TIMEOUT=${SEQSWAP_CHECK_TIMEOUT:-150} bash benchmarks/gpu/check.sh build/gpu-deps
check=$?
env -u OUT bash benchmarks/gpu/train_check.sh build/release/examples/train_teacher_cuda build/gpu-deps build/gpu-train
train=$?
bash benchmarks/gpu/profile.sh
cp build/gpu-check/summary.txt "$out/check-summary.txt" 2>/dev/null
cp build/gpu-train/summary.txt "$out/train-summary.txt" 2>/dev/null
tar czf "$out/gpu-logs.tgz" build/gpu-check/*.log build/gpu-check/summary.txt build/gpu-train build/gpu-profile 2>/dev/null
echo "device_run: check.sh exit $check, train_check.sh exit $train"
[ $check -eq 0 ] && [ $train -eq 0 ]
