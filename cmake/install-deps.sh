#!/usr/bin/env bash
# Installs the Debian packages seqswap needs, only those that are missing. Idempotent.
# Usage: cmake/install-deps.sh [--with-torch] [--with-torch-pypi] [--with-blas]
#   --with-torch: python3-torch, only needed to regenerate reference fixtures and to run
#                 benchmarks/compare_torch.py; the tests never need it
#   --with-torch-pypi: also a current PyTorch from PyPI (version $SEQSWAP_TORCH_PYPI_VERSION,
#                 default below) in a virtual environment at $SEQSWAP_TORCH_PYPI_VENV (default
#                 ~/.cache/seqswap/torch-pypi), the second anchor of benchmarks/compare_torch.py
#                 (eager and torch.compile). Opt-in tooling: PyPI's Linux wheel pulls its CUDA
#                 libraries too (about 4 GB on disk) because it will not import without them; the
#                 library, its tests and `make experiment` never use it.
#   --with-blas:  OpenBLAS headers/library for -DSEQSWAP_USE_BLAS=ON (off by default: Eigen's own
#                 GEMM measured 1.7-2.1x faster here, docs/performance.md)
set -euo pipefail

packages=(
  cmake make g++ clang libomp-14-dev libclang-rt-14-dev   # toolchain: release preset uses clang++ + libomp (measured faster); libFuzzer + sanitizer runtimes
  libeigen3-dev                        # host math
  catch2                               # unit tests (v2, Catch2WithMain)
  libbenchmark-dev                     # benchmarks
  nlohmann-json3-dev                   # safetensors headers, reports
  libcli11-dev                         # example drivers' flags
  zlib1g-dev                           # gzip IDX datasets
  libjpeg62-turbo-dev libpng-dev       # image folders (JPEG, PNG)
  gnuplot-nox                          # report plots
  dataset-fashion-mnist                # /usr/share/datasets/fashion-mnist/*-ubyte.gz
  libopenmpi-dev openmpi-bin           # data-parallel training over MPI (SEQSWAP_ENABLE_MPI=AUTO)
)
# OpenBLAS: Debian's torch calls libblas.so.3, which is the slow reference BLAS unless OpenBLAS is
# installed (then the alternatives system points it there): PyTorch at its best needs it.
torch_pypi=0
for arg in "$@"; do
  case "$arg" in
    --with-torch) packages+=(python3-torch python3-numpy libopenblas0-pthread) ;;
    --with-torch-pypi) torch_pypi=1
      # venv + pip for the environment, Python.h and g++ for torch.compile's C++ code generation
      packages+=(python3-venv python3-pip python3-dev python3-torch python3-numpy libopenblas0-pthread) ;;
    --with-blas) packages+=(libopenblas-dev) ;;
    *) echo "install-deps: unknown option '$arg' (expected --with-torch, --with-torch-pypi or --with-blas)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: missing: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: error: need root to install them; run as root or:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  echo "install-deps: installed ${missing[*]}"
fi

if ((torch_pypi)); then
  venv=${SEQSWAP_TORCH_PYPI_VENV:-$HOME/.cache/seqswap/torch-pypi}
  version=${SEQSWAP_TORCH_PYPI_VERSION:-2.15.0}
  if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; then
    echo "install-deps: PyPI torch $version present in $venv"
  else
    echo "install-deps: installing torch==$version from PyPI into $venv (about 4 GB with its CUDA libraries)"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q "torch==$version" numpy
    "$venv/bin/python" -c "import torch; print('install-deps: PyPI torch', torch.__version__, 'imports')"
  fi
fi
