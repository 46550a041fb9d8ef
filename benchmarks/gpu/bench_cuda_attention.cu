// Device streamed attention forward (ops/cuda/attention.cuh), dense rule, float: the median over
// timed repetitions (after a warm-up) at N = 197, 1024 and 4096 tokens, 6 heads of width 64, and
// batch chosen so that each size does comparable work. Prints one line per size in the format
// benchmarks/gpu/check.sh puts beside PyTorch's scaled_dot_product_attention at the same shapes.
// Without a device it prints "skipped" and exits 0 (a benchmark, not a test).
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "seqswap/ops/cuda/attention.cuh"

using namespace seqswap;
namespace flash = seqswap::ops::flash;

int main() {
  if (!seqswap::cuda::device_available()) {
    std::printf("bench_cuda_attention: no CUDA device: skipped\n");
    return 0;
  }
  const flash::idx H = 6, d = 64, D = H * d;
  std::mt19937 g(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const auto& [N, B] : std::vector<std::pair<flash::idx, flash::idx>>{{197, 64}, {1024, 8}, {4096, 1}}) {
    std::vector<flash::idx> offsets(std::size_t(B + 1));
    for (flash::idx b = 0; b <= B; ++b) offsets[std::size_t(b)] = b * N;
    const flash::idx rows = B * N;
    std::vector<float> qkv(std::size_t(rows * 3 * D));
    for (auto& v : qkv) v = nd(g);
    seqswap::cuda::DeviceBuffer<float> d_qkv, d_pre;
    seqswap::cuda::DeviceBuffer<flash::idx> d_off;
    seqswap::cuda::DeviceBuffer<flash::RowStats<float>> d_stats;
    d_qkv.upload(qkv.data(), qkv.size());
    d_off.upload(offsets.data(), offsets.size());
    d_pre.resize(std::size_t(rows * D));
    d_stats.resize(std::size_t(rows * H));
    const flash::Problem<float> p{.qkv = d_qkv.data(), .offsets = d_off.data(), .batch = B, .dim = D, .heads = H};
    cudaEvent_t e0, e1;
    SEQSWAP_CUDA_CHECK(cudaEventCreate(&e0));
    SEQSWAP_CUDA_CHECK(cudaEventCreate(&e1));
    ops::cuda::flash_attention_forward(p, rows, d_pre.data(), d_stats.data());  // warm-up
    SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> ms;
    for (int r = 0; r < 7; ++r) {
      SEQSWAP_CUDA_CHECK(cudaEventRecord(e0));
      ops::cuda::flash_attention_forward(p, rows, d_pre.data(), d_stats.data());
      SEQSWAP_CUDA_CHECK(cudaEventRecord(e1));
      SEQSWAP_CUDA_CHECK(cudaEventSynchronize(e1));
      float t = 0;
      SEQSWAP_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double flops = 4.0 * double(B) * double(H) * double(N) * double(N) * double(d);
    std::printf("attention forward B %lld H %lld N %lld d %lld: seqswap %.3f ms (median of 7), %.1f TFLOP/s\n",
                (long long)B, (long long)H, (long long)N, (long long)d, ms[3], flops / (ms[3] * 1e-3) / 1e12);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  return 0;
}
