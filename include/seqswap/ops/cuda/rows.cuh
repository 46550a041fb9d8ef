// Layer norm, GELU, softmax cross-entropy and AdamW on the GPU: the row and element functions of
// ops/rows.hpp, which the host ops call too, one thread per row (layer norm, cross-entropy) or
// per element (GELU, AdamW); layer norm's parameter gradients are column sums over rows
// (ops/cuda/columns.cuh: deterministic, in a fixed order that is not the host's). The host ops
// are the reference (tests/cuda/test_cuda_rows.cu). Every pointer is a device pointer; every
// launch is checked.
#pragma once
#include <cuda_runtime.h>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/ops/cuda/columns.cuh"
#include "seqswap/ops/rows.hpp"

namespace seqswap::ops::cuda {

namespace detail {
constexpr int kRowThreads = 256;

template <class T>
__global__ void layer_norm_forward_kernel(const T* x, long long rows, long long D, const T* gamma, const T* beta,
                                          T eps, T* y, T* mean, T* rstd) {
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) ops::rows::layer_norm_forward_row(x + r * D, D, gamma, beta, eps, y + r * D, mean[r], rstd[r]);
}
template <class T>
__global__ void layer_norm_dx_kernel(const T* x, long long rows, long long D, const T* gamma, const T* mean,
                                     const T* rstd, const T* dy, T* dx) {
  const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) ops::rows::layer_norm_backward_row(x + r * D, D, gamma, mean[r], rstd[r], dy + r * D, dx + r * D);
}
// Row r's shares of dgamma and dbeta: dy · x̂ and dy.
template <class T>
struct LayerNormParamsTerm {
  const T *x, *mean, *rstd, *dy;
  long long D;
  __device__ void operator()(long long r, long long j, T* t) const {
    const T g = dy[r * D + j];
    t[0] = g * (x[r * D + j] - mean[r]) * rstd[r];
    t[1] = g;
  }
};
template <class T>
__global__ void gelu_forward_kernel(const T* x, long long n, T* y) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = ops::rows::gelu_value(x[i]);
}
template <class T>
__global__ void gelu_backward_kernel(const T* x, const T* dy, long long n, T* dx) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dx[i] = dy[i] * ops::rows::gelu_grad(x[i]);
}
template <class T>
__global__ void cross_entropy_kernel(const T* logits, const std::int32_t* labels, long long B, long long C,
                                     double smoothing, T* dlogits, double* loss, std::uint8_t* correct) {
  const long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const auto r = ops::rows::cross_entropy_row(logits + b * C, C, labels[b], smoothing, B, dlogits ? dlogits + b * C : nullptr);
  loss[b] = r.loss;
  correct[b] = r.correct;
}
template <class T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, long long n, const std::uint8_t* decay,
                             const std::uint8_t* trainable, ops::rows::AdamWCoefs<T> k) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n || (trainable && !trainable[i])) return;
  ops::rows::adamw_element(p[i], g[i], m[i], v[i], decay[i] != 0, k);
}
}  // namespace detail

// As ops::layer_norm_forward (ops/layer_norm.hpp).
template <class T>
void layer_norm_forward(const T* x, long long rows, long long D, const T* gamma, const T* beta, T eps, T* y, T* mean,
                        T* rstd, cudaStream_t s = nullptr) {
  if (rows == 0) return;
  detail::layer_norm_forward_kernel<T><<<seqswap::cuda::blocks_for(rows, detail::kRowThreads), detail::kRowThreads, 0, s>>>(x, rows, D, gamma,
                                                                                                beta, eps, y, mean, rstd);
  SEQSWAP_CUDA_LAUNCHED("layer_norm_forward_kernel");
}
// As ops::layer_norm_backward: dx ASSIGNED (if non-null), dgamma and dbeta ACCUMULATED.
template <class T>
void layer_norm_backward(const T* x, long long rows, long long D, const T* gamma, const T* mean, const T* rstd,
                         const T* dy, T* dx, T* dgamma, T* dbeta, cudaStream_t s = nullptr) {
  if (rows == 0) return;
  if (dx) {
    detail::layer_norm_dx_kernel<T><<<seqswap::cuda::blocks_for(rows, detail::kRowThreads), detail::kRowThreads, 0, s>>>(x, rows, D, gamma, mean,
                                                                                             rstd, dy, dx);
    SEQSWAP_CUDA_LAUNCHED("layer_norm_dx_kernel");
  }
  detail::column_sums<T, 2>(rows, D, detail::LayerNormParamsTerm<T>{x, mean, rstd, dy, D}, dgamma, dbeta, s,
                            "launch of column_sums_kernel (layer norm dgamma, dbeta)");
}
// As ops::gelu_forward / gelu_backward (dx = dy · gelu'(x), ASSIGNED; dx may be dy).
template <class T>
void gelu_forward(const T* x, long long n, T* y, cudaStream_t s = nullptr) {
  if (n == 0) return;
  detail::gelu_forward_kernel<T><<<seqswap::cuda::blocks_for(n, detail::kRowThreads), detail::kRowThreads, 0, s>>>(x, n, y);
  SEQSWAP_CUDA_LAUNCHED("gelu_forward_kernel");
}
template <class T>
void gelu_backward(const T* x, const T* dy, long long n, T* dx, cudaStream_t s = nullptr) {
  if (n == 0) return;
  detail::gelu_backward_kernel<T><<<seqswap::cuda::blocks_for(n, detail::kRowThreads), detail::kRowThreads, 0, s>>>(x, dy, n, dx);
  SEQSWAP_CUDA_LAUNCHED("gelu_backward_kernel");
}
// As train::cross_entropy, per row: loss (B, double) and correct (B) written on the device,
// dlogits ASSIGNED if non-null. Labels must already be checked (in [0, C)) on the host.
template <class T>
void cross_entropy(const T* logits, const std::int32_t* labels, long long B, long long C, double smoothing,
                   T* dlogits, double* loss, std::uint8_t* correct, cudaStream_t s = nullptr) {
  if (B == 0) return;
  detail::cross_entropy_kernel<T><<<seqswap::cuda::blocks_for(B, detail::kRowThreads), detail::kRowThreads, 0, s>>>(logits, labels, B, C, smoothing,
                                                                                        dlogits, loss, correct);
  SEQSWAP_CUDA_LAUNCHED("cross_entropy_kernel");
}
// One AdamW step over the arena with train::AdamW::next_step's coefficients; decay (n) the
// optimizer's decay_mask on the device, trainable (n) optional.
template <class T>
void adamw_step(T* p, const T* g, T* m, T* v, long long n, const std::uint8_t* decay, const std::uint8_t* trainable,
                const ops::rows::AdamWCoefs<T>& k, cudaStream_t s = nullptr) {
  if (n == 0) return;
  detail::adamw_kernel<T><<<seqswap::cuda::blocks_for(n, detail::kRowThreads), detail::kRowThreads, 0, s>>>(p, g, m, v, n, decay, trainable, k);
  SEQSWAP_CUDA_LAUNCHED("adamw_kernel");
}

}  // namespace seqswap::ops::cuda
