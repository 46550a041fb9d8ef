#!/usr/bin/env bash
# One script for a GPU machine: configure and build the cuda preset, run the device tests,
# run the device benchmarks, print a summary. Designed to finish in a few minutes on an H200.
#   bash benchmarks/gpu/check.sh
# Status: the device code covers the linear-recurrence scan (forward, reverse, backward) and the
# runtime pieces (errors, buffers, streams); the layers do not run on the device yet, so there
# is no attention, training-step or PyTorch comparison here (issue #8 lists what remains).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
cmake --preset cuda -DSEQSWAP_BUILD_EXAMPLES=OFF > /tmp/seqswap-cuda-configure.log
cmake --build build/cuda -j "$(nproc)" --target test_cuda_scan test_cuda_link test_cuda_backend bench_cuda_scan
echo "== device tests"
ctest --test-dir build/cuda -L cuda --output-on-failure
echo "== scan bandwidth vs device-to-device copy"
build/cuda/benchmarks/bench_cuda_scan
echo "== done in $(( $(date +%s) - start )) s"
