// replace_layers_cuda: examples/replace_layers.cpp compiled by nvcc, with the device ops defined
// (ops/cuda/device_ops.cuh), so that --device cuda distils on the GPU. Built when nvcc is found.
#define SEQSWAP_DEVICE_DRIVER 1
#include "seqswap/ops/cuda/device_ops.cuh"

#include "../replace_layers.cpp"
