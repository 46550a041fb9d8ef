// avit_finetune_cuda: examples/avit_finetune.cpp compiled by nvcc, with the device ops defined
// (ops/cuda/device_ops.cuh), so that --device cuda fine-tunes on the GPU. Built when nvcc is found.
#define SEQSWAP_DEVICE_DRIVER 1
#include "seqswap/ops/cuda/device_ops.cuh"

#include "../avit_finetune.cpp"
