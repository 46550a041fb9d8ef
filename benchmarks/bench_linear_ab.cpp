// The row-wise linear maps side by side with the product they replaced, interleaved call by
// call, operands out of cache as the training step meets them (12 sets of x and y, ~100 MB,
// taken in turn). A plain driver, not Google Benchmark: on a shared machine whose memory
// bandwidth drifts by tens of percent within a minute, only calls that alternate every
// millisecond see the same machine; each case's figure is the median over its calls after
// warm-up, and the ratio is Eigen's median time over this library's.
//   A = ops::linear_forward / ops::linear_backward's dx (ops/panel_gemm.hpp)
//   B = one Eigen product per row chunk (y = b, then y += x Wᵀ; dx = dy W), as before issue 20
//
//   OMP_NUM_THREADS=2 build/release/benchmarks/bench_linear_ab [calls per case, default 41]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/ops/gemm.hpp"

using namespace seqswap;

namespace {
using bench::randn;
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::atoi(argv[1]) : 41;
  if (calls < 1) {
    std::fprintf(stderr, "bench_linear_ab: expected a positive count of calls per case, found '%s'\n", argv[1]);
    return 2;
  }
  const index_t rows = 6400;
  constexpr int kSets = 12;
  std::printf("# rows %lld, %d interleaved calls per case (after 3 warm-up), median ms; ratio = Eigen / this library\n",
              static_cast<long long>(rows), calls);
  std::printf("%-18s %10s %10s %7s\n", "case", "library", "Eigen", "ratio");
  for (const auto& shape : {std::pair<index_t, index_t>{64, 192}, {64, 256}, {256, 64}}) {
    const index_t in = shape.first, out = shape.second;
    std::vector<std::vector<float>> xs, ys;
    for (int k = 0; k < kSets; ++k) {
      xs.push_back(randn(std::size_t(rows * in), 20 + std::uint64_t(k)));
      ys.push_back(randn(std::size_t(rows * out), 40 + std::uint64_t(k)));
    }
    const auto w = randn(std::size_t(out * in), 2), b = randn(std::size_t(out), 3);
    int k = 0;
    // dx: x is dx (rows, in), y is dy (rows, out)
    const auto run = [&](bool dx, bool eigen) {
      float* x = xs[std::size_t(k % kSets)].data();
      float* y = ys[std::size_t(k % kSets)].data();
      ++k;
      const auto t0 = std::chrono::steady_clock::now();
      if (!eigen) {
        if (dx)
          ops::linear_backward<float>(nullptr, rows, in, w.data(), out, y, x, nullptr, nullptr);
        else
          ops::linear_forward(x, rows, in, w.data(), b.data(), out, y);
      } else {
        host::for_row_chunks(rows, [&](index_t r0, index_t r1) {
          host::CMatMap<float> W(w.data(), out, in);
          if (dx) {
            host::MatMap<float>(x + r0 * in, r1 - r0, in).noalias() = host::CMatMap<float>(y + r0 * out, r1 - r0, out) * W;
          } else {
            host::MatMap<float> Y(y + r0 * out, r1 - r0, out);
            Y.rowwise() = host::CVecMap<float>(b.data(), out);
            Y.noalias() += host::CMatMap<float>(x + r0 * in, r1 - r0, in) * W.transpose();
          }
        });
      }
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    for (const bool dx : {false, true}) {
      std::vector<double> lib, eig;
      for (int i = 0; i < 3 + calls; ++i) {
        const double a = run(dx, false), e = run(dx, true);
        if (i >= 3) lib.push_back(a), eig.push_back(e);
      }
      const std::string name = (dx ? "dx " : "y  ") + std::to_string(in) + "->" + std::to_string(out);
      std::printf("%-18s %10.3f %10.3f %7.2f\n", name.c_str(), median(lib), median(eig), median(eig) / median(lib));
    }
  }
}
