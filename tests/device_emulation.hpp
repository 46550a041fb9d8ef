// The CUDA backend emulated on the CPU, so that the layers' device paths run where there is no
// GPU: Buffer<T, backend::Cuda> is host memory with the device buffer's interface (upload,
// download, allocation count; fresh memory is filled with 0xFF bytes, NaN in floating point, so
// a read of something never written shows), and the device ops of ops/device.hpp are defined
// on the host:
//   - the element-wise ops run the very functors the kernels run (ops/elementwise.hpp);
//   - attention runs the streamed row functions through the flash host executor, the same
//     functions the attention kernels run (ops/flash_attention.hpp);
//   - layer norm, GELU, cross-entropy and AdamW run the row functions of ops/rows.hpp, as the
//     kernels of ops/cuda/rows.cuh do;
//   - the GEMMs, the scan and the row gather/scatter run their host ops.
// What this tests is every layer's backend::Cuda branch: which op it calls with which pointers,
// sizes and offsets, its contexts, the device offsets and permutations, the Runner's and the
// training loop's device paths. The kernels themselves are compared with the host ops by the
// cuda.* tests, on a GPU.
//
// Include it first, in a host translation unit that includes no real CUDA header.
#pragma once
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/elementwise.hpp"
#include "seqswap/ops/flash_attention.hpp"
#include "seqswap/ops/gemm.hpp"
#include "seqswap/ops/layer_norm.hpp"
#include "seqswap/ops/rows.hpp"
#include "seqswap/ops/scan.hpp"
#include "seqswap/ops/ssm_rows.hpp"

namespace seqswap {

// Buffer<T, backend::Cuda> (declared in core/buffer.hpp) in host memory.
template <class T>
Buffer<T, backend::Cuda>& Buffer<T, backend::Cuda>::operator=(const Buffer& o) {
  if (this != &o) {
    resize(o.n_);
    std::copy(o.p_, o.p_ + o.n_, p_);
  }
  return *this;
}
template <class T>
Buffer<T, backend::Cuda>::~Buffer() {
  delete[] p_;
}
template <class T>
void Buffer<T, backend::Cuda>::resize(std::size_t n) {
  if (n > cap_) {
    delete[] p_;
    p_ = nullptr;
    n_ = cap_ = 0;
    p_ = new T[n];
    std::memset(static_cast<void*>(p_), 0xFF, n * sizeof(T));  // "uninitialised device memory"
    cap_ = n;
    ++allocations_;
  }
  n_ = n;
}
template <class T>
void Buffer<T, backend::Cuda>::zero() {
  if (n_) std::memset(static_cast<void*>(p_), 0, n_ * sizeof(T));
}
template <class T>
void Buffer<T, backend::Cuda>::assign(std::size_t n, T value) {
  resize(n);
  std::fill(p_, p_ + n, value);
}
template <class T>
void Buffer<T, backend::Cuda>::upload(const T* host, std::size_t n) {
  resize(n);
  std::copy(host, host + n, p_);
}
template <class T>
void Buffer<T, backend::Cuda>::download(T* host, std::size_t n) const {
  check(n <= n_, "Buffer<T, backend::Cuda>::download: asked for ", n, " values, the buffer holds ", n_);
  std::copy(p_, p_ + n, host);
}
template <class T>
void Buffer<T, backend::Cuda>::upload_to(const T* host, T* device, std::size_t n) {
  std::copy(host, host + n, device);
}
template <class T>
void Buffer<T, backend::Cuda>::download_from(const T* device, T* host, std::size_t n) {
  std::copy(device, device + n, host);
}

}  // namespace seqswap

namespace seqswap::ops::device {

namespace emulated {
template <class F>
void for_each(long long n, const F& f) {
  for (long long i = 0; i < n; ++i) f(i);
}
}  // namespace emulated

template <class F>
void for_each(index_t n, const F& f, const char*) {
  emulated::for_each(n, f);
}

// The "device" is always there and never behind.
template <class>
bool available() {
  return true;
}
template <class>
void synchronize() {}
// --tf32 (ops/cuda/device_ops.cuh): the emulation computes in fp32 either way, so the choice
// has nothing to change here; tests/check_train_device.sh checks that the flag reaches the
// driver's device path through its banner.
template <class>
void set_tf32(bool) {}

template <class T>
void linear_forward(const T* x, index_t rows, index_t in, const T* w, const T* b, index_t out, T* y) {
  ops::linear_forward(x, rows, in, w, b, out, y);
}
template <class T>
void linear_backward(const T* x, index_t rows, index_t in, const T* w, index_t out, const T* dy, T* dx, T* dw, T* db) {
  ops::linear_backward(x, rows, in, w, out, dy, dx, dw, db);
}
template <class T>
void layer_norm_forward(const T* x, index_t rows, index_t D, const T* gamma, const T* beta, T eps, T* y, T* mean,
                        T* rstd) {
  ops::layer_norm_forward(x, rows, D, gamma, beta, eps, y, mean, rstd);
}
template <class T>
void layer_norm_backward(const T* x, index_t rows, index_t D, const T* gamma, const T* mean, const T* rstd,
                         const T* dy, T* dx, T* dgamma, T* dbeta) {
  ops::layer_norm_backward(x, rows, D, gamma, mean, rstd, dy, dx, dgamma, dbeta);
}
template <class T>
void gelu_forward(const T* x, index_t n, T* y) {
  emulated::for_each(n, [&](long long i) { y[i] = rows::gelu_value(x[i]); });
}
template <class T>
void gelu_backward(const T* x, const T* dy, index_t n, T* dx) {
  emulated::for_each(n, [&](long long i) { dx[i] = dy[i] * rows::gelu_grad(x[i]); });
}

template <class T>
void residual_add(const T* x, const T* f, const std::uint8_t* keep, index_t rows, index_t D, T* y) {
  emulated::for_each(rows * D, elementwise::ResidualAdd<T>{x, f, keep, D, y});
}
template <class T>
void add_into(T* y, const T* x, index_t n) {
  emulated::for_each(n, elementwise::AddKept<T>{y, x, nullptr, 1});
}
template <class T>
void add_kept_rows(T* y, const T* x, index_t rows, index_t D, const std::uint8_t* keep) {
  emulated::for_each(rows * D, elementwise::AddKept<T>{y, x, keep, D});
}
template <class T>
void copy_kept_rows(const T* src, T* dst, index_t rows, index_t D, const std::uint8_t* keep) {
  if (!keep && src == dst) return;
  emulated::for_each(rows * D, elementwise::CopyKept<T>{src, dst, keep, D});
}
template <class T>
void zero_masked_rows(T* y, index_t rows, index_t D, const std::uint8_t* keep) {
  if (keep) copy_kept_rows<T>(y, y, rows, D, keep);
}
template <class T>
void fill_zero(T* y, index_t n) {
  std::fill(y, y + n, T(0));
}
template <class T>
void gather_rows(const T* full, const index_t* idx, index_t rows, index_t D, T* packed) {
  for (index_t r = 0; r < rows; ++r) std::copy(full + idx[r] * D, full + (idx[r] + 1) * D, packed + r * D);
}
template <class T>
void scatter_rows(const T* packed, const index_t* idx, index_t rows, index_t D, T* full) {
  for (index_t r = 0; r < rows; ++r) std::copy(packed + r * D, packed + (r + 1) * D, full + idx[r] * D);
}
template <class T>
void patch_unfold(const T* img, index_t batch, index_t C, index_t S, index_t p, T* cols) {
  emulated::for_each(batch * C * S * S, elementwise::Unfold<T>{{C, S, p}, img, cols});
}
template <class T>
void patch_fold(const T* cols, index_t batch, index_t C, index_t S, index_t p, T* img) {
  emulated::for_each(batch * C * S * S, elementwise::Fold<T>{{C, S, p}, cols, img});
}
template <class T>
void cls_pos_forward(const T* x, index_t batch, index_t P, index_t D, const T* cls, const T* pos, T* y) {
  emulated::for_each(batch * (P + 1) * D, elementwise::ClsPosForward<T>{x, cls, pos, P, D, y});
}
template <class T>
void cls_pos_backward(const T* dy, index_t batch, index_t P, index_t D, T* dcls, T* dpos, T* dx) {
  emulated::for_each((P + 1) * D, elementwise::ClsPosParams<T>{dy, batch, P, D, dcls, dpos});
  if (dx) emulated::for_each(batch * P * D, elementwise::ClsPosDx<T>{dy, P, D, dx});
}
template <class T>
void attention_forward(const flash::Problem<T>& p, index_t, T* pre, flash::RowStats<T>* stats) {
  const char* why = flash::unsupported(p);
  check(*why == '\0', "flash_attention_forward: ", why, " (width ", p.dim, ", heads ", p.heads, ")");
  flash::forward_host(p, pre, stats);
}
template <class T>
void attention_backward(const flash::Problem<T>& p, index_t, const flash::RowStats<T>* stats, const T* pre,
                        const T* dpre, T* delta, T* dqkv) {
  flash::backward_host(p, stats, pre, dpre, delta, dqkv);
}
template <class T>
void linear_scan(const T* a, const T* b, T* h, const index_t* offsets, index_t batch, index_t C, bool reverse) {
  ops::linear_scan(a, b, h, offsets, batch, C, {.reverse = reverse});
}
template <class T>
void linear_scan_backward(const T* a, const T* h, const T* dh, T* da, T* db, const index_t* offsets, index_t batch,
                          index_t C, bool reverse) {
  ops::linear_scan_backward(a, h, dh, da, db, offsets, batch, C, {.reverse = reverse});
}
template <class T>
void min_gru_gates(const T* zh, const std::uint8_t* keep, index_t rows, index_t E, T* a, T* b) {
  emulated::for_each(rows * E, elementwise::MinGruGates<T>{zh, keep, E, a, b});
}
template <class T>
void min_gru_gates_backward(const T* zh, const T* da, const T* db, const std::uint8_t* keep, index_t rows, index_t E,
                            T* dzh) {
  emulated::for_each(rows * E, elementwise::MinGruGatesBackward<T>{zh, da, db, keep, E, dzh});
}
template <class T>
void combine_directions(const T* h0, const T* h1, const std::uint8_t* keep, index_t rows, index_t E, bool concat,
                        T* pre) {
  emulated::for_each(rows * E, elementwise::CombineDirections<T>{h0, h1, keep, E, concat, pre});
}
template <class T>
void copy_columns(const T* src, index_t rows, index_t width, index_t off, index_t E, T* dst) {
  emulated::for_each(rows * E, elementwise::CopyColumns<T>{src, width, off, E, dst});
}
// The scans: the kernels' item functions, with the kernels' choice of state-vector size; the
// backward's per-group dB, dC sums added channel by channel (a warp's shuffle tree on the GPU).
namespace emulated {
template <class T, class F>
void by_state_size(index_t S, F&& f) {
  if (S == 16) f.template operator()<16, true>();
  else if (S < 16) f.template operator()<16, false>();
  else f.template operator()<int(ssm::kDeviceMaxState), false>();
}
}  // namespace emulated
template <class T>
void ssm_scan_forward(const ssm::Scan<T>& a, T* y, bool accumulate, T* ckpt) {
  check(a.S > 0 && a.S <= ssm::kDeviceMaxState && a.chunk > 0 && a.chunk <= ssm::kDeviceChunk,
        "ssm_scan_forward (emulated): state ", a.S, ", chunk ", a.chunk, " out of range");
  emulated::by_state_size<T>(a.S, [&]<int kS, bool exact>() {
    for (index_t i = 0; i < a.batch * a.E; ++i) ssm::scan_forward_item<kS, exact>(a, i / a.E, i % a.E, y, accumulate, ckpt);
  });
}
template <class T>
void ssm_scan_backward(const ssm::Scan<T>& a, const ssm::ScanGrads<T>& g, index_t rows, T* dxdbl, index_t ld,
                       index_t R, T* gA_log, T* gD) {
  check(a.S > 0 && a.S <= ssm::kDeviceMaxState && a.chunk > 0 && a.chunk <= ssm::kDeviceChunk,
        "ssm_scan_backward (emulated): state ", a.S, ", chunk ", a.chunk, " out of range");
  const index_t groups = ssm::groups(a.E), S = a.S;
  std::fill(g.part, g.part + groups * rows * 2 * S, T(0));
  emulated::by_state_size<T>(a.S, [&]<int kS, bool exact>() {
    for (index_t b = 0; b < a.batch; ++b)
      for (index_t e = 0; e < a.E; ++e) {
        T* out = g.part + (e / ssm::kGroup) * rows * 2 * S;
        ssm::scan_backward_item<kS, exact>(a, g, b, e, true, [&](index_t t, const T* dB, const T* dC) {
          for (index_t j = 0; j < S; ++j) {
            out[t * 2 * S + j] += dB[j];
            out[t * 2 * S + S + j] += dC[j];
          }
        });
      }
  });
  emulated::for_each(rows * 2 * S, ssm::ReduceBC<T>{g.part, groups, rows, S, dxdbl, ld, R});
  emulated::for_each(a.E * (S + 1), ssm::SumOverSequences<T>{g.pgrad, a.batch, a.E, S, gA_log, gD});
}

template <class T>
void add_weighted_rows(T* y, const T* w, const T* t, index_t rows, index_t D) {
  emulated::for_each(rows * D, elementwise::AddWeightedRows<T>{y, w, t, D});
}
template <class T>
void row_dots(const T* a, const T* b, index_t rows, index_t D, double* out) {
  emulated::for_each(rows, elementwise::RowDots<T>{a, b, D, out});
}
template <class T>
void halting_grad(const T* w, const T* dout, const T* carry, const T* du, const std::uint8_t* act, index_t rows,
                  index_t D, T* dt) {
  emulated::for_each(rows * D, elementwise::HaltingGrad<T>{w, dout, carry, du, act, D, dt});
}

template <class T>
void cross_entropy(const T* logits, const std::int32_t* labels, index_t B, index_t C, double smoothing, T* dlogits,
                   double* loss, std::uint8_t* correct) {
  for (index_t b = 0; b < B; ++b) {
    const auto r = rows::cross_entropy_row(logits + b * C, C, labels[b], smoothing, B, dlogits ? dlogits + b * C : nullptr);
    loss[b] = r.loss;
    correct[b] = r.correct;
  }
}
template <class T>
void adamw_step(T* p, const T* g, T* m, T* v, index_t n, const std::uint8_t* decay, const std::uint8_t* trainable,
                const rows::AdamWCoefs<T>& k) {
  for (index_t i = 0; i < n; ++i)
    if (!trainable || trainable[i]) rows::adamw_element(p[i], g[i], m[i], v[i], decay[i] != 0, k);
}
template <class T>
double sum_squares(const T* x, index_t n) {
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}
template <class T>
void scale(T* x, index_t n, T s) {
  emulated::for_each(n, elementwise::Scale<T>{x, s});
}


}  // namespace seqswap::ops::device
