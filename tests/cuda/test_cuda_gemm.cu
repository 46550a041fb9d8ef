// Device linear maps through cuBLAS (ops/cuda/gemm.cuh) against the host's (ops/gemm.hpp):
// y = x Wᵀ + b with and without bias, dx assigned, dW and db accumulated onto non-zero values
// (db through ops/cuda/columns.cuh: 1031 rows cover its unrolled loop and its tail, 130 columns
// a partial block of columns), odd sizes (1 row, 77 and 1031 rows; widths 3, 64, 130), float and
// double, pedantic FP32 (no TF32). Outputs start as NaN sentinels. Without a CUDA device it
// prints "no CUDA device: skipped" and exits 77 (ctest: skipped, never passed).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "seqswap/ops/cuda/gemm.cuh"
#include "seqswap/ops/gemm.hpp"
#include "device_check.cuh"

using namespace seqswap;
using seqswap::cuda::DeviceBuffer;

namespace {
using seqswap::test::down;
using seqswap::test::up;

template <class T>
void expect_close(const std::vector<T>& got, const std::vector<T>& want, double tol, const char* what, long long rows,
                  long long in, long long out) {
  seqswap::test::expect_close(got, want, tol, std::string(what) + " (rows " + std::to_string(rows) + ", in " +
                                                  std::to_string(in) + ", out " + std::to_string(out) + ", " +
                                                  (sizeof(T) == 4 ? "float)" : "double)"));
}

template <class T>
void run(const seqswap::cuda::Blas& blas, std::mt19937& g, double tol) {
  std::normal_distribution<double> nd(0.0, 1.0);
  const auto randv = [&](long long n) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (auto& e : v) e = T(nd(g));
    return v;
  };
  for (long long rows : {1LL, 77LL, 1031LL})
    for (long long in : {3LL, 64LL, 130LL})
      for (long long out : {3LL, 130LL})
        for (bool bias : {false, true}) {
          const auto x = randv(rows * in), w = randv(out * in), b = randv(out), dy = randv(rows * out);
          std::vector<T> y(static_cast<std::size_t>(rows * out)), dx(static_cast<std::size_t>(rows * in));
          auto dw = randv(out * in), db = randv(out);  // accumulated onto
          auto d_x = up(x), d_w = up(w), d_b = up(b), d_dy = up(dy), d_dw = up(dw), d_db = up(db);
          ops::linear_forward(x.data(), rows, in, w.data(), bias ? b.data() : nullptr, out, y.data());
          ops::linear_backward(x.data(), rows, in, w.data(), out, dy.data(), dx.data(), dw.data(),
                               bias ? db.data() : nullptr);
          DeviceBuffer<T> d_y, d_dx;
          d_y.assign(y.size(), T(std::nan("")));
          d_dx.assign(dx.size(), T(std::nan("")));
          ops::cuda::linear_forward(blas, d_x.data(), rows, in, d_w.data(), bias ? d_b.data() : nullptr, out, d_y.data());
          ops::cuda::linear_backward(blas, d_x.data(), rows, in, d_w.data(), out, d_dy.data(), d_dx.data(), d_dw.data(),
                                     bias ? d_db.data() : nullptr);
          SEQSWAP_CUDA_CHECK(cudaDeviceSynchronize());
          expect_close(down(d_y), y, tol, bias ? "y (bias)" : "y", rows, in, out);
          expect_close(down(d_dx), dx, tol, "dx", rows, in, out);
          expect_close(down(d_dw), dw, tol, "dw", rows, in, out);
          if (bias) expect_close(down(d_db), db, tol, "db", rows, in, out);
        }
}
}  // namespace

int main() {
  seqswap::test::skip_without_device();
  std::mt19937 g(11);
  seqswap::cuda::Blas blas;
  run<float>(blas, g, 2e-5);
  run<double>(blas, g, 1e-12);
  blas.allow_tf32(true);  // --tf32: TF32 tensor-core inputs (10-bit mantissa), fp32 accumulate
  run<float>(blas, g, 1e-2);
  return seqswap::test::finish("device linear (cuBLAS) matches the host's, float and double, and TF32 within 1e-2");
}
