// Multi-head bidirectional RNN mixer: FAR's replacement module (METHOD.md, "Replacement
// modules": GRU / LSTM, sequential in N), with an LSTM or a GRU cell.
//
//   u   = x W_inᵀ + b_in                              (T, D)      "in_proj"
//   per head h (width d = D/H) and direction r ∈ {fwd, bwd}: a cell of width d over u's head
//   columns, visiting the tokens in scan order (fwd) or in reverse (bwd); every head and
//   direction has its own weights (a block-diagonal RNN)
//   s   = concat_h [h_fwd | h_bwd]                    (T, dirs·D)  per head, fwd first
//   pre = s W_mergeᵀ + b_merge                        (T, D)      "merge"
//   y   = pre W_projᵀ + b_proj                        (T, D)      "proj"
//
// FAR's module ends at `merge`; seqswap adds `proj` (every mixer ends with one) so that the
// teacher's attention projection is reused by name. The pre-projection output is `merge`'s.
// Cells follow torch.nn.LSTM / torch.nn.GRU exactly (gate order and both bias vectors):
//   LSTM: [i f g o] = W_ih x + b_ih + W_hh h + b_hh;  c' = σ(f) c + σ(i) tanh(g);
//         h' = σ(o) tanh(c')
//   GRU:  [r z] = σ(W_ih x + b_ih + W_hh h + b_hh) (first 2d rows);
//         n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn));  h' = (1 - z) n + z h
// Both are bounded (σ, tanh), so any N is stable. A masked token is an identity step (the
// state passes through unchanged); its rows of pre and y are exactly zero, so a masked dense
// batch equals the packed batch of its kept tokens (stored scan order).
//
// Backends: on the host, one Eigen GEMM per head and direction for the input side of the gates
// and a thread per (sequence, head, direction) for the recurrence (vectorised gates). On
// backend::Cuda, in_proj and merge go through the device linear ops and everything between
// through the functors of ops/rnn_rows.hpp (the recurrence one thread per (sequence, head,
// direction)), with the host path as their reference (tests/device_model_checks.hpp).
#pragma once
#include "seqswap/ops/mask.hpp"
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/mixers/ordered.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/mixers/scan_order.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/rnn_rows.hpp"

namespace seqswap::mixers {

namespace cell {
struct Lstm {};  // torch.nn.LSTM: gates i, f, g, o
struct Gru {};   // torch.nn.GRU: gates r, z, n
}  // namespace cell

template <class Cell>
struct RnnCellTraits {
  static_assert(dependent_false<Cell>,
                "MultiHeadRnn: unknown cell; use seqswap::mixers::cell::Lstm or cell::Gru");
};
template <>
struct RnnCellTraits<cell::Lstm> {
  static constexpr index_t kGates = 4;  // i, f, g, o
  static constexpr index_t kSaved = 5;  // per step: σ(i), σ(f), tanh(g), σ(o), c
  static constexpr const char* kind_name = "multi_head_lstm";
};
template <>
struct RnnCellTraits<cell::Gru> {
  static constexpr index_t kGates = 3;  // r, z, n
  static constexpr index_t kSaved = 4;  // per step: r, z, n, W_hn h + b_hn
  static constexpr const char* kind_name = "multi_head_gru";
};

struct RnnOptions {
  index_t dim = 0;
  index_t heads = 1;
  bool bidirectional = true;
  order::ScanOrder order{};  // which token the fwd direction visits k-th
  std::string name = "attn";
};

// The recurrence over tokens already in scan order: x (T, D) -> pre (T, D).
template <class T = float, class Cell = cell::Lstm>
class MultiHeadRnnCore {
  using Traits = RnnCellTraits<Cell>;
  static_assert(sizeof(Traits) > 0);
  static constexpr bool kLstm = std::is_same_v<Cell, cell::Lstm>;
  static constexpr index_t kG = Traits::kGates;
  static constexpr index_t kS = Traits::kSaved;

 public:
  using scalar_type = T;
  using Options = RnnOptions;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> in_ctx, merge_ctx;
    Layout layout, state_layout;        // (T, D) and (T, dirs·D) with the input's offsets
    const std::uint8_t* keep_s_ptr = nullptr;  // (T) keep; nullable
    Buffer<T, B> u;       // (T, D) in_proj output
    Buffer<T, B> saved;   // (H, dirs, T, kS·d) per-step cell values
    Buffer<T, B> s;       // (T, dirs·D) hidden states [t][h][r][0..d)
    Buffer<T, B> zeros;   // (d) the initial state h_{-1} = c_{-1} = 0
    Buffer<T, B> scratch;  // (threads, (kG + 2)·d) per-thread step vectors
    // backward
    Buffer<T, B> ds, dgi, dgh, du;
    // backend::Cuda: the offsets on the device (uploaded when they change)
    Buffer<index_t, B> dev_offsets;
    Offsets dev_offsets_of;
  };

  MultiHeadRnnCore() = default;
  explicit MultiHeadRnnCore(RnnOptions o) : o_(std::move(o)) {
    check(o_.heads > 0 && o_.dim > 0 && o_.dim % o_.heads == 0, "MultiHeadRnn '", o_.name,
          "': expected a positive width divisible by heads, found width ", o_.dim, " and ",
          o_.heads, " heads");
    const index_t D = o_.dim;
    in_proj_ = layers::Linear<T>({.in = D, .out = D, .bias = true, .name = "in_proj"});
    merge_ = layers::Linear<T>({.in = dirs() * D, .out = D, .bias = true, .name = "merge"});
  }
  const RnnOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return Traits::kind_name; }

  index_t width() const { return o_.dim; }
  // in_proj + dirs · H (W_ih, W_hh [kG·d, d]; b_ih, b_hh [kG·d]) + merge  (proj is Projected's)
  std::size_t param_count() const {
    return in_proj_.param_count() + static_cast<std::size_t>(dirs()) * cell_dir_count() + merge_.param_count();
  }
  // Every weight (input and recurrent) is applied once per token; gates are not counted.
  double flops(const Layout& in) const { return 2.0 * double(param_count()) * double(in.total()); }

  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    const index_t H = o_.heads, d = head_dim();
    const double bound = 1.0 / std::sqrt(double(d));  // torch's RNN init: U(-1/√d, 1/√d)
    in_proj_.visit_params(f, base, offset);
    for (index_t r = 0; r < dirs(); ++r) {
      const std::string dir = join_name(base, r == 0 ? "fwd" : "bwd");
      const std::size_t o0 = offset + cell_offset(r);
      const auto w = static_cast<std::size_t>(H * kG * d * d), b = static_cast<std::size_t>(H * kG * d);
      f(ParamInfo{join_name(dir, "weight_ih"), {H, kG * d, d}, o0, w, true, Init::uniform, bound});
      f(ParamInfo{join_name(dir, "weight_hh"), {H, kG * d, d}, o0 + w, w, true, Init::uniform, bound});
      f(ParamInfo{join_name(dir, "bias_ih"), {H, kG * d}, o0 + 2 * w, b, false, Init::uniform, bound});
      f(ParamInfo{join_name(dir, "bias_hh"), {H, kG * d}, o0 + 2 * w + b, b, false, Init::uniform,
                  bound});
    }
    merge_.visit_params(f, base, offset + merge_offset());
  }

  // x (T, D) -> pre (T, D), both in scan order
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    if constexpr (backend::is_cuda<B>)
      forward_device(p, x, pre, c);
    else
      forward_host(p, x, pre, c);
  }

  // dpre (T, D), zero at masked rows -> dx, g
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(p, c, dpre, dx, g);
    else
      backward_host(p, c, dpre, dx, g);
  }

  template <class P>
  P in_params(P p) const { return p.sub(0, in_proj_.param_count()); }
  template <class P>
  P merge_params(P p) const { return p.sub(merge_offset(), merge_.param_count()); }

 private:
  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    SEQSWAP_HOST_ONLY(B, "mixers/rnn.hpp (host path)");
    const index_t D = o_.dim, H = o_.heads, d = head_dim(), R = dirs(), rows = x.total();
    c.layout = Layout{x.batch, D, {x.offsets, x.offsets + x.batch + 1}};
    c.state_layout = Layout{x.batch, R * D, c.layout.offsets};
    const T* xs = x.data;  // (T, D)
    const std::uint8_t* ks = x.keep;
    c.keep_s_ptr = ks;
    c.zeros.assign(static_cast<std::size_t>(d), T(0));
    c.scratch.resize(static_cast<std::size_t>(host::max_threads() * (kG + 2) * d));
    c.u.resize(static_cast<std::size_t>(rows * D));
    c.saved.resize(static_cast<std::size_t>(H * R * rows * kS * d));
    c.s.resize(static_cast<std::size_t>(rows * R * D));

    in_proj_.forward(in_params(p), TokensView<const T, B>{xs, x.offsets, x.batch, D, ks},
                     view_of<T, B>(c.u.data(), c.layout), c.in_ctx);

    // The input side of every gate for all tokens at once: one GEMM per head and direction.
#pragma omp parallel for schedule(static) if (H * R > 1)
    for (index_t hr = 0; hr < H * R; ++hr) {
      const index_t h = hr / R, r = hr % R;
      host::CStridedMap<T> U(c.u.data() + h * d, rows, d, Eigen::OuterStride<>(D));  // (T, d)
      host::StridedMap<T> A(saved_of(c, hr, rows), rows, kG * d,
                            Eigen::OuterStride<>(kS * d));  // (T, kG·d)
      host::CMatMap<T> Wih(w_ih(p, r, h), kG * d, d);       // (kG·d, d)
      A.noalias() = U * Wih.transpose();
      A.rowwise() += host::CVecMap<T>(b_ih(p, r, h), kG * d);
      // LSTM: both biases sit outside every nonlinearity; GRU's b_hn is inside r ⊙ (·)
      if constexpr (kLstm) A.rowwise() += host::CVecMap<T>(b_hh(p, r, h), kG * d);
    }

    // The recurrences: sequential in N, independent across sequences, heads and directions.
    const index_t tasks = x.batch * H * R;
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(tasks)) if (tasks > 1)
    for (index_t task = 0; task < tasks; ++task) {
      const index_t b = task / (H * R), hr = task % (H * R);
      const index_t t0 = x.offsets[b], n = x.offsets[b + 1] - t0;
      if (n > 0) sequence_forward(p, c, ks, hr, t0, n, rows);
    }

    // pre = keep ∘ merge(s)
    merge_.forward(merge_params(p), TokensView<const T, B>{c.s.data(), x.offsets, x.batch, R * D, ks},
                   TokensView<T, B>{pre.data, x.offsets, x.batch, D, ks}, c.merge_ctx);
    if (ks) ops::zero_masked_rows(pre.data, rows, D, ks);
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    SEQSWAP_HOST_ONLY(B, "mixers/rnn.hpp (host path)");
    const index_t D = o_.dim, H = o_.heads, d = head_dim(), R = dirs();
    const index_t rows = c.layout.total(), batch = c.layout.batch;
    const index_t* offsets = c.layout.offsets.data();
    const std::uint8_t* ks = c.keep_s_ptr;
    const T* dpre_s = dpre.data;  // (T, D)
    c.ds.resize(static_cast<std::size_t>(rows * R * D));
    merge_.backward(merge_params(p), c.merge_ctx, TokensView<const T, B>{dpre_s, offsets, batch, D, ks},
                    TokensView<T, B>{c.ds.data(), offsets, batch, R * D, ks}, merge_params(g));

    // Backprop through time. One task per head and direction owns that cell's weight
    // gradients, so the sequences run one after another inside it (no reduction needed).
    c.dgi.resize(static_cast<std::size_t>(H * R * rows * kG * d));
    if constexpr (!kLstm) c.dgh.resize(c.dgi.size());
    c.scratch.resize(static_cast<std::size_t>(host::max_threads() * (kG + 2) * d));
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(H * R)) if (H * R > 1)
    for (index_t hr = 0; hr < H * R; ++hr) {
      const index_t h = hr / R, r = hr % R;
      T* dgi = dgates_of(c.dgi, hr, rows);                      // (T, kG·d)
      T* dgh = kLstm ? dgi : dgates_of(c.dgh, hr, rows);        // (T, kG·d)
      host::MatMap<T> dWhh(g.data + cell_offset(r) + w_hh_rel(h), kG * d, d);
      for (index_t b = 0; b < batch; ++b) {
        const index_t t0 = offsets[b], n = offsets[b + 1] - t0;
        if (n == 0) continue;
        sequence_backward(p, c, ks, hr, t0, n, rows, dgi, dgh);
        // a = … + W_hh h_prev  =>  dW_hh += Σ_k da_k h_prevₖᵀ, h_prev = the state one step
        // earlier in this direction (row t-1 for fwd, t+1 for bwd; zero at the start)
        if (n < 2) continue;
        const index_t da0 = r == 0 ? t0 + 1 : t0, h0 = r == 0 ? t0 : t0 + 1;
        host::CMatMap<T> DA(dgh + da0 * kG * d, n - 1, kG * d);  // (n-1, kG·d)
        host::CStridedMap<T> Hp(c.s.data() + h0 * R * D + (h * R + r) * d, n - 1, d,
                                Eigen::OuterStride<>(R * D));   // (n-1, d)
        dWhh.noalias() += DA.transpose() * Hp;
      }
      // a = W_ih u + b_ih (+ b_hh)  =>  dW_ih += daᵀ u, db_ih += Σ da, db_hh += Σ da_h
      host::CMatMap<T> DGI(dgi, rows, kG * d), DGH(dgh, rows, kG * d);
      host::CStridedMap<T> U(c.u.data() + h * d, rows, d, Eigen::OuterStride<>(D));
      host::MatMap<T>(g.data + cell_offset(r) + w_ih_rel(h), kG * d, d).noalias() +=
          DGI.transpose() * U;
      host::VecMap<T>(g.data + cell_offset(r) + b_ih_rel(h), kG * d) += DGI.colwise().sum();
      host::VecMap<T>(g.data + cell_offset(r) + b_hh_rel(h), kG * d) += DGH.colwise().sum();
    }

    // du_h = Σ_r da_{h,r} W_ih{h,r}  (both directions read the same input columns)
    c.du.resize(static_cast<std::size_t>(rows * D));
#pragma omp parallel for schedule(static) if (H > 1)
    for (index_t h = 0; h < H; ++h) {
      host::StridedMap<T> dU(c.du.data() + h * d, rows, d, Eigen::OuterStride<>(D));  // (T, d)
      for (index_t r = 0; r < R; ++r) {
        host::CMatMap<T> DGI(dgates_of(c.dgi, h * R + r, rows), rows, kG * d);
        host::CMatMap<T> Wih(w_ih(p, r, h), kG * d, d);
        if (r == 0)
          dU.noalias() = DGI * Wih;
        else
          dU.noalias() += DGI * Wih;
      }
    }

    // u = x W_inᵀ + b_in; masked rows of du are zero, so masked rows of dx are exactly zero
    in_proj_.backward(in_params(p), c.in_ctx, TokensView<const T, B>{c.du.data(), offsets, batch, D, ks},
                      TokensView<T, B>{dx.data, offsets, batch, D, ks}, in_params(g));
  }

  ops::rnn::Geometry<T> geometry(index_t rows) const {
    return {.rows = rows, .D = o_.dim, .d = head_dim(), .H = o_.heads, .R = dirs(), .G = kG, .S = kS,
            .lstm = kLstm, .dir_stride = static_cast<index_t>(cell_dir_count())};
  }

  // The device path: the same steps as the host path's, through ops/rnn_rows.hpp.
  template <class B>
  void forward_device(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, d = head_dim(), R = dirs(), rows = x.total();
    c.layout = Layout{x.batch, D, {x.offsets, x.offsets + x.batch + 1}};
    c.state_layout = Layout{x.batch, R * D, c.layout.offsets};
    c.keep_s_ptr = x.keep;
    c.u.resize(static_cast<std::size_t>(rows * D));
    c.saved.resize(static_cast<std::size_t>(H * R * rows * kS * d));
    c.s.resize(static_cast<std::size_t>(rows * R * D));
    in_proj_.forward(in_params(p), TokensView<const T, B>{x.data, x.offsets, x.batch, D, x.keep},
                     view_of<T, B>(c.u.data(), c.layout), c.in_ctx);
    const auto geo = geometry(rows);
    const T* cells = p.data + cell_offset(0);
    const index_t* offs = ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of);
    ops::device::for_each(H * R * rows * kG * d, ops::rnn::GateInputs<T>{geo, cells, c.u.data(), c.saved.data()},
                          "rnn_gate_inputs");
    ops::device::for_each(x.batch * H * R, ops::rnn::Forward<T>{geo, cells, offs, x.keep, c.saved.data(), c.s.data()},
                          "rnn_forward");
    merge_.forward(merge_params(p), TokensView<const T, B>{c.s.data(), x.offsets, x.batch, R * D, x.keep},
                   TokensView<T, B>{pre.data, x.offsets, x.batch, D, x.keep}, c.merge_ctx);
    if (x.keep) ops::device::zero_masked_rows(pre.data, rows, D, x.keep);
  }

  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                       ParamsView<T, B> g) const {
    const index_t D = o_.dim, H = o_.heads, d = head_dim(), R = dirs();
    const index_t rows = c.layout.total(), batch = c.layout.batch;
    const index_t* offsets = c.layout.offsets.data();
    const std::uint8_t* ks = c.keep_s_ptr;
    c.ds.resize(static_cast<std::size_t>(rows * R * D));
    merge_.backward(merge_params(p), c.merge_ctx, TokensView<const T, B>{dpre.data, offsets, batch, D, ks},
                    TokensView<T, B>{c.ds.data(), offsets, batch, R * D, ks}, merge_params(g));
    c.dgi.resize(static_cast<std::size_t>(H * R * rows * kG * d));
    if constexpr (!kLstm) c.dgh.resize(c.dgi.size());
    c.scratch.resize(static_cast<std::size_t>(batch * H * R * 2 * d));
    const auto geo = geometry(rows);
    const T* cells = p.data + cell_offset(0);
    T* dgh = kLstm ? c.dgi.data() : c.dgh.data();
    const index_t* offs = ops::device::device_offsets(offsets, batch, c.dev_offsets, c.dev_offsets_of);
    ops::device::for_each(batch * H * R,
                          ops::rnn::Backward<T>{geo, cells, offs, ks, c.saved.data(), c.s.data(), c.ds.data(),
                                                c.dgi.data(), dgh, c.scratch.data()},
                          "rnn_backward");
    ops::device::for_each(H * R * kG * d * (2 * d + 2),
                          ops::rnn::CellGrads<T>{geo, offs, batch, c.u.data(), c.s.data(), c.dgi.data(), dgh,
                                                 g.data + cell_offset(0)},
                          "rnn_cell_grads");
    c.du.resize(static_cast<std::size_t>(rows * D));
    ops::device::for_each(rows * D, ops::rnn::InputGrad<T>{geo, cells, c.dgi.data(), c.du.data()}, "rnn_input_grad");
    in_proj_.backward(in_params(p), c.in_ctx, TokensView<const T, B>{c.du.data(), offsets, batch, D, ks},
                      TokensView<T, B>{dx.data, offsets, batch, D, ks}, in_params(g));
  }

  index_t head_dim() const { return o_.dim / o_.heads; }
  index_t dirs() const { return o_.bidirectional ? 2 : 1; }
  // One direction's tensors: W_ih (H, kG·d, d), W_hh (H, kG·d, d), b_ih (H, kG·d), b_hh (H, kG·d)
  std::size_t cell_dir_count() const {
    const index_t H = o_.heads, d = head_dim();
    return static_cast<std::size_t>(H * (2 * kG * d * d + 2 * kG * d));
  }
  std::size_t cell_offset(index_t r) const {
    return in_proj_.param_count() + static_cast<std::size_t>(r) * cell_dir_count();
  }
  std::size_t merge_offset() const { return cell_offset(dirs()); }
  // Offsets of head h's tensors inside one direction's block.
  index_t w_ih_rel(index_t h) const { return h * kG * head_dim() * head_dim(); }
  index_t w_hh_rel(index_t h) const {
    return (o_.heads + h) * kG * head_dim() * head_dim();
  }
  index_t b_ih_rel(index_t h) const {
    return 2 * o_.heads * kG * head_dim() * head_dim() + h * kG * head_dim();
  }
  index_t b_hh_rel(index_t h) const { return b_ih_rel(h) + o_.heads * kG * head_dim(); }
  template <class B>
  const T* w_ih(ParamsView<const T, B> p, index_t r, index_t h) const {
    return p.data + cell_offset(r) + w_ih_rel(h);
  }
  template <class B>
  const T* w_hh(ParamsView<const T, B> p, index_t r, index_t h) const {
    return p.data + cell_offset(r) + w_hh_rel(h);
  }
  template <class B>
  const T* b_ih(ParamsView<const T, B> p, index_t r, index_t h) const {
    return p.data + cell_offset(r) + b_ih_rel(h);
  }
  template <class B>
  const T* b_hh(ParamsView<const T, B> p, index_t r, index_t h) const {
    return p.data + cell_offset(r) + b_hh_rel(h);
  }
  template <class C>
  T* saved_of(C& c, index_t hr, index_t rows) const {
    return c.saved.data() + hr * rows * kS * head_dim();
  }
  template <class B>
  T* dgates_of(Buffer<T, B>& buf, index_t hr, index_t rows) const {
    return buf.data() + hr * rows * kG * head_dim();
  }
  template <class B>
  const T* dgates_of(const Buffer<T, B>& buf, index_t hr, index_t rows) const {
    return buf.data() + hr * rows * kG * head_dim();
  }

  using AMap = host::ArrMap<T>;
  using CAMap = host::CArrMap<T>;

  // One sequence (rows t0..t0+n, scan order) of head/direction hr. saved[t] holds the input
  // side of the gates on entry and the cell's values on exit; s[t] gets the hidden state.
  template <class B>
  void sequence_forward(ParamsView<const T, B> p, Ctx<B>& c, const std::uint8_t* ks, index_t hr,
                        index_t t0, index_t n, index_t rows) const {
    const index_t D = o_.dim, d = head_dim(), R = dirs(), h = hr / R, r = hr % R;
    T* sv = saved_of(c, hr, rows);                              // (T, kS·d)
    T* st = c.s.data() + (h * R + r) * d;                       // (T, d) stride R·D
    host::CMatMap<T> Whh(w_hh(p, r, h), kG * d, d);             // (kG·d, d)
    host::CVecMap<T> bhh(b_hh(p, r, h), kG * d);                // (kG·d)
    T* gh = c.scratch.data() + host::thread_id() * (kG + 2) * d;  // (kG·d) GRU: W_hh h + b_hh
    const T* h_prev = c.zeros.data();                           // (d)
    const T* c_prev = c.zeros.data();                           // (d) LSTM cell
    for (index_t k = 0; k < n; ++k) {
      const index_t t = t0 + (r == 0 ? k : n - 1 - k);
      T* gt = sv + t * kS * d;  // (kS·d)
      T* ht = st + t * R * D;   // (d)
      if (ks && !ks[t]) {  // identity step: the state passes through unchanged
        std::copy(h_prev, h_prev + d, ht);
        std::fill(gt, gt + kG * d, T(0));
        if constexpr (kLstm) std::copy(c_prev, c_prev + d, gt + 4 * d);
        else std::fill(gt + kG * d, gt + kS * d, T(0));
        h_prev = ht;
        if constexpr (kLstm) c_prev = gt + 4 * d;
        continue;
      }
      // The cell's elementwise part on whole rows: Eigen's vectorised logistic and tanh.
      AMap Hh(ht, d);
      if constexpr (kLstm) {
        // a = (W_ih u + b_ih + b_hh) + W_hh h_prev
        host::VecMap<T>(gt, 4 * d).noalias() += host::CVecMap<T>(h_prev, d) * Whh.transpose();
        AMap I(gt, d), F(gt + d, d), G(gt + 2 * d, d), O(gt + 3 * d, d), C(gt + 4 * d, d);
        I = I.logistic();
        F = F.logistic();
        G = G.tanh();
        O = O.logistic();
        C = F * CAMap(c_prev, d) + I * G;
        Hh = O * C.tanh();
        c_prev = gt + 4 * d;
      } else {
        // gh = W_hh h_prev + b_hh; gt holds gi = W_ih u + b_ih
        host::VecMap<T> GH(gh, 3 * d);
        GH.noalias() = host::CVecMap<T>(h_prev, d) * Whh.transpose();
        GH += bhh;
        AMap Rr(gt, d), Z(gt + d, d), Nn(gt + 2 * d, d), Ghn(gt + 3 * d, d);
        CAMap GHr(gh, d), GHz(gh + d, d), GHn(gh + 2 * d, d);
        Rr = (Rr + GHr).logistic();
        Z = (Z + GHz).logistic();
        Nn = (Nn + Rr * GHn).tanh();
        Ghn = GHn;
        Hh = (T(1) - Z) * Nn + Z * CAMap(h_prev, d);
      }
      h_prev = ht;
    }
  }

  // Backprop through one sequence of head/direction hr, visiting the steps in the reverse of
  // the forward direction's order. Writes dgi[t] (gradient of the input-side pre-activations)
  // and, for the GRU, dgh[t] (of W_hh h + b_hh).
  template <class B>
  void sequence_backward(ParamsView<const T, B> p, Ctx<B>& c, const std::uint8_t* ks, index_t hr,
                         index_t t0, index_t n, index_t rows, T* dgi, T* dgh) const {
    const index_t D = o_.dim, d = head_dim(), R = dirs(), h = hr / R, r = hr % R;
    const T* sv = saved_of(c, hr, rows);                         // (T, kS·d)
    const T* st = c.s.data() + (h * R + r) * d;                  // (T, d) stride R·D
    const T* dst = c.ds.data() + (h * R + r) * d;                // (T, d) stride R·D
    host::CMatMap<T> Whh(w_hh(p, r, h), kG * d, d);              // (kG·d, d)
    T* dh = c.scratch.data() + host::thread_id() * (kG + 2) * d;  // (d) dL/dh_t from later steps
    T* dc = dh + d;                                              // (d) LSTM: dL/dc_t; GRU: dh·z
    std::fill(dh, dh + 2 * d, T(0));
    for (index_t k = n - 1; k >= 0; --k) {
      const index_t t = t0 + (r == 0 ? k : n - 1 - k);
      const T* gt = sv + t * kS * d;
      const T* dht = dst + t * R * D;
      T* da = dgi + t * kG * d;  // (kG·d)
      if (ks && !ks[t]) {  // h_t = h_{t-1}, c_t = c_{t-1}: the gradient passes through
        for (index_t j = 0; j < d; ++j) dh[j] += dht[j];
        std::fill(da, da + kG * d, T(0));
        if constexpr (!kLstm) std::fill(dgh + t * kG * d, dgh + (t + 1) * kG * d, T(0));
        continue;
      }
      const bool first = k == 0;
      const index_t tp = r == 0 ? t - 1 : t + 1;  // the previous step's row
      if constexpr (kLstm) {
        const T* c_prev = first ? c.zeros.data() : sv + tp * kS * d + 4 * d;
        CAMap I(gt, d), F(gt + d, d), G(gt + 2 * d, d), O(gt + 3 * d, d), C(gt + 4 * d, d);
        AMap Dh(dh, d), Dc(dc, d);
        // dh_t = from later steps + from this step's output; tanh(c) once, vectorised
        Dh += CAMap(dht, d);
        AMap Tc(dh + 2 * d, d);  // scratch after dh, dc
        Tc = C.tanh();
        // h = o tanh(c)  =>  do = dh tanh(c),  dc += dh o (1 - tanh²c)
        Dc += Dh * O * (T(1) - Tc * Tc);
        // c = f c_prev + i g  =>  di = dc g, df = dc c_prev, dg = dc i, dc_prev = dc f
        AMap(da, d) = Dc * G * I * (T(1) - I);
        AMap(da + d, d) = Dc * CAMap(c_prev, d) * F * (T(1) - F);
        AMap(da + 2 * d, d) = Dc * I * (T(1) - G * G);
        AMap(da + 3 * d, d) = Dh * Tc * O * (T(1) - O);
        Dc *= F;
        // a = … + W_hh h_prev  =>  dh_prev = W_hhᵀ da
        host::VecMap<T>(dh, d).noalias() = host::CVecMap<T>(da, 4 * d) * Whh;
      } else {
        const T* h_prev = first ? c.zeros.data() : st + tp * R * D;
        T* dgt = dgh + t * kG * d;  // (3d)
        for (index_t j = 0; j < d; ++j) {
          const T rr = gt[j], z = gt[d + j], nn = gt[2 * d + j], ghn = gt[3 * d + j];
          const T dhj = dh[j] + dht[j];
          // h = (1 - z) n + z h_prev  =>  dn = dh (1 - z), dz = dh (h_prev - n), dh_prev = dh z
          const T dan = dhj * (T(1) - z) * (T(1) - nn * nn);
          const T daz = dhj * (h_prev[j] - nn) * z * (T(1) - z);
          // n = tanh(gi_n + r ghn)  =>  dgi_n = dan, dghn = dan r, dr = dan ghn
          const T dar = dan * ghn * rr * (T(1) - rr);
          da[j] = dar, da[d + j] = daz, da[2 * d + j] = dan;
          dgt[j] = dar, dgt[d + j] = daz, dgt[2 * d + j] = dan * rr;
          dc[j] = dhj * z;
        }
        // gh = W_hh h_prev + b_hh  =>  dh_prev = W_hhᵀ dgh + dh z
        host::VecMap<T>(dh, d).noalias() = host::CVecMap<T>(dgt, 3 * d) * Whh;
        for (index_t j = 0; j < d; ++j) dh[j] += dc[j];
      }
    }
  }


  RnnOptions o_;
  layers::Linear<T> in_proj_, merge_;
};

static_assert(MixerCore<MultiHeadRnnCore<double, cell::Lstm>>);

// The mixer: the output projection over the scan order over the recurrence.
template <class T = float, class Cell = cell::Lstm>
using MultiHeadRnn = Projected<Ordered<MultiHeadRnnCore<T, Cell>>>;
template <class T = float>
using MultiHeadLstm = MultiHeadRnn<T, cell::Lstm>;
template <class T = float>
using MultiHeadGru = MultiHeadRnn<T, cell::Gru>;

static_assert(Mixer<MultiHeadLstm<float>, backend::Host>);
static_assert(Mixer<MultiHeadLstm<double>, backend::Host>);
static_assert(Mixer<MultiHeadGru<float>, backend::Host>);
static_assert(Mixer<MultiHeadGru<double>, backend::Host>);

}  // namespace seqswap::mixers
