// Two translation units include the CUDA headers and are linked into one program: no ODR clash.
#include <cstdio>

#include "seqswap/ops/cuda/scan.cuh"

int link_b_probe();  // link_b.cu

int main() {
  const int n = link_b_probe();
  if (!seqswap::cuda::device_available()) {
    std::printf("linked (%d); no CUDA device: skipped\n", n);
    return 77;  // ctest SKIP_RETURN_CODE: reported as skipped, never as passed
  }
  seqswap::cuda::DeviceBuffer<float> x(16);
  std::printf("linked (%d), device buffer of %zu floats\n", n, x.size());
  return 0;
}
