#!/usr/bin/env bash
# Stages what benchmarks/gpu/check.sh needs beyond nvcc and the CUDA toolkit into one folder, from
# this machine's Debian packages: the GPU machine has nvcc, CMake and PyTorch but none of Debian's
# packages and no network, and the device code's headers use Eigen and nlohmann-json.
#
#   bash benchmarks/gpu/stage.sh [DIR]     (default build/gpu-deps, about 23 MB)
#
# then, on the GPU machine, with DIR carried beside the checkout:
#   bash benchmarks/gpu/check.sh [DIR]
# The folder holds include/Eigen, include/nlohmann, fashion-mnist/ and lib/ (for
# benchmarks/gpu/train_check.sh) and MANIFEST (where each came from, with the package
# versions). Installing the packages first: bash cmake/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build/gpu-deps}
eigen=/usr/include/eigen3/Eigen json=/usr/include/nlohmann
for d in "$eigen" "$json"; do
  [ -d "$d" ] || { echo "stage.sh: expected $d (Debian's libeigen3-dev and nlohmann-json3-dev: run bash cmake/install-deps.sh)" >&2; exit 2; }
done
mkdir -p "$(dirname "$dir")"
tmp=$(mktemp -d "${dir%/}.tmp.XXXXXX")  # beside DIR, renamed into place when complete
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/include"
cp -r "$eigen" "$tmp/include/Eigen"
cp -r "$json" "$tmp/include/nlohmann"
# For benchmarks/gpu/train_check.sh: Fashion-MNIST's test split and the first 20000 training
# images (an IDX file with its count rewritten: the whole split would not fit what travels), and
# the libraries the CMake-built drivers load that the GPU machine's image may lack.
mkdir -p "$tmp/fashion-mnist" "$tmp/lib"
fm=/usr/share/datasets/fashion-mnist n=20000
[ -f "$fm/train-images-idx3-ubyte.gz" ] || { echo "stage.sh: expected $fm (Debian's dataset-fashion-mnist)" >&2; exit 2; }
cp "$fm"/t10k-*-ubyte.gz "$tmp/fashion-mnist/"
be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
set +o pipefail  # zcat and ldconfig stop on SIGPIPE once head / awk have what they need
{ zcat "$fm/train-images-idx3-ubyte.gz" | head -c 4; be32 $n; zcat "$fm/train-images-idx3-ubyte.gz" | tail -c +9 | head -c $((8 + n * 784)); } |
  gzip -1 >"$tmp/fashion-mnist/train-images-idx3-ubyte.gz"
{ zcat "$fm/train-labels-idx1-ubyte.gz" | head -c 4; be32 $n; zcat "$fm/train-labels-idx1-ubyte.gz" | tail -c +9 | head -c $n; } |
  gzip -1 >"$tmp/fashion-mnist/train-labels-idx1-ubyte.gz"
for so in libomp.so.5 libjpeg.so.62 libpng16.so.16; do
  f=$(ldconfig -p | awk -v s="$so" '$1 == s && /x86-64/ {print $NF; exit}')
  [ -n "$f" ] || f=$(ls /usr/lib/llvm-*/lib/"$so" 2>/dev/null | head -1)
  [ -n "$f" ] && cp -L "$f" "$tmp/lib/$so" || echo "stage.sh: $so not found here: not staged" >&2
done
set -o pipefail
{
  echo "staged $(date -u +%Y-%m-%dT%H:%MZ) by benchmarks/gpu/stage.sh"
  echo "include/Eigen    <- $eigen    ($(dpkg-query -W -f='${Package} ${Version}' libeigen3-dev 2>/dev/null || echo 'version unknown'))"
  echo "include/nlohmann <- $json ($(dpkg-query -W -f='${Package} ${Version}' nlohmann-json3-dev 2>/dev/null || echo 'version unknown'))"
  echo "fashion-mnist    <- $fm: t10k whole, train's first $n ($(dpkg-query -W -f='${Package} ${Version}' dataset-fashion-mnist 2>/dev/null || echo 'version unknown'))"
  echo "lib              <- $(ls "$tmp/lib" | tr '\n' ' ')(for the carried drivers; LD_LIBRARY_PATH)"
} >"$tmp/MANIFEST"
rm -rf "$dir"
mv "$tmp" "$dir"
trap - EXIT
echo "stage.sh: $dir ($(du -sh "$dir" | cut -f1)); carry it to the GPU machine and run: bash benchmarks/gpu/check.sh $dir"
