// The definitions of ops/device.hpp's device ops (nvcc only), and the device context they run on.
// A CUDA translation unit that runs layers on backend::Cuda includes this header (once is
// enough; the order among the seqswap headers does not matter).
//
// The device context: one stream and one cuBLAS handle per host thread, made on the thread's
// first device op and kept for the life of the process (deliberately never destroyed: a handle
// destroyed after the CUDA runtime has shut down at exit is an error). The stream is a blocking
// one (cudaStreamDefault), so it is ordered with the legacy default stream on which
// Buffer<T, backend::Cuda> uploads, downloads and clears: a download after a forward sees the
// forward's results, and an upload never overwrites memory a queued kernel still reads.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <cstdint>
#include <vector>

#include "seqswap/backend/cuda.hpp"
#include "seqswap/ops/cuda/attention.cuh"
#include "seqswap/ops/cuda/gemm.cuh"
#include "seqswap/ops/cuda/pack.cuh"
#include "seqswap/ops/cuda/rows.cuh"
#include "seqswap/ops/cuda/scan.cuh"
#include "seqswap/ops/cuda/ssm.cuh"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/elementwise.hpp"
#include "seqswap/ops/ssm_rows.hpp"

namespace seqswap::cuda {

class Context {
 public:
  Context() : stream_(cudaStreamDefault), blas_(stream_.get()) {}
  cudaStream_t stream() const { return stream_.get(); }
  Blas& blas() { return blas_; }
  void sync() const { stream_.sync(); }

 private:
  Stream stream_;
  Blas blas_;
};

// The calling thread's device context.
inline Context& context() {
  thread_local Context* c = new Context();
  return *c;
}

}  // namespace seqswap::cuda

namespace seqswap::ops::device {

namespace detail {
constexpr int kThreads = 256;

// One thread per element i < n: f(i).
template <class F>
__global__ void for_each_kernel(long long n, F f) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) f(i);
}
template <class F>
void for_each(long long n, const F& f, const char* what) {
  if (n <= 0) return;
  for_each_kernel<F><<<seqswap::cuda::blocks_for(n, kThreads), kThreads, 0, seqswap::cuda::context().stream()>>>(n, f);
  ::seqswap::cuda::check_call(cudaGetLastError(), what, __FILE__, __LINE__);
}
}  // namespace detail

template <class F>
void for_each(index_t n, const F& f, const char* what) {
  detail::for_each(n, f, what);
}

template <class>
bool available() {
  return seqswap::cuda::device_available();
}
template <class>
void synchronize() {
  seqswap::cuda::context().sync();
}
template <class>
void set_tf32(bool on) {
  seqswap::cuda::context().blas().allow_tf32(on);
}

template <class T>
void linear_forward(const T* x, index_t rows, index_t in, const T* w, const T* b, index_t out, T* y) {
  ops::cuda::linear_forward(seqswap::cuda::context().blas(), x, rows, in, w, b, out, y);
}
template <class T>
void linear_backward(const T* x, index_t rows, index_t in, const T* w, index_t out, const T* dy, T* dx, T* dw,
                     T* db) {
  ops::cuda::linear_backward(seqswap::cuda::context().blas(), x, rows, in, w, out, dy, dx, dw, db);
}
template <class T>
void layer_norm_forward(const T* x, index_t rows, index_t D, const T* gamma, const T* beta, T eps, T* y, T* mean,
                        T* rstd) {
  ops::cuda::layer_norm_forward(x, rows, D, gamma, beta, eps, y, mean, rstd, seqswap::cuda::context().stream());
}
template <class T>
void layer_norm_backward(const T* x, index_t rows, index_t D, const T* gamma, const T* mean, const T* rstd,
                         const T* dy, T* dx, T* dgamma, T* dbeta) {
  ops::cuda::layer_norm_backward(x, rows, D, gamma, mean, rstd, dy, dx, dgamma, dbeta, seqswap::cuda::context().stream());
}
template <class T>
void gelu_forward(const T* x, index_t n, T* y) {
  ops::cuda::gelu_forward(x, n, y, seqswap::cuda::context().stream());
}
template <class T>
void gelu_backward(const T* x, const T* dy, index_t n, T* dx) {
  ops::cuda::gelu_backward(x, dy, n, dx, seqswap::cuda::context().stream());
}

template <class T>
void residual_add(const T* x, const T* f, const std::uint8_t* keep, index_t rows, index_t D, T* y) {
  detail::for_each(rows * D, elementwise::ResidualAdd<T>{x, f, keep, D, y}, "residual_add");
}
template <class T>
void add_into(T* y, const T* x, index_t n) {
  detail::for_each(n, elementwise::AddKept<T>{y, x, nullptr, 1}, "add_into");
}
template <class T>
void add_kept_rows(T* y, const T* x, index_t rows, index_t D, const std::uint8_t* keep) {
  detail::for_each(rows * D, elementwise::AddKept<T>{y, x, keep, D}, "add_kept_rows");
}
template <class T>
void copy_kept_rows(const T* src, T* dst, index_t rows, index_t D, const std::uint8_t* keep) {
  if (!keep && src == dst) return;
  detail::for_each(rows * D, elementwise::CopyKept<T>{src, dst, keep, D}, "copy_kept_rows");
}
template <class T>
void zero_masked_rows(T* y, index_t rows, index_t D, const std::uint8_t* keep) {
  if (keep) copy_kept_rows<T>(y, y, rows, D, keep);
}
template <class T>
void fill_zero(T* y, index_t n) {
  if (n > 0) SEQSWAP_CUDA_CHECK(cudaMemsetAsync(y, 0, std::size_t(n) * sizeof(T), seqswap::cuda::context().stream()));
}
template <class T>
void gather_rows(const T* full, const index_t* idx, index_t rows, index_t D, T* packed) {
  ops::cuda::gather_rows(full, idx, rows, D, packed, seqswap::cuda::context().stream());
}
template <class T>
void scatter_rows(const T* packed, const index_t* idx, index_t rows, index_t D, T* full) {
  ops::cuda::scatter_rows(packed, idx, rows, D, full, seqswap::cuda::context().stream());
}

template <class T>
void patch_unfold(const T* img, index_t batch, index_t C, index_t S, index_t p, T* cols) {
  detail::for_each(batch * C * S * S, elementwise::Unfold<T>{{C, S, p}, img, cols}, "patch_unfold");
}
template <class T>
void patch_fold(const T* cols, index_t batch, index_t C, index_t S, index_t p, T* img) {
  detail::for_each(batch * C * S * S, elementwise::Fold<T>{{C, S, p}, cols, img}, "patch_fold");
}
template <class T>
void cls_pos_forward(const T* x, index_t batch, index_t P, index_t D, const T* cls, const T* pos, T* y) {
  detail::for_each(batch * (P + 1) * D, elementwise::ClsPosForward<T>{x, cls, pos, P, D, y}, "cls_pos_forward");
}
template <class T>
void cls_pos_backward(const T* dy, index_t batch, index_t P, index_t D, T* dcls, T* dpos, T* dx) {
  detail::for_each((P + 1) * D, elementwise::ClsPosParams<T>{dy, batch, P, D, dcls, dpos}, "cls_pos_backward (parameters)");
  if (dx) detail::for_each(batch * P * D, elementwise::ClsPosDx<T>{dy, P, D, dx}, "cls_pos_backward (dx)");
}

template <class T>
void attention_forward(const flash::Problem<T>& p, index_t rows, T* pre, flash::RowStats<T>* stats) {
  ops::cuda::flash_attention_forward(p, rows, pre, stats, seqswap::cuda::context().stream());
}
template <class T>
void attention_backward(const flash::Problem<T>& p, index_t rows, const flash::RowStats<T>* stats, const T* pre,
                        const T* dpre, T* delta, T* dqkv) {
  ops::cuda::flash_attention_backward(p, rows, stats, pre, dpre, delta, dqkv, seqswap::cuda::context().stream());
}

template <class T>
void linear_scan(const T* a, const T* b, T* h, const index_t* offsets, index_t batch, index_t C, bool reverse) {
  static_assert(std::is_same_v<T, float>, "the device scan is float only (ops/cuda/scan.cuh)");
  ops::cuda::linear_scan(a, b, h, offsets, int(batch), int(C), reverse, seqswap::cuda::context().stream());
}
template <class T>
void linear_scan_backward(const T* a, const T* h, const T* dh, T* da, T* db, const index_t* offsets, index_t batch,
                          index_t C, bool reverse) {
  static_assert(std::is_same_v<T, float>, "the device scan is float only (ops/cuda/scan.cuh)");
  ops::cuda::linear_scan_backward(a, h, dh, da, db, offsets, int(batch), int(C), reverse,
                                  seqswap::cuda::context().stream());
}


template <class T>
void min_gru_gates(const T* zh, const std::uint8_t* keep, index_t rows, index_t E, T* a, T* b) {
  detail::for_each(rows * E, elementwise::MinGruGates<T>{zh, keep, E, a, b}, "min_gru_gates");
}
template <class T>
void min_gru_gates_backward(const T* zh, const T* da, const T* db, const std::uint8_t* keep, index_t rows, index_t E,
                            T* dzh) {
  detail::for_each(rows * E, elementwise::MinGruGatesBackward<T>{zh, da, db, keep, E, dzh}, "min_gru_gates_backward");
}
template <class T>
void combine_directions(const T* h0, const T* h1, const std::uint8_t* keep, index_t rows, index_t E, bool concat,
                        T* pre) {
  detail::for_each(rows * E, elementwise::CombineDirections<T>{h0, h1, keep, E, concat, pre}, "combine_directions");
}
template <class T>
void copy_columns(const T* src, index_t rows, index_t width, index_t off, index_t E, T* dst) {
  detail::for_each(rows * E, elementwise::CopyColumns<T>{src, width, off, E, dst}, "copy_columns");
}

template <class T>
void ssm_scan_forward(const ssm::Scan<T>& a, T* y, bool accumulate, T* ckpt) {
  ops::cuda::ssm_scan_forward(a, y, accumulate, ckpt, seqswap::cuda::context().stream());
}
template <class T>
void ssm_scan_backward(const ssm::Scan<T>& a, const ssm::ScanGrads<T>& g, index_t rows, T* dxdbl, index_t ld,
                       index_t R, T* gA_log, T* gD) {
  ops::cuda::ssm_scan_backward_items(a, g, rows, seqswap::cuda::context().stream());
  detail::for_each(rows * 2 * a.S, ssm::ReduceBC<T>{g.part, ssm::groups(a.E), rows, a.S, dxdbl, ld, R}, "ssm_scan_backward (dB, dC)");
  detail::for_each(a.E * (a.S + 1), ssm::SumOverSequences<T>{g.pgrad, a.batch, a.E, a.S, gA_log, gD},
                   "ssm_scan_backward (dA_log, dD)");
}

template <class T>
void add_weighted_rows(T* y, const T* w, const T* t, index_t rows, index_t D) {
  detail::for_each(rows * D, elementwise::AddWeightedRows<T>{y, w, t, D}, "add_weighted_rows");
}
template <class T>
void row_dots(const T* a, const T* b, index_t rows, index_t D, double* out) {
  detail::for_each(rows, elementwise::RowDots<T>{a, b, D, out}, "row_dots");
}
template <class T>
void halting_grad(const T* w, const T* dout, const T* carry, const T* du, const std::uint8_t* act, index_t rows,
                  index_t D, T* dt) {
  detail::for_each(rows * D, elementwise::HaltingGrad<T>{w, dout, carry, du, act, D, dt}, "halting_grad");
}

template <class T>
void cross_entropy(const T* logits, const std::int32_t* labels, index_t B, index_t C, double smoothing, T* dlogits,
                   double* loss, std::uint8_t* correct) {
  ops::cuda::cross_entropy(logits, labels, B, C, smoothing, dlogits, loss, correct, seqswap::cuda::context().stream());
}
template <class T>
void adamw_step(T* p, const T* g, T* m, T* v, index_t n, const std::uint8_t* decay, const std::uint8_t* trainable,
                const rows::AdamWCoefs<T>& k) {
  ops::cuda::adamw_step(p, g, m, v, n, decay, trainable, k, seqswap::cuda::context().stream());
}

namespace detail {
constexpr int kReduceBlocks = 240, kReduceThreads = 256;
template <class T>
__global__ void sum_squares_kernel(const T* x, long long n, double* partial) {
  __shared__ double s[kReduceThreads];
  double acc = 0;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    acc += double(x[i]) * double(x[i]);
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kReduceThreads / 2; w > 0; w /= 2) {
    if (int(threadIdx.x) < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}
}  // namespace detail

template <class T>
double sum_squares(const T* x, index_t n) {
  if (n <= 0) return 0.0;
  thread_local Buffer<double, backend::Cuda> partial;
  thread_local std::vector<double> host;
  partial.resize(detail::kReduceBlocks);
  host.resize(detail::kReduceBlocks);
  detail::sum_squares_kernel<T><<<detail::kReduceBlocks, detail::kReduceThreads, 0, seqswap::cuda::context().stream()>>>(
      x, n, partial.data());
  SEQSWAP_CUDA_LAUNCHED("sum_squares_kernel");
  partial.download(host.data(), host.size());
  double sum = 0;
  for (double v : host) sum += v;
  return sum;
}
template <class T>
void scale(T* x, index_t n, T s) {
  detail::for_each(n, elementwise::Scale<T>{x, s}, "scale");
}

}  // namespace seqswap::ops::device
