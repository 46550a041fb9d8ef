// The device ops that the layers call on backend::Cuda. They are only DECLARED here, with plain
// pointers and no CUDA types, so that a layer template can name them in its `if constexpr
// (backend::is_cuda<B>)` branch and still compile in a host translation unit. Their definitions
// are in ops/cuda/device_ops.cuh. A program gets them in one of two ways:
//   - a CUDA translation unit (nvcc) includes ops/cuda/device_ops.cuh and instantiates what it
//     uses, host code and kernels together;
//   - host code compiled by any C++ compiler (a driver, a test) links an object that
//     instantiates them once: zoo/device_instances.hpp lists every instantiation (the ops for
//     float, Buffer<T, backend::Cuda>, each layer functor's for_each), and an nvcc translation
//     unit that includes ops/cuda/device_ops.cuh and expands that list is the real backend
//     (examples/cuda/device_ops.cu); the same list over the tests' CPU emulation is its stand-in
//     (tests/device_emulation.cpp). Which one is chosen when the program is linked.
// A program that uses a layer on backend::Cuda with neither fails at link time, naming the op.
//
// Conventions: every pointer is a device pointer, except where a name says host_; each op is
// queued on the calling thread's device context (its stream and cuBLAS handle,
// seqswap::cuda::context() in ops/cuda/device_ops.cuh) and returns without waiting for the
// device. Each has a host op as its reference (named beside it) and the same contract:
// ASSIGNED and ACCUMULATED outputs as there.
#pragma once
#include <algorithm>
#include <cstdint>

#include "seqswap/core/backend.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/ops/flash_attention.hpp"
#include "seqswap/ops/rows.hpp"
#include "seqswap/ops/ssm_rows.hpp"

namespace seqswap::ops::device {

// The device itself (no layer calls these; drivers and tests do). Templates only so that their
// definitions can live in a header (ops/cuda/device_ops.cuh) and still be instantiated once.
// Whether a CUDA device can be used here (the device tests skip without one).
template <class = void>
bool available();
// Waits for every op queued on the calling thread's device context.
template <class = void>
void synchronize();
// The calling thread's linear maps on TF32 tensor cores (fp32 accumulate) or, the default, in
// fp32: a driver's option (--tf32).
template <class = void>
void set_tf32(bool on);

// ops::linear_forward / linear_backward (ops/gemm.hpp), through cuBLAS.
template <class T>
void linear_forward(const T* x, index_t rows, index_t in, const T* w, const T* b, index_t out, T* y);
template <class T>
void linear_backward(const T* x, index_t rows, index_t in, const T* w, index_t out, const T* dy, T* dx, T* dw,
                     T* db);
// ops::layer_norm_forward / layer_norm_backward (ops/layer_norm.hpp).
template <class T>
void layer_norm_forward(const T* x, index_t rows, index_t D, const T* gamma, const T* beta, T eps, T* y, T* mean,
                        T* rstd);
template <class T>
void layer_norm_backward(const T* x, index_t rows, index_t D, const T* gamma, const T* mean, const T* rstd,
                         const T* dy, T* dx, T* dgamma, T* dbeta);
// ops::gelu_forward / gelu_backward (ops/gelu.hpp); dx may be dy.
template <class T>
void gelu_forward(const T* x, index_t n, T* y);
template <class T>
void gelu_backward(const T* x, const T* dy, index_t n, T* dx);

// Token-row helpers (ops/mask.hpp and model/residual.hpp on the host). keep (rows) may be null:
// every row kept.
template <class T>
void residual_add(const T* x, const T* f, const std::uint8_t* keep, index_t rows, index_t D, T* y);  // y = x + keep ∘ f
template <class T>
void add_into(T* y, const T* x, index_t n);  // y += x
template <class T>
void add_kept_rows(T* y, const T* x, index_t rows, index_t D, const std::uint8_t* keep);  // y += keep ∘ x
template <class T>
void copy_kept_rows(const T* src, T* dst, index_t rows, index_t D, const std::uint8_t* keep);
template <class T>
void zero_masked_rows(T* y, index_t rows, index_t D, const std::uint8_t* keep);
template <class T>
void fill_zero(T* y, index_t n);
// packed (rows, D) <- full rows idx[0..rows); scatter: the reverse (ops/cuda/pack.cuh).
template <class T>
void gather_rows(const T* full, const index_t* idx, index_t rows, index_t D, T* packed);
template <class T>
void scatter_rows(const T* packed, const index_t* idx, index_t rows, index_t D, T* full);

// Embeddings (layers/patch_embed.hpp, layers/cls_pos_embed.hpp): images (B, C, S, S) <-> patch
// rows (B, P, C·p·p) in timm's (c, ky, kx) order; [cls; x_b] + pos and its backward (dcls, dpos
// ACCUMULATED over the batch in the host's order, dx ASSIGNED if non-null).
template <class T>
void patch_unfold(const T* img, index_t batch, index_t C, index_t S, index_t p, T* cols);
template <class T>
void patch_fold(const T* cols, index_t batch, index_t C, index_t S, index_t p, T* img);
template <class T>
void cls_pos_forward(const T* x, index_t batch, index_t P, index_t D, const T* cls, const T* pos, T* y);
template <class T>
void cls_pos_backward(const T* dy, index_t batch, index_t P, index_t D, T* dcls, T* dpos, T* dx);

// Streamed masked softmax attention (ops/flash_attention.hpp's row functions; its host executor
// is the reference): pre (rows, D) and stats (rows · heads); backward: dqkv (rows, 3D) ASSIGNED,
// delta (rows · heads) scratch.
template <class T>
void attention_forward(const flash::Problem<T>& p, index_t rows, T* pre, flash::RowStats<T>* stats);
template <class T>
void attention_backward(const flash::Problem<T>& p, index_t rows, const flash::RowStats<T>* stats, const T* pre,
                        const T* dpre, T* delta, T* dqkv);

// The linear-recurrence scan h_t = a_t h_(t-1) + b_t over a ragged (rows, C) batch and its
// backward (ops/scan.hpp; device offsets); float only (ops/cuda/scan.cuh).
template <class T>
void linear_scan(const T* a, const T* b, T* h, const index_t* offsets, index_t batch, index_t C, bool reverse);
template <class T>
void linear_scan_backward(const T* a, const T* h, const T* dh, T* da, T* db, const index_t* offsets, index_t batch,
                          index_t C, bool reverse);

// minGRU (mixers/min_gru.hpp): zh (rows, 2E) = [u | h̃] -> a, b (rows, E) (rows::min_gru_gate);
// backward: da, db -> dzh (rows, 2E) ASSIGNED. Directions combined into pre (rows, E or 2E):
// keep ∘ (h0 + h1) (h1 null: unidirectional) or keep ∘ [h0 | h1] (concat); dh (rows, E) <-
// columns off .. off+E of dpre (rows, width).
template <class T>
void min_gru_gates(const T* zh, const std::uint8_t* keep, index_t rows, index_t E, T* a, T* b);
template <class T>
void min_gru_gates_backward(const T* zh, const T* da, const T* db, const std::uint8_t* keep, index_t rows, index_t E,
                            T* dzh);
template <class T>
void combine_directions(const T* h0, const T* h1, const std::uint8_t* keep, index_t rows, index_t E, bool concat,
                        T* pre);
template <class T>
void copy_columns(const T* src, index_t rows, index_t width, index_t off, index_t E, T* dst);

// The selective SSM's scan (mixers/ssm_selective.hpp; its math in ops/ssm_rows.hpp, its host
// path the reference; its element-wise steps and the conv run through for_each below): y
// ASSIGNED (added to when accumulate), ckpt ASSIGNED; backward: g.du, g.ddtp ASSIGNED,
// dxdbl[:, R .. R+2S) ASSIGNED (dB, dC; leading dimension ld), gA_log and gD ACCUMULATED,
// g.part (groups(E), Tk, 2S) and g.pgrad (batch, E, S+1) scratch. Offsets are device arrays.
template <class T>
void ssm_scan_forward(const ssm::Scan<T>& a, T* y, bool accumulate, T* ckpt);
template <class T>
void ssm_scan_backward(const ssm::Scan<T>& a, const ssm::ScanGrads<T>& g, index_t rows, T* dxdbl, index_t ld,
                       index_t R, T* gA_log, T* gD);

// Any element-wise step: f(i) for every i < n, f a SEQSWAP_HD functor (ops/elementwise.hpp,
// ops/ssm_rows.hpp), one thread per element on the device; `what` names the step in an error.
template <class F>
void for_each(index_t n, const F& f, const char* what);

// A-ViT halting (model/halting.hpp): y += w ∘ t (w per row); out (rows, double) = row-wise dots
// of a and b; dt = act ? w·dout + carry + du on channel 0 : 0 (w, du, act per row).
template <class T>
void add_weighted_rows(T* y, const T* w, const T* t, index_t rows, index_t D);
template <class T>
void row_dots(const T* a, const T* b, index_t rows, index_t D, double* out);
template <class T>
void halting_grad(const T* w, const T* dout, const T* carry, const T* du, const std::uint8_t* act, index_t rows,
                  index_t D, T* dt);

// Training (train/loop.hpp, train/adamw.hpp): per-row loss and correctness written on the device.
template <class T>
void cross_entropy(const T* logits, const std::int32_t* labels, index_t B, index_t C, double smoothing, T* dlogits,
                   double* loss, std::uint8_t* correct);
template <class T>
void adamw_step(T* p, const T* g, T* m, T* v, index_t n, const std::uint8_t* decay, const std::uint8_t* trainable,
                const rows::AdamWCoefs<T>& k);

// Σ x² in double over n values, waited for and returned to the host (deterministic: fixed
// blocks, their partial sums added on the host in order); non-finite when any value is.
template <class T>
double sum_squares(const T* x, index_t n);
template <class T>
void scale(T* x, index_t n, T s);  // x *= s

// A layout's offsets (host) as a device array: `dev` (a Buffer<index_t, backend::Cuda>) is
// uploaded only when they differ from `shadow`, the host copy of what it holds (a steady-state
// step uploads nothing). Returns dev's pointer.
template <class DeviceBuffer>
const index_t* device_offsets(const index_t* host_offsets, index_t batch, DeviceBuffer& dev, Offsets& shadow) {
  const auto n = static_cast<std::size_t>(batch + 1);
  if (shadow.size() != n || dev.size() != n || !std::equal(host_offsets, host_offsets + n, shadow.begin())) {
    dev.upload(host_offsets, n);
    shadow.assign(host_offsets, host_offsets + n);
  }
  return dev.data();
}

}  // namespace seqswap::ops::device
