#!/usr/bin/env bash
# Stages what benchmarks/gpu/check.sh needs beyond nvcc and the CUDA toolkit into one folder, from
# this machine's Debian packages: the GPU machine has nvcc, CMake and PyTorch but none of Debian's
# packages and no network, and the device code's headers use Eigen and nlohmann-json.
#
#   bash benchmarks/gpu/stage.sh [DIR]     (default build/gpu-deps, about 8 MB)
#
# then, on the GPU machine, with DIR carried beside the checkout:
#   bash benchmarks/gpu/check.sh [DIR]
# The folder holds include/Eigen, include/nlohmann and MANIFEST (where each came from, with the
# package versions). Installing the packages first: bash cmake/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build/gpu-deps}
eigen=/usr/include/eigen3/Eigen json=/usr/include/nlohmann
for d in "$eigen" "$json"; do
  [ -d "$d" ] || { echo "stage.sh: expected $d (Debian's libeigen3-dev and nlohmann-json3-dev: run bash cmake/install-deps.sh)" >&2; exit 2; }
done
tmp=$(mktemp -d "${dir%/}.tmp.XXXXXX")  # beside DIR, renamed into place when complete
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/include"
cp -r "$eigen" "$tmp/include/Eigen"
cp -r "$json" "$tmp/include/nlohmann"
{
  echo "staged $(date -u +%Y-%m-%dT%H:%MZ) by benchmarks/gpu/stage.sh"
  echo "include/Eigen    <- $eigen    ($(dpkg-query -W -f='${Package} ${Version}' libeigen3-dev 2>/dev/null || echo 'version unknown'))"
  echo "include/nlohmann <- $json ($(dpkg-query -W -f='${Package} ${Version}' nlohmann-json3-dev 2>/dev/null || echo 'version unknown'))"
} >"$tmp/MANIFEST"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "stage.sh: $dir ($(du -sh "$dir" | cut -f1)); carry it to the GPU machine and run: bash benchmarks/gpu/check.sh $dir"
