// The device-path checks of tests/device_model_checks.hpp on a GPU: the teacher, attention and
// minGRU blocks and a student on backend::Cuda against the host, through the real kernels and
// cuBLAS (ops/cuda/device_ops.cuh). tests/test_device_emulation.cpp runs the same checks on the
// CPU. Without a CUDA device it prints "no CUDA device: skipped" and exits 77 (ctest: skipped).
#include "seqswap/ops/cuda/device_ops.cuh"
#include "device_check.cuh"
#include "../device_model_checks.hpp"

int main() {
  seqswap::test::skip_without_device();
  seqswap::test::device_checks::run_all();
  SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
  return seqswap::test::finish("teacher, attention and minGRU blocks and a student on the device agree with the host");
}
