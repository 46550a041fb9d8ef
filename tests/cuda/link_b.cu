#include "seqswap/ops/cuda/scan.cuh"

int link_b_probe() { return seqswap::cuda::device_available() ? 1 : 0; }
