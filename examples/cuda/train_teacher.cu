// train_teacher_cuda: examples/train_teacher.cpp compiled by nvcc, with the device ops defined
// (ops/cuda/device_ops.cuh), so that --device cuda trains on the GPU. Built when nvcc is found.
#define SEQSWAP_DEVICE_DRIVER 1
#include "seqswap/ops/cuda/device_ops.cuh"

#include "../train_teacher.cpp"
