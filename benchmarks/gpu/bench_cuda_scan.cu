// Device scan bandwidth as a fraction of the device-to-device copy bandwidth measured in the
// same run (issue target: >= 70% for N*D >= 2^26). The scan moves 3 arrays (read a, b; write h),
// a copy 2 (read, write). Timing: CUDA events, 3 warm-ups, median of 20.
//   build/cuda/benchmarks/bench_cuda_scan
#include <algorithm>
#include <cstdio>
#include <vector>

#include "seqswap/ops/cuda/scan.cuh"

using namespace seqswap;

template <class F>
float median_ms(F&& f) {
  cudaEvent_t a, b;
  SEQSWAP_CUDA_CHECK(cudaEventCreate(&a));
  SEQSWAP_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < 20; ++i) {
    SEQSWAP_CUDA_CHECK(cudaEventRecord(a));
    f();
    SEQSWAP_CUDA_CHECK(cudaEventRecord(b));
    SEQSWAP_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    SEQSWAP_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  std::nth_element(t.begin(), t.begin() + 10, t.end());
  return t[10];
}

int main() try {
  if (!seqswap::cuda::device_available()) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  std::printf("%-10s %-8s %-6s %-10s %-12s %-12s %s\n", "B", "N", "D", "N*D*B", "scan GB/s", "copy GB/s", "fraction");
  struct Shape { int B; index_t N; int D; };
  for (Shape s : {Shape{8, 1024, 192}, Shape{64, 4096, 256}, Shape{16, 16384, 384}, Shape{1, 1 << 20, 64}}) {
    const std::size_t n = std::size_t(s.B) * s.N * s.D;
    std::vector<index_t> off(s.B + 1);
    for (int b = 0; b <= s.B; ++b) off[b] = b * s.N;
    seqswap::cuda::DeviceBuffer<index_t> d_off;
    d_off.upload(off.data(), off.size());
    seqswap::cuda::DeviceBuffer<float> a(n), b(n), h(n);
    SEQSWAP_CUDA_CHECK(cudaMemset(a.data(), 0, n * sizeof(float)));
    SEQSWAP_CUDA_CHECK(cudaMemset(b.data(), 0, n * sizeof(float)));
    const float scan = median_ms([&] { ops::cuda::linear_scan(a.data(), b.data(), h.data(), d_off.data(), s.B, s.D, false); });
    const float copy = median_ms([&] {
      SEQSWAP_CUDA_CHECK(cudaMemcpyAsync(h.data(), a.data(), n * sizeof(float), cudaMemcpyDeviceToDevice));
    });
    const double scan_gbs = 3.0 * n * sizeof(float) / (scan * 1e6), copy_gbs = 2.0 * n * sizeof(float) / (copy * 1e6);
    std::printf("%-10d %-8ld %-6d %-10zu %-12.1f %-12.1f %.2f\n", s.B, long(s.N), s.D, n, scan_gbs, copy_gbs, scan_gbs / copy_gbs);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_cuda_scan: %s\n", e.what());
  return 1;
}
