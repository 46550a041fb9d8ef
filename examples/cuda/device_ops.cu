// The real CUDA backend, instantiated once (nvcc, sm_90): the device ops of ops/device.hpp,
// Buffer<T, backend::Cuda> and every layer functor's kernel (zoo/device_instances.hpp). The
// drivers' --device cuda builds and test_cuda_vit compile their host code with the C++ compiler
// and link this object (CMake's seqswap_cuda_ops).
#include "seqswap/ops/cuda/device_ops.cuh"

#include "seqswap/zoo/device_instances.hpp"
