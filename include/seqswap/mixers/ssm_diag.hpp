// Diagonal state-space mixer (METHOD.md "Replacement modules", Diagonal SSM; S4D, Gu et al.
// 2022, "On the Parameterization and Initialization of Diagonal State Space Models"), real
// diagonal state of size N_s per channel c of u = in_proj(x):
//   x'_n = A_n x_n + B_n u,  A_n = -exp(A_log[c, n]),  Δ_c = exp(log_dt[c])
//   ZOH:  Ā = exp(Δ A),  B̄ = (Ā - 1) / A · B
//   h_t[c, n] = Ā[c, n] h_{t-1}[c, n] + B̄[c, n] u_t[c]
//   y_t[c] = Σ_n C[c, n] h_t[c, n] + D[c] u_t[c]
// a linear recurrence over the C = D·N_s channels (c, n), in a ScanOrder over the tokens.
// Bidirectional: a second kernel ("bwd_A_log", "bwd_B", "bwd_C", "bwd_log_dt") scans the same
// order reversed and its Σ_n C h is added; the skip D is shared. The mixer is linear in x
// (a convolution y = K * u + D u with K_k = Σ_n C Ā^k B̄): tests/test_mixer_ssm_diag.cpp checks
// the scan against that convolution form.
//
// Parameter layout: in_proj.weight [D, D], in_proj.bias [D], A_log [D, N_s], B [D, N_s],
// C [D, N_s], log_dt [D], D [D], (bwd_A_log, bwd_B, bwd_C [D, N_s], bwd_log_dt [D]),
// proj.weight [D, D], proj.bias [D].
//
// Initialisation (S4D-Real): A_log[c, n] = log(n + 1), log_dt uniform in
// [log dt_min, log dt_max], B = 1, C normal(c_std), D = 1. The first two are per-element
// rules, reported as Init::custom with a custom_init function that Model::init calls;
// init() writes the same values into a bare parameter slice (tests, standalone use).
//
// Forward and backward run the recurrence fused, per (block of 8 channels), sequentially over
// the tokens: Ā, B̄ are token-independent, so nothing but h is materialised. The sequential
// form is its own reference (tests check it against the convolution form). On backend::Cuda
// the recurrence runs through the device linear-recurrence scan over the D·N_s columns, with
// a, b materialised (see forward_device).
// Memory: the states h (rows, D·N_s) per direction are kept for backward.
//
// Masked tokens are identity steps (Ā -> 1, B̄ u -> 0); their pre-projection and output rows
// are zero.
//
// A composition (mixers/projected.hpp): DiagonalSsm<T> = Projected<Ordered<DiagonalSsmCore<T>>>,
// the output projection over the scan order over the recurrence below.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/mixers/ordered.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/mixers/scan_order.hpp"
#include "seqswap/ops/device.hpp"

namespace seqswap::mixers {

struct DiagonalSsmOptions {
  index_t dim = 0;
  index_t state = 16;          // N_s: state size per channel
  bool bidirectional = true;   // forward scan + the same scan reversed, separate kernels
  order::ScanOrder order{};    // which token the scan visits k-th
  std::string name = "attn";
  double dt_min = 1e-3;        // log_dt is initialised uniformly in [log dt_min, log dt_max]
  double dt_max = 1e-1;
  double c_std = 1.0;          // C ~ normal(0, c_std) (S4D's unit-variance C)
};

// The recurrence over tokens already in scan order: x (rows, D) -> pre (rows, D).
template <class T = float>
class DiagonalSsmCore {
 public:
  using scalar_type = T;
  using Options = DiagonalSsmOptions;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> in_ctx;
    Layout layout;                      // (rows, D) with the input's offsets
    Buffer<T, B> u;                        // (rows, D) in_proj output
    std::array<Buffer<T, B>, 2> abar, bbar, phi;  // (D, N_s) Ā, B̄, (Ā - 1)/A per direction
    std::array<Buffer<T, B>, 2> h;         // (rows, D·N_s) states per direction
    // backward scratch
    Buffer<T, B> du;                       // (rows, D)
    Buffer<T, B> scratch;                  // (threads, 3·8·N_s) backward: g, dĀ, dB̄ per block
    // backend::Cuda: the scan's inputs and gradients through the linear-recurrence scan
    std::array<Buffer<T, B>, 2> a;         // (rows, D·N_s) Ā or 1 (masked) per direction
    Buffer<T, B> b, dh, da, db;            // (rows, D·N_s)
    Buffer<T, B> dabar, dbbar;             // (D, N_s)
    Buffer<index_t, B> dev_offsets;        // the offsets on the device, uploaded when they change
    Offsets dev_offsets_of;
    const std::uint8_t* keep = nullptr;  // (rows); nullable
    const index_t* offsets = nullptr;    // (batch+1)
    index_t batch = 0;
  };

  DiagonalSsmCore() = default;
  explicit DiagonalSsmCore(DiagonalSsmOptions o) : o_(std::move(o)) {
    check(o_.dim > 0, "DiagonalSsm '", o_.name, "': expected dim > 0, found ", o_.dim);
    check(o_.state > 0, "DiagonalSsm '", o_.name, "': expected state > 0, found ", o_.state);
    check(o_.dt_min > 0 && o_.dt_min <= o_.dt_max, "DiagonalSsm '", o_.name,
          "': expected 0 < dt_min <= dt_max, found dt_min=", o_.dt_min, " dt_max=", o_.dt_max);
    in_proj_ = layers::Linear<T>({.in = o_.dim, .out = o_.dim, .bias = true, .name = "in_proj"});
  }
  const DiagonalSsmOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "diagonal_ssm"; }
  int directions() const { return o_.bidirectional ? 2 : 1; }
  index_t width() const { return o_.dim; }

  // D² + 2D + directions · D (3 N_s + 1)  (the projection, D² + D, is Projected's)
  std::size_t param_count() const {
    return skip_offset() + static_cast<std::size_t>(o_.dim) +
           static_cast<std::size_t>(directions() - 1) * kernel_count();
  }
  // in_proj per token; A, B, C are applied per token, channel and state (the scan).
  double flops(const Layout& in) const { return 2.0 * double(param_count()) * double(in.total()); }

  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    const index_t D = o_.dim, N = o_.state;
    const auto DN = static_cast<std::size_t>(D * N);
    in_proj_.visit_params(f, base, offset);
    for (int d = 0; d < directions(); ++d) {
      const std::string pre = d == 0 ? "" : "bwd_";
      const std::size_t k = offset + kernel_offset(d);
      // Per-element S4D-Real rules (see the header comment).
      ParamInfo a_log{join_name(base, pre + "A_log"), {D, N}, k, DN, false, Init::custom, 0.0};
      a_log.custom_init = [N](double* v, std::size_t n, Rng&) {  // S4D-Real: A_n = -(n + 1)
        for (std::size_t i = 0; i < n; ++i) v[i] = std::log(double(index_t(i) % N + 1));
      };
      f(std::move(a_log));
      f(ParamInfo{join_name(base, pre + "B"), {D, N}, k + DN, DN, false, Init::ones, 0.0});
      f(ParamInfo{join_name(base, pre + "C"), {D, N}, k + 2 * DN, DN, true, Init::normal,
                  o_.c_std});
      ParamInfo log_dt{join_name(base, pre + "log_dt"), {D}, k + 3 * DN, static_cast<std::size_t>(D),
                       false, Init::custom, 0.0};
      log_dt.custom_init = [lo = std::log(o_.dt_min), hi = std::log(o_.dt_max)](double* v, std::size_t n,
                                                                              Rng& rng) {
        for (std::size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * rng.uniform();  // log-uniform Δ
      };
      f(std::move(log_dt));
      if (d == 0)
        f(ParamInfo{join_name(base, "D"), {D}, offset + skip_offset(), static_cast<std::size_t>(D),
                    false, Init::ones, 0.0});
    }
  }

  // Writes the Init::custom tensors of this layer's slice p: A_log[c, n] = log(n + 1)
  // (S4D-Real, A = -(n + 1)) and log_dt uniform in [log dt_min, log dt_max], per direction.
  void init(ParamsView<T, backend::Host> p, Rng& rng) const {
    const index_t D = o_.dim, N = o_.state;
    const double lo = std::log(o_.dt_min), hi = std::log(o_.dt_max);
    for (int d = 0; d < directions(); ++d) {
      T* A_log = p.data + kernel_offset(d);  // (D, N_s)
      T* log_dt = A_log + 3 * D * N;         // (D)
      for (index_t c = 0; c < D; ++c)
        for (index_t n = 0; n < N; ++n) A_log[c * N + n] = T(std::log(double(n + 1)));
      for (index_t c = 0; c < D; ++c) log_dt[c] = T(lo + (hi - lo) * rng.uniform());
    }
  }

  // x (rows, D) -> pre (rows, D), both in scan order
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, rows = x.total();
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.layout = Layout{x.batch, D, {x.offsets, x.offsets + x.batch + 1}};
    // u = x W_inᵀ + b_in
    c.u.resize(static_cast<std::size_t>(rows * D));
    in_proj_.forward(in_params(p), x, view_of<T, B>(c.u.data(), c.layout), c.in_ctx);
    if constexpr (backend::is_cuda<B>)
      forward_device(p, x, pre, c);
    else
      forward_host(p, x, pre, c);
  }

  // dpre (rows, D), zero at masked rows (the gradient of pre = keep ∘ (...)) -> dx, g
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre_v, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(p, c, dpre_v.data, g);
    else
      backward_host(p, c, dpre_v.data, g);
    // u = x W_inᵀ + b_in: dx = du W_in. Masked rows of du are zero, so are dx's.
    in_proj_.backward(in_params(p), c.in_ctx, TokensView<const T, B>(view_of<T, B>(c.du.data(), c.layout)),
                      TokensView<T, B>{dx.data, c.offsets, c.batch, o_.dim, c.keep}, in_params(g));
  }

  template <class P>
  P in_params(P p) const { return p.sub(0, in_proj_.param_count()); }

 private:
  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, N = o_.state, DN = D * N, rows = x.total();
    T* pre_s = pre.data;                  // (rows, D)
    const std::uint8_t* keep = x.keep;    // (rows)
    const T* u = c.u.data();  // (rows, D)

    // pre_t[c] = keep_t (D[c] u_t[c] + Σ_dir Σ_n C[c, n] h_t[c, n])
    const T* skip = p.data + skip_offset();  // (D)
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      T* out = pre_s + t * D;
      if (keep && !keep[t])
        std::fill(out, out + D, T(0));
      else
        for (index_t ch = 0; ch < D; ++ch) out[ch] = skip[ch] * u[t * D + ch];
    }
    // The scan, fused: per (sequence, block of channels), sequential over the tokens, the
    // N_s states of a channel at once (h_t = Ā ∘ h_{t-1} + B̄ u_t[c], then Σ_n C h_t into
    // pre). Ā, B̄ are the same at every token, so no (rows, D·N_s) decays or inputs are
    // materialised; h is written once (backward needs it). Masked tokens: h_t = h_{t-1}.
    const index_t blocks = (D + kBlock - 1) / kBlock, items = x.batch * blocks;
    for (int d = 0; d < directions(); ++d) {
      discretise(p, d, c);
      c.h[d].resize(static_cast<std::size_t>(rows * DN));
      const T* abar = c.abar[d].data();                   // (D, N_s)
      const T* bbar = c.bbar[d].data();                   // (D, N_s)
      const T* C = p.data + kernel_offset(d) + 2 * DN;    // (D, N_s)
      T* h = c.h[d].data();                               // (rows, D·N_s)
      const bool rev = d == 1;
#pragma omp parallel for schedule(static) if (items > 1)
      for (index_t item = 0; item < items; ++item) {
        const index_t b = item / blocks, c0 = (item % blocks) * kBlock;
        const index_t c1 = std::min(D, c0 + kBlock), t0 = x.offsets[b], n = x.offsets[b + 1] - t0;
        const T* prev = nullptr;  // h_{t-1} of this block (nullptr: zero state)
        for (index_t k = 0; k < n; ++k) {
          const index_t t = t0 + (rev ? n - 1 - k : k);
          T* ht = h + t * DN;
          if (keep && !keep[t]) {  // identity step
            if (prev) std::copy(prev + c0 * N, prev + c1 * N, ht + c0 * N);
            else std::fill(ht + c0 * N, ht + c1 * N, T(0));
          } else {
            for (index_t ch = c0; ch < c1; ++ch) {
              const T uu = u[t * D + ch];
              Arr H(ht + ch * N, N);
              if (prev) H = CArr(abar + ch * N, N) * CArr(prev + ch * N, N) + uu * CArr(bbar + ch * N, N);
              else H = uu * CArr(bbar + ch * N, N);
              pre_s[t * D + ch] += (CArr(C + ch * N, N) * H).sum();
            }
          }
          prev = ht;
        }
      }
    }
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, const T* dpre, ParamsView<T, B> g) const {
    const index_t D = o_.dim, N = o_.state, DN = D * N, rows = c.layout.total();
    const std::uint8_t* keep = c.keep;
    const T* u = c.u.data();  // (rows, D)

    // pre = D ∘ u + ...:  du = D ∘ dpre,  dD += Σ_t dpre ∘ u  (masked rows of dpre are zero)
    const T* skip = p.data + skip_offset();
    T* dskip = g.data + skip_offset();
    c.du.resize(static_cast<std::size_t>(rows * D));
    T* du = c.du.data();  // (rows, D)
#pragma omp parallel for schedule(static) if (D > 1)
    for (index_t ch = 0; ch < D; ++ch) {
      T acc = 0;
      for (index_t t = 0; t < rows; ++t) {
        du[t * D + ch] = skip[ch] * dpre[t * D + ch];
        acc += dpre[t * D + ch] * u[t * D + ch];
      }
      dskip[ch] += acc;
    }

    // The scan's backward, fused like its forward: per block of channels (all sequences inside,
    // so the block's parameter gradients need no reduction), the opposite direction over the
    // tokens with g = dL/dh_t carried in a (block, N_s) scratch:
    //   g_t = C dpre_t[c] + Ā g_{t+1};  dC += dpre_t h_t;  dĀ += g_t h_{t-1};  dB̄ += g_t u_t;
    //   du_t[c] += Σ_n g_t B̄.  Masked tokens (h_t = h_{t-1}, no input) pass g through.
    const index_t blocks = (D + kBlock - 1) / kBlock, per_thread = 3 * kBlock * N;
    c.scratch.resize(static_cast<std::size_t>(host::max_threads() * per_thread));
    for (int d = 0; d < directions(); ++d) {
      const T* P = p.data + kernel_offset(d);
      const T* A_log = P;          // (D, N_s)
      const T* Bm = P + DN;        // (D, N_s)
      const T* C = P + 2 * DN;     // (D, N_s)
      T* G = g.data + kernel_offset(d);
      T* dA_log = G;               // (D, N_s)
      T* dB = G + DN;              // (D, N_s)
      T* dC = G + 2 * DN;          // (D, N_s)
      T* dlog_dt = G + 3 * DN;     // (D)
      const T* h = c.h[d].data();  // (rows, D·N_s)
      const T* abar = c.abar[d].data();
      const T* bbar = c.bbar[d].data();
      const T* phi = c.phi[d].data();
      const T* log_dt = P + 3 * DN;
      const bool rev = d == 1;
#pragma omp parallel for schedule(static) if (blocks > 1)
      for (index_t blk = 0; blk < blocks; ++blk) {
        const index_t c0 = blk * kBlock, c1 = std::min(D, c0 + kBlock), w = (c1 - c0) * N;
        T* gs = c.scratch.data() + host::thread_id() * per_thread;  // (w) g
        T* dabar = gs + kBlock * N;                                // (w) Σ_t g_t h_{t-1}
        T* dbbar = dabar + kBlock * N;                             // (w) Σ_t g_t u_t
        std::fill(dabar, dabar + 2 * kBlock * N, T(0));
        for (index_t b = 0; b < c.batch; ++b) {
          const index_t t0 = c.offsets[b], n = c.offsets[b + 1] - t0;
          std::fill(gs, gs + w, T(0));
          for (index_t k = n - 1; k >= 0; --k) {
            const index_t t = t0 + (rev ? n - 1 - k : k);
            if (keep && !keep[t]) continue;  // identity step: g_{t-1} = g_t
            const T* ht = h + t * DN;
            const T* hp = k > 0 ? h + (t0 + (rev ? n - k : k - 1)) * DN : nullptr;  // h_{t-1}
            for (index_t ch = c0; ch < c1; ++ch) {
              const index_t j = ch * N, l = (ch - c0) * N;
              const T dp = dpre[t * D + ch], uu = u[t * D + ch];
              Arr Gc(gs + l, N);
              Gc += dp * CArr(C + j, N);
              Arr(dC + j, N) += dp * CArr(ht + j, N);
              if (hp) Arr(dabar + l, N) += Gc * CArr(hp + j, N);
              Arr(dbbar + l, N) += uu * Gc;
              du[t * D + ch] += (Gc * CArr(bbar + j, N)).sum();
              Gc *= CArr(abar + j, N);
            }
          }
        }
        for (index_t ch = c0; ch < c1; ++ch) {
          const T dt = std::exp(log_dt[ch]);
          T ddt = 0;
          for (index_t nn = 0; nn < N; ++nn) {
            const index_t j = ch * N + nn, l = (ch - c0) * N + nn;
            const T A = -std::exp(A_log[j]);
            // B̄ = φ B with φ = (Ā - 1)/A = expm1(Δ A)/A
            dB[j] += dbbar[l] * phi[j];
            const T dphi = dbbar[l] * Bm[j];
            // Ā = exp(Δ A): ∂Ā/∂A = Δ Ā, ∂Ā/∂Δ = A Ā;  φ: ∂φ/∂A = (Δ Ā - φ)/A, ∂φ/∂Δ = Ā
            const T dA = dabar[l] * dt * abar[j] + dphi * (dt * abar[j] - phi[j]) / A;
            ddt += dabar[l] * A * abar[j] + dphi * abar[j];
            dA_log[j] += dA * A;  // A = -exp(A_log)
          }
          dlog_dt[ch] += ddt * dt;  // Δ = exp(log_dt)
        }
      }
    }
  }

  // The device path (backend::Cuda): Ā, B̄ per (channel, state), the recurrence through the
  // device linear-recurrence scan over the D·N_s columns (masked tokens: a = 1, b = 0), the
  // backward's sums as column reductions (ops/ssm_rows.hpp, the formulas of the host path).
  // It materialises a, b (rows, D·N_s) per direction, which the fused host path does not.
  template <class B>
  void forward_device(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, N = o_.state, DN = D * N, rows = x.total();
    const index_t* offsets = ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of);
    c.b.resize(static_cast<std::size_t>(rows * DN));
    for (int d = 0; d < directions(); ++d) {
      const T* P = p.data + kernel_offset(d);  // A_log, B, C (D, N_s), log_dt (D)
      c.abar[d].resize(static_cast<std::size_t>(DN));
      c.bbar[d].resize(static_cast<std::size_t>(DN));
      c.phi[d].resize(static_cast<std::size_t>(DN));
      c.a[d].resize(static_cast<std::size_t>(rows * DN));
      c.h[d].resize(static_cast<std::size_t>(rows * DN));
      ops::device::for_each(DN, ops::ssm::DiagDiscretise<T>{P, P + DN, P + 3 * DN, N, c.abar[d].data(), c.phi[d].data(),
                                                            c.bbar[d].data()}, "diagonal SSM: discretise");
      ops::device::for_each(rows * DN, ops::ssm::DiagInputs<T>{c.abar[d].data(), c.bbar[d].data(), c.u.data(), x.keep, D,
                                                               N, c.a[d].data(), c.b.data()}, "diagonal SSM: scan inputs");
      ops::device::linear_scan(c.a[d].data(), c.b.data(), c.h[d].data(), offsets, x.batch, DN, d == 1);
    }
    const bool two = directions() == 2;
    ops::device::for_each(rows * D,
                          ops::ssm::DiagOutput<T>{c.u.data(), p.data + skip_offset(), p.data + kernel_offset(0) + 2 * DN,
                                                  c.h[0].data(), two ? p.data + kernel_offset(1) + 2 * DN : nullptr,
                                                  two ? c.h[1].data() : nullptr, x.keep, D, N, pre.data},
                          "diagonal SSM: output");
  }

  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, const T* dpre, ParamsView<T, B> g) const {
    const index_t D = o_.dim, N = o_.state, DN = D * N, rows = c.layout.total();
    c.du.resize(static_cast<std::size_t>(rows * D));
    c.dh.resize(static_cast<std::size_t>(rows * DN));
    c.da.resize(static_cast<std::size_t>(rows * DN));
    c.db.resize(static_cast<std::size_t>(rows * DN));
    c.dabar.resize(static_cast<std::size_t>(DN));
    c.dbbar.resize(static_cast<std::size_t>(DN));
    ops::device::for_each(D, ops::ssm::DiagSkipBackward<T>{dpre, c.u.data(), p.data + skip_offset(), rows, D, c.du.data(),
                                                           g.data + skip_offset()}, "diagonal SSM: skip backward");
    for (int d = 0; d < directions(); ++d) {
      const T* P = p.data + kernel_offset(d);  // A_log, B, C, log_dt
      T* G = g.data + kernel_offset(d);
      ops::device::for_each(rows * DN, ops::ssm::DiagStateGrad<T>{dpre, P + 2 * DN, D, N, c.dh.data()},
                            "diagonal SSM: state gradient");
      ops::device::linear_scan_backward(c.a[d].data(), c.h[d].data(), c.dh.data(), c.da.data(), c.db.data(),
                                        c.dev_offsets.data(), c.batch, DN, d == 1);
      ops::device::for_each(DN, ops::ssm::DiagParamSums<T>{c.da.data(), c.db.data(), c.h[d].data(), dpre, c.u.data(),
                                                           c.keep, rows, D, N, G + 2 * DN, c.dabar.data(),
                                                           c.dbbar.data()}, "diagonal SSM: parameter sums");
      ops::device::for_each(rows * D, ops::ssm::DiagInputGrad<T>{c.db.data(), c.bbar[d].data(), c.keep, D, N, c.du.data()},
                            "diagonal SSM: input gradient");
      ops::device::for_each(D,
                            ops::ssm::DiagDiscretiseBackward<T>{P, P + DN, P + 3 * DN, c.abar[d].data(), c.phi[d].data(),
                                                                c.dabar.data(), c.dbbar.data(), N, G, G + DN, G + 3 * DN},
                            "diagonal SSM: discretisation backward");
    }
  }

  // One direction's A_log, B, C, log_dt: 3 D N_s + D values.
  std::size_t kernel_count() const {
    return static_cast<std::size_t>(o_.dim * (3 * o_.state + 1));
  }
  std::size_t skip_offset() const { return in_proj_.param_count() + kernel_count(); }
  // The forward kernel sits before the skip D, the backward one after it.
  std::size_t kernel_offset(int d) const {
    return d == 0 ? in_proj_.param_count() : skip_offset() + static_cast<std::size_t>(o_.dim);
  }

  // Ā = exp(Δ A), φ = (Ā - 1)/A (as expm1(Δ A)/A: no cancellation for small Δ A), B̄ = φ B.
  template <class B>
  void discretise(ParamsView<const T, B> p, int d, Ctx<B>& c) const {
    const index_t D = o_.dim, N = o_.state, DN = D * N;
    const T* A_log = p.data + kernel_offset(d);
    const T* Bm = A_log + DN;
    const T* log_dt = A_log + 3 * DN;
    c.abar[d].resize(static_cast<std::size_t>(DN));
    c.bbar[d].resize(static_cast<std::size_t>(DN));
    c.phi[d].resize(static_cast<std::size_t>(DN));
    for (index_t ch = 0; ch < D; ++ch) {
      const T dt = std::exp(log_dt[ch]);
      for (index_t n = 0; n < N; ++n) {
        const index_t j = ch * N + n;
        const T A = -std::exp(A_log[j]);
        c.abar[d][j] = std::exp(dt * A);
        c.phi[d][j] = std::expm1(dt * A) / A;
        c.bbar[d][j] = c.phi[d][j] * Bm[j];
      }
    }
  }
  using Arr = host::ArrMap<T>;
  using CArr = host::CArrMap<T>;
  // Channels per work item of the fused scans: 8·N_s contiguous states per token row.
  static constexpr index_t kBlock = 8;

  DiagonalSsmOptions o_;
  layers::Linear<T> in_proj_;
};

static_assert(MixerCore<DiagonalSsmCore<double>>);

template <class T = float>
using DiagonalSsm = Projected<Ordered<DiagonalSsmCore<T>>>;

static_assert(Mixer<DiagonalSsm<float>, backend::Host>);
static_assert(Mixer<DiagonalSsm<double>, backend::Host>);

}  // namespace seqswap::mixers
