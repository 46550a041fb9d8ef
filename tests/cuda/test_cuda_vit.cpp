// The device-path checks of tests/device_model_checks.hpp on a GPU: the teacher, attention and
// minGRU blocks and a student on backend::Cuda against the host, through the real kernels and
// cuBLAS. This file is host code (any C++ compiler); the device ops come from the object that
// nvcc compiles once (examples/cuda/device_ops.cu, zoo/device_instances.hpp).
// tests/test_device_emulation.cpp runs the same checks on the CPU emulation. Without a CUDA
// device it prints "no CUDA device: skipped" and exits 77 (ctest: skipped).
#include <cstdio>

#include "../device_model_checks.hpp"
#include "seqswap/ops/device.hpp"

int main() {
  if (!seqswap::ops::device::available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  seqswap::test::device_checks::run_all();
  seqswap::ops::device::synchronize();
  return seqswap::test::finish("teacher, attention and minGRU blocks and a student on the device agree with the host");
}
