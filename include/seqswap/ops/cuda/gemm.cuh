// Dense affine maps over token rows on the GPU through cuBLAS, the device counterparts of
// ops::linear_forward / linear_backward (ops/gemm.hpp): y = x Wᵀ + b with W stored [out, in]
// (timm), row-major throughout. cuBLAS is column-major, so each product is issued on the
// transposes (a row-major matrix is its transpose in column-major): y = x Wᵀ is yᵀ = W xᵀ,
// dx = dy W is dxᵀ = Wᵀ dyᵀ, dW += dyᵀ x is dWᵀ += xᵀ dy. The bias is a broadcast kernel before
// the product (accumulated onto, beta = 1); db is a column sum over rows (ops/cuda/columns.cuh:
// deterministic, in a fixed order that is not the host's).
//
// Precision: FP32 by default (pedantic: cuBLAS may not use TF32 or reduced-precision tensor
// cores, so results are comparable with the host's at float tolerance); Blas::allow_tf32(true)
// opts in to TF32 tensor cores. Link with CUDA::cublas.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/cuda/columns.cuh"

namespace seqswap::cuda {

inline void check_blas(cublasStatus_t st, const char* call, const char* file, int line) {
  if (st != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS: ", call, " failed: ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") at ", file, ":",
         line);
}
#define SEQSWAP_CUBLAS_CHECK(call) ::seqswap::cuda::check_blas((call), #call, __FILE__, __LINE__)

// An owned cuBLAS handle bound to a stream (one per model, like the stream).
class Blas {
 public:
  explicit Blas(cudaStream_t s = nullptr) {
    SEQSWAP_CUBLAS_CHECK(cublasCreate(&h_));
    SEQSWAP_CUBLAS_CHECK(cublasSetStream(h_, s));
    allow_tf32(false);
  }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  ~Blas() { cublasDestroy(h_); }
  cublasHandle_t get() const { return h_; }
  void allow_tf32(bool on) {
    SEQSWAP_CUBLAS_CHECK(cublasSetMathMode(h_, on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
  }
  cudaStream_t stream() const {
    cudaStream_t s = nullptr;
    SEQSWAP_CUBLAS_CHECK(cublasGetStream(h_, &s));
    return s;
  }

 private:
  cublasHandle_t h_{};
};

}  // namespace seqswap::cuda

namespace seqswap::ops::cuda {

namespace detail {
// Column-major C (m, n) = alpha op(A) op(B) + beta C, float or double.
template <class T>
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, T alpha, const T* a,
          int lda, const T* b, int ldb, T beta, T* c, int ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "device GEMM: float or double");
  if constexpr (std::is_same_v<T, float>)
    SEQSWAP_CUBLAS_CHECK(cublasSgemm(h, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc));
  else
    SEQSWAP_CUBLAS_CHECK(cublasDgemm(h, ta, tb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc));
}

template <class T>
__global__ void broadcast_rows_kernel(const T* b, long long rows, long long out, T* y) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rows * out) y[i] = b[i % out];
}
// Row r's share of the bias gradient: dy[r, j].
template <class T>
struct BiasGradTerm {
  const T* dy;
  long long out;
  __device__ void operator()(long long r, long long j, T* t) const { t[0] = dy[r * out + j]; }
};
inline int dim_of(long long v, const char* what) {
  check(v >= 0 && v <= 0x7fffffffLL, "device GEMM: ", what, " = ", v, " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}
}  // namespace detail

// x (rows, in), w (out, in), b (out) or null -> y (rows, out); on blas's stream.
template <class T>
void linear_forward(const seqswap::cuda::Blas& blas, const T* x, long long rows, long long in, const T* w, const T* b,
                    long long out, T* y) {
  if (rows == 0 || out == 0) return;
  const int m = detail::dim_of(out, "out"), n = detail::dim_of(rows, "rows"), k = detail::dim_of(in, "in");
  if (b) {
    detail::broadcast_rows_kernel<T><<<seqswap::cuda::blocks_for(rows * out, 256), 256, 0, blas.stream()>>>(b, rows, out, y);
    SEQSWAP_CUDA_LAUNCHED("broadcast_rows_kernel");
  }
  detail::gemm<T>(blas.get(), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, T(1), w, k, x, k, b ? T(1) : T(0), y, m);
}

// dy (rows, out); dx (rows, in) ASSIGNED if non-null; dw (out, in), db (out) ACCUMULATED if non-null.
template <class T>
void linear_backward(const seqswap::cuda::Blas& blas, const T* x, long long rows, long long in, const T* w,
                     long long out, const T* dy, T* dx, T* dw, T* db) {
  if (rows == 0) return;
  const int o = detail::dim_of(out, "out"), r = detail::dim_of(rows, "rows"), i = detail::dim_of(in, "in");
  if (dx) detail::gemm<T>(blas.get(), CUBLAS_OP_N, CUBLAS_OP_N, i, r, o, T(1), w, i, dy, o, T(0), dx, i);
  if (dw) detail::gemm<T>(blas.get(), CUBLAS_OP_N, CUBLAS_OP_T, i, o, r, T(1), x, i, dy, o, T(1), dw, i);
  if (db) {
    detail::column_sums<T, 1>(rows, out, detail::BiasGradTerm<T>{dy, out}, db, nullptr, blas.stream(),
                              "launch of column_sums_kernel (bias gradient)");
  }
}

}  // namespace seqswap::ops::cuda
