// Selective state-space mixer: Mamba's S6 (METHOD.md "Selective SSM"; Gu & Dao 2023), made
// bidirectional as in Vision Mamba (Vim, "bimamba v2"). For tokens x (T, D), E = expand·D:
//
//   [u, z] = x W_inᵀ                                 in_proj, no bias, shared by both directions
//   per direction (forward: the scan order; backward: the same order reversed, own parameters
//   under "bwd."):
//     u'  = SiLU(causal depthwise conv1d(u) + b_conv)   kernel `conv`, causal along the direction
//     [δ, B_t, C_t] = u' W_xᵀ                          x_proj, (dt_rank + 2·state) wide
//     Δ_t = softplus(δ W_dtᵀ + b_dt)                   dt_proj, (E) per token
//     h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u'_t        h (E, state), A = -exp(A_log)
//     y_t = C_t · h_t + D ⊙ u'_t
//   pre = (y_fwd + y_bwd) ⊙ SiLU(z)                      (T, E): the pre-projection output
//   out = pre W_projᵀ + b_proj                           Linear(E, D) with bias, named "proj"
//
// Vim gates each direction with SiLU(z) and averages them (if_divide_out); this sums them, which
// equals Vim with W_proj doubled. Mamba's out_proj has no bias; "proj" keeps one so that the
// teacher attention's projection is reused by name when E == D.
//
// Keep-mask rule: the kept tokens of each sequence are compacted, in scan order, into one short
// sequence, and the conv and the scan run on it. A masked token is thus both outside every conv
// window (its neighbours see the next kept token instead) and an identity step of the recurrence
// (a = 1, b = 0); its pre-projection and output rows are exactly zero and it receives no gradient.
//
// Two scan implementations (SelectiveScan): `fused` (ops/selective_scan.hpp) walks each
// (sequence, channel) once with the (state) vector in registers, never materialising exp(ΔA) or ΔBu' for all tokens; it saves the
// state entering every `chunk` tokens and the backward pass recomputes h chunk by chunk from
// those checkpoints. `materialized` is the straightforward reference: a, b (T_kept, E·state)
// through ops::linear_scan and ops::linear_scan_backward. Tests check that the two agree.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/ops/mask.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/mixers/scan_order.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/scan.hpp"
#include "seqswap/ops/selective_scan.hpp"

namespace seqswap::mixers {

enum class SelectiveScan {
  fused,         // per (sequence, channel) in one pass; checkpoints every `chunk` tokens
  materialized,  // reference: a, b (T_kept, E·state) through ops::linear_scan
};

struct SelectiveSsmOptions {
  index_t dim = 0;
  index_t expand = 1;      // E = expand·dim inner channels
  index_t state = 16;      // state size per channel (Mamba's d_state)
  index_t conv = 4;        // depthwise causal conv kernel (Mamba's d_conv)
  index_t dt_rank = 0;     // 0 = ceil(dim / 16), Mamba's "auto"
  double dt_min = 1e-3;    // softplus(b_dt) is initialised log-uniform in [dt_min, dt_max]
  double dt_max = 1e-1;
  double dt_init_floor = 1e-4;  // Mamba clamps the initial Δ from below at this value
  double std = 0.02;       // trunc-normal std of in_proj, x_proj and proj weights (timm's ViT)
  bool bidirectional = true;
  order::ScanOrder order{};
  std::string name = "attn";
  index_t chunk = 256;     // tokens between saved states (fused) / chunk of ops::linear_scan
  SelectiveScan scan = SelectiveScan::fused;
};

// Everything before the output projection: x (T, D) -> pre (T, E). It keeps its own order
// (compact storage of the kept tokens in scan order), so it is not wrapped in Ordered.
template <class T = float>
class SelectiveSsmCore {
 public:
  using scalar_type = T;
  using Options = SelectiveSsmOptions;

  // One direction's activations. Rows are in compact storage: kept tokens only, sequence by
  // sequence in scan order (the backward direction walks the same rows from the end).
  template <class B>
  struct DirCtx {
    Buffer<T, B> v;      // (Tk, E) conv output before SiLU
    Buffer<T, B> up;     // (Tk, E) u' = SiLU(v)
    Buffer<T, B> xdbl;   // (Tk, R + 2S) [δ, B_t, C_t]
    Buffer<T, B> dtp;    // (Tk, E) δ W_dtᵀ + b_dt, before softplus
    Buffer<T, B> delta;  // (Tk, E) Δ = softplus(dtp)
    Buffer<T, B> A;      // (E, S) -exp(A_log)
    Buffer<T, B> ckpt;   // fused: (chunks, E, S) state entering each chunk
    Buffer<T, B> low;    // device: (Tk, R) δ, contiguous
    Buffer<T, B> a, b, h;  // materialized: (Tk, E·S) each
  };

  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> in_ctx;
    Layout xz_layout, pre_layout;
    Buffer<T, B> xz;                  // (T, 2E) [u, z]
    std::vector<index_t> perm;     // (Tk) global row of each compact row
    std::vector<index_t> koffs;    // (batch+1) compact offsets per sequence
    std::vector<index_t> ck_offs;  // (batch+1) fused: offsets of each sequence's checkpoints
    std::vector<index_t> key_offsets;      // the offsets perm was built for
    std::vector<std::uint8_t> key_keep;    // the keep-mask perm was built for (empty: none)
    bool key_valid = false;
    Buffer<T, B> uc, zc;              // (Tk, E) u and z gathered into compact storage
    Buffer<T, B> ysum;                // (Tk, E) y_fwd + y_bwd
    DirCtx<B> dir[2];
    // backward scratch
    Buffer<T, B> dys, dzc, duc, dup, ddtp;  // (Tk, E) each
    Buffer<T, B> dxdbl;               // (Tk, R + 2S)
    Buffer<T, B> part;                // (groups, Tk, 2S) fused: per channel group dB, dC
    Buffer<T, B> pgrad;               // (threads, E·S + E) fused: per thread dA_log, dD
    Buffer<T, B> scratch;             // per thread: forward h (S); backward h, a (chunk, S) and g (S)
    Buffer<T, B> dxz;                 // (T, 2E)
    // backend::Cuda: the compact order uploaded (again only when it changes), the keep-mask
    // brought down to build it, and scratch.
    Buffer<index_t, B> dev_perm, dev_koffs, dev_ck_offs;
    std::uint64_t order_version = 0, uploaded_version = ~std::uint64_t(0);
    std::vector<std::uint8_t> keep_host;
    Buffer<T, B> xzc;                 // (Tk, 2E) [u, z] gathered; backward: [du, dz]
    Buffer<T, B> gath, tmp, cpart;    // (Tk, E); (Tk, max(E, R)); (batch, E, conv + 1)
    const std::uint8_t* keep = nullptr;
    const index_t* offsets = nullptr;
    index_t batch = 0;
  };

  SelectiveSsmCore() = default;
  explicit SelectiveSsmCore(SelectiveSsmOptions o) : o_(std::move(o)) {
    check(o_.dim > 0, "SelectiveSsm '", o_.name, "': expected dim > 0, found ", o_.dim);
    check(o_.expand > 0 && o_.state > 0 && o_.conv > 0 && o_.dt_rank >= 0 && o_.chunk > 0,
          "SelectiveSsm '", o_.name,
          "': expected expand, state, conv, chunk > 0 and dt_rank >= 0, found expand=", o_.expand,
          " state=", o_.state, " conv=", o_.conv, " chunk=", o_.chunk, " dt_rank=", o_.dt_rank);
    check(o_.dt_min > 0 && o_.dt_min <= o_.dt_max, "SelectiveSsm '", o_.name,
          "': expected 0 < dt_min <= dt_max, found dt_min=", o_.dt_min, " dt_max=", o_.dt_max);
    check(o_.scan != SelectiveScan::fused || o_.state <= ops::kSelectiveScanMaxState, "SelectiveSsm '",
          o_.name, "': the fused scan holds at most ", ops::kSelectiveScanMaxState,
          " states per channel, found state=", o_.state, " (use scan = materialized)");
    E_ = o_.expand * o_.dim;
    R_ = o_.dt_rank > 0 ? o_.dt_rank : (o_.dim + 15) / 16;
    S_ = o_.state;
    K_ = o_.conv;
    W_ = R_ + 2 * S_;
    dirs_ = o_.bidirectional ? 2 : 1;
    in_ = layers::Linear<T>({.in = o_.dim, .out = 2 * E_, .bias = false, .name = "in_proj", .std = o_.std});
    std::size_t off = in_.param_count();
    for (int d = 0; d < dirs_; ++d) {
      DirOffsets& f = doff_[d];
      const auto E = static_cast<std::size_t>(E_), K = static_cast<std::size_t>(K_),
                 R = static_cast<std::size_t>(R_), S = static_cast<std::size_t>(S_),
                 W = static_cast<std::size_t>(W_);
      f.conv_w = off;
      f.conv_b = f.conv_w + E * K;
      f.x_w = f.conv_b + E;
      f.dt_w = f.x_w + W * E;
      f.dt_b = f.dt_w + E * R;
      f.A_log = f.dt_b + E;
      f.D = f.A_log + E * S;
      off = f.D + E;
    }
    count_ = off;
  }
  const SelectiveSsmOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "selective_ssm"; }

  index_t inner() const { return E_; }
  index_t dt_rank() const { return R_; }
  index_t width() const { return E_; }  // the pre-projection output is (T, E)
  double proj_init_std() const { return o_.std; }

  // 2·E·D + dirs·E·(conv + 2·dt_rank + 3·state + 3)  (the projection, E·D + D, is Projected's)
  std::size_t param_count() const { return count_; }
  // in_proj and conv per token, plus the selective scan: per inner channel, state and
  // direction h = exp(Δa)·h + Δ·b·x and y += c·h (three multiply-adds).
  double flops(const Layout& in) const {
    return (2.0 * double(param_count()) + 6.0 * double(E_) * double(o_.state) * double(dirs_)) * double(in.total());
  }

  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    const auto E = static_cast<std::size_t>(E_);
    in_.visit_params(f, base, offset);
    for (int d = 0; d < dirs_; ++d) {
      const DirOffsets& q = doff_[d];
      const std::string b = d == 0 ? base : join_name(base, "bwd");
      // PyTorch's Conv1d default (kaiming-uniform, a = √5): uniform ±1/√fan_in, fan_in = conv.
      const double conv_bound = 1.0 / std::sqrt(double(K_));
      f(ParamInfo{join_name(b, "conv1d.weight"), {E_, 1, K_}, offset + q.conv_w,
                  E * static_cast<std::size_t>(K_), true, Init::uniform, conv_bound});
      f(ParamInfo{join_name(b, "conv1d.bias"), {E_}, offset + q.conv_b, E, false, Init::uniform,
                  conv_bound});
      f(ParamInfo{join_name(b, "x_proj.weight"), {W_, E_}, offset + q.x_w,
                  static_cast<std::size_t>(W_) * E, true, Init::trunc_normal, o_.std});
      // Mamba's dt_init = "random": uniform ±dt_rank^-1/2 preserves the variance of δ.
      f(ParamInfo{join_name(b, "dt_proj.weight"), {E_, R_}, offset + q.dt_w,
                  E * static_cast<std::size_t>(R_), true, Init::uniform, 1.0 / std::sqrt(double(R_))});
      // Mamba's inverse-softplus trick: softplus(bias) log-uniform in [dt_min, dt_max].
      ParamInfo dt_bias{join_name(b, "dt_proj.bias"), {E_}, offset + q.dt_b, E, false, Init::custom, 0.0};
      dt_bias.custom_init = [lo = std::log(o_.dt_min), hi = std::log(o_.dt_max),
                             floor = o_.dt_init_floor](double* v, std::size_t n, Rng& rng) {
        for (std::size_t i = 0; i < n; ++i)
          v[i] = inverse_softplus(std::max(std::exp(lo + rng.uniform() * (hi - lo)), floor));
      };
      f(std::move(dt_bias));
      ParamInfo a_log{join_name(b, "A_log"), {E_, S_}, offset + q.A_log,
                      E * static_cast<std::size_t>(S_), false, Init::custom, 0.0};
      a_log.custom_init = [S = S_](double* v, std::size_t n, Rng&) {  // A = -(1..state) per channel
        for (std::size_t i = 0; i < n; ++i) v[i] = std::log(double(index_t(i) % S + 1));
      };
      f(std::move(a_log));
      f(ParamInfo{join_name(b, "D"), {E_}, offset + q.D, E, false, Init::ones, 0.0});
    }
  }

  // Writes the tensors visit_params marks Init::custom into this layer's parameter slice `p`:
  // A_log[e, s] = log(s + 1) (S4D-real: A = -(1..state) per channel), and the inverse-softplus
  // trick for b_dt: Δ0 = exp(U(log dt_min, log dt_max)) clamped below at dt_init_floor, then
  // b_dt = Δ0 + log(-expm1(-Δ0)) so that softplus(b_dt) = Δ0.
  template <class B>
  void init(ParamsView<T, B> p, Rng& rng) const {
    check(p.size == param_count(), "SelectiveSsm '", o_.name, "': init expected ", param_count(),
          " parameters, found ", p.size);
    const double lo = std::log(o_.dt_min), hi = std::log(o_.dt_max);
    for (int d = 0; d < dirs_; ++d) {
      const DirOffsets& q = doff_[d];
      for (index_t e = 0; e < E_; ++e) {
        const double dt = std::max(std::exp(lo + rng.uniform() * (hi - lo)), o_.dt_init_floor);
        p.data[q.dt_b + e] = T(inverse_softplus(dt));
        for (index_t s = 0; s < S_; ++s) p.data[q.A_log + e * S_ + s] = T(std::log(double(s + 1)));
      }
    }
  }

  // x (T, D) -> pre (T, E)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t E = E_, rows = x.total();
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.xz_layout = Layout{x.batch, 2 * E, {x.offsets, x.offsets + x.batch + 1}};
    c.pre_layout = Layout{x.batch, E, c.xz_layout.offsets};
    c.xz.resize(static_cast<std::size_t>(rows * 2 * E));
    in_.forward(in_params(p), x, view_of<T, B>(c.xz.data(), c.xz_layout), c.in_ctx);
    if constexpr (backend::is_cuda<B>)
      forward_device(p, x, pre, c);
    else
      forward_host(p, x, pre, c);
  }

  // dpre (T, E), zero at masked rows -> dx, g
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(p, c, dpre, g);
    else
      backward_host(p, c, dpre, g);
    in_.backward(in_params(p), c.in_ctx,
                 TokensView<const T, B>(view_of<T, B>(c.dxz.data(), c.xz_layout)), dx,
                 in_params(g));
  }

  template <class P>
  P in_params(P p) const { return p.sub(0, in_.param_count()); }

 private:
  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t E = E_, rows = x.total();
    build_order(x.offsets, x.batch, x.keep, c, o_.chunk);
    const index_t Tk = c.koffs.back();
    c.uc.resize(static_cast<std::size_t>(Tk * E));
    c.zc.resize(static_cast<std::size_t>(Tk * E));
    c.ysum.resize(static_cast<std::size_t>(Tk * E));
    for (index_t k = 0; k < Tk; ++k) {  // xz (T, 2E) -> uc, zc (Tk, E)
      const T* src = c.xz.data() + c.perm[k] * 2 * E;
      std::copy(src, src + E, c.uc.data() + k * E);
      std::copy(src + E, src + 2 * E, c.zc.data() + k * E);
    }
    for (int d = 0; d < dirs_; ++d) direction_forward(p, c, d);

    // pre = (y_fwd + y_bwd) ⊙ SiLU(z), scattered back; masked rows stay zero.
    std::fill(pre.data, pre.data + rows * E, T(0));
#pragma omp parallel for schedule(static) if (Tk > 64)
    for (index_t k = 0; k < Tk; ++k) {
      T* dst = pre.data + c.perm[k] * E;
      const T* ys = c.ysum.data() + k * E;
      const CArr Z(c.zc.data() + k * E, E);
      Arr(dst, E) = CArr(ys, E) * Z * Z.logistic();  // SiLU(z), vectorised
    }
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, ParamsView<T, B> g) const {
    const index_t E = E_, rows = c.xz_layout.total(), Tk = c.koffs.back();

    // pre = ysum ⊙ SiLU(z)  =>  dy_dir = dpre ⊙ SiLU(z) (both directions), dz = dpre ⊙ ysum ⊙ SiLU'(z)
    c.dys.resize(static_cast<std::size_t>(Tk * E));
    c.dzc.resize(static_cast<std::size_t>(Tk * E));
#pragma omp parallel for schedule(static) if (Tk > 64)
    for (index_t k = 0; k < Tk; ++k) {
      const T* dp = dpre.data + c.perm[k] * E;
      const CArr Z(c.zc.data() + k * E, E), Dp(dp, E), Ys(c.ysum.data() + k * E, E);
      const auto sig = Z.logistic();  // evaluated per use; vectorised
      Arr(c.dys.data() + k * E, E) = Dp * Z * sig;
      // SiLU'(z) = σ(z) (1 + z (1 - σ(z)))
      Arr(c.dzc.data() + k * E, E) = Dp * Ys * (sig * (T(1) + Z * (T(1) - sig)));
    }
    c.duc.assign(static_cast<std::size_t>(Tk * E), T(0));  // both directions add into du
    for (int d = 0; d < dirs_; ++d) direction_backward(p, c, d, g);

    // [u, z] = x W_inᵀ: scatter du, dz back to rows; masked rows get zero gradient.
    c.dxz.assign(static_cast<std::size_t>(rows * 2 * E), T(0));
    for (index_t k = 0; k < Tk; ++k) {
      T* dst = c.dxz.data() + c.perm[k] * 2 * E;
      std::copy(c.duc.data() + k * E, c.duc.data() + (k + 1) * E, dst);
      std::copy(c.dzc.data() + k * E, c.dzc.data() + (k + 1) * E, dst + E);
    }
  }

  struct DirOffsets {  // element offsets of one direction's tensors in the layer's slice
    std::size_t conv_w = 0, conv_b = 0, x_w = 0, dt_w = 0, dt_b = 0, A_log = 0, D = 0;
  };

  using Arr = host::ArrMap<T>;
  using CArr = host::CArrMap<T>;

  static double inverse_softplus(double y) { return y + std::log(-std::expm1(-y)); }

  // The device path (backend::Cuda): the same steps through ops/device.hpp. The compact order is
  // built on the host (the keep-mask, when there is one, is brought down for it: B·N bytes per
  // layer and step) and uploaded only when it changes; the conv and the scans run as the item
  // functions of ops/ssm_rows.hpp (the fused scan, checkpoints every min(chunk, 16) tokens).
  template <class B>
  void forward_device(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    check(o_.scan == SelectiveScan::fused, "SelectiveSsm '", o_.name,
          "': backend::Cuda runs the fused scan only (scan = materialized is the host reference)");
    check(S_ <= ops::ssm::kDeviceMaxState, "SelectiveSsm '", o_.name, "': backend::Cuda holds at most ",
          ops::ssm::kDeviceMaxState, " states per channel, found state=", S_);
    const index_t E = E_, rows = x.total();
    const std::uint8_t* keep = nullptr;
    if (x.keep) {
      c.keep_host.resize(static_cast<std::size_t>(rows));
      Buffer<std::uint8_t, B>::download_from(x.keep, c.keep_host.data(), c.keep_host.size());
      keep = c.keep_host.data();
    }
    build_order(x.offsets, x.batch, keep, c, device_chunk());
    if (c.uploaded_version != c.order_version) {
      c.dev_perm.upload(c.perm.data(), c.perm.size());
      c.dev_koffs.upload(c.koffs.data(), c.koffs.size());
      c.dev_ck_offs.upload(c.ck_offs.data(), c.ck_offs.size());
      c.uploaded_version = c.order_version;
    }
    const index_t Tk = c.koffs.back();
    ops::device::fill_zero(pre.data, rows * E);
    if (Tk == 0) return;
    c.xzc.resize(static_cast<std::size_t>(Tk * 2 * E));
    c.uc.resize(static_cast<std::size_t>(Tk * E));
    c.zc.resize(static_cast<std::size_t>(Tk * E));
    c.ysum.resize(static_cast<std::size_t>(Tk * E));
    c.gath.resize(static_cast<std::size_t>(Tk * E));
    ops::device::gather_rows(c.xz.data(), c.dev_perm.data(), Tk, 2 * E, c.xzc.data());
    copy_block_device(c.xzc.data(), 2 * E, Tk, E, c.uc.data(), E);
    copy_block_device(c.xzc.data() + E, 2 * E, Tk, E, c.zc.data(), E);
    for (int d = 0; d < dirs_; ++d) direction_forward_device(p, c, d);
    ops::device::for_each(Tk * E, ops::ssm::Gate<T>{c.ysum.data(), c.zc.data(), c.gath.data()}, "silu_gate");
    ops::device::scatter_rows(c.gath.data(), c.dev_perm.data(), Tk, E, pre.data);
  }

  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, ParamsView<T, B> g) const {
    const index_t E = E_, rows = c.xz_layout.total(), Tk = c.koffs.back();
    c.dxz.resize(static_cast<std::size_t>(rows * 2 * E));
    ops::device::fill_zero(c.dxz.data(), rows * 2 * E);
    if (Tk == 0) return;
    c.dys.resize(static_cast<std::size_t>(Tk * E));
    c.dzc.resize(static_cast<std::size_t>(Tk * E));
    c.duc.resize(static_cast<std::size_t>(Tk * E));
    ops::device::gather_rows(dpre.data, c.dev_perm.data(), Tk, E, c.gath.data());
    ops::device::for_each(
        Tk * E, ops::ssm::GateBackward<T>{c.gath.data(), c.zc.data(), c.ysum.data(), c.dys.data(), c.dzc.data()},
        "silu_gate_backward");
    ops::device::fill_zero(c.duc.data(), Tk * E);  // both directions add into du
    for (int d = 0; d < dirs_; ++d) direction_backward_device(p, c, d, g);
    copy_block_device(c.duc.data(), E, Tk, E, c.xzc.data(), 2 * E);
    copy_block_device(c.dzc.data(), E, Tk, E, c.xzc.data() + E, 2 * E);
    ops::device::scatter_rows(c.xzc.data(), c.dev_perm.data(), Tk, 2 * E, c.dxz.data());
  }

  // dst (rows, cols; leading dimension ld_dst) <- src (rows, cols; ld_src), on the device.
  static void copy_block_device(const T* src, index_t ld_src, index_t rows, index_t cols, T* dst, index_t ld_dst) {
    ops::device::for_each(rows * cols, ops::ssm::CopyBlock<T>{src, ld_src, cols, dst, ld_dst}, "copy_block");
  }

  // One direction's activations for Tk kept tokens (both paths).
  template <class B>
  void size_direction(DirCtx<B>& s, index_t Tk) const {
    const auto n = static_cast<std::size_t>(Tk * E_);
    s.v.resize(n);
    s.up.resize(n);
    s.dtp.resize(n);
    s.delta.resize(n);
    s.xdbl.resize(static_cast<std::size_t>(Tk * W_));
    s.A.resize(static_cast<std::size_t>(E_ * S_));
  }

  index_t device_chunk() const { return std::min<index_t>(o_.chunk, ops::ssm::kDeviceChunk); }

  template <class B>
  ops::ssm::Scan<T> device_scan(ParamsView<const T, B> p, const Ctx<B>& c, int d) const {
    const auto& s = c.dir[d];
    return {.delta = s.delta.data(), .u = s.up.data(), .bc = s.xdbl.data() + R_, .ldbc = W_, .A = s.A.data(),
            .Dskip = p.data + doff_[d].D, .offsets = c.dev_koffs.data(), .batch = c.batch, .E = E_, .S = S_,
            .reverse = d == 1, .chunk = device_chunk(), .ck_offs = c.dev_ck_offs.data()};
  }
  template <class B>
  ops::ssm::Conv<T> device_conv(ParamsView<const T, B> p, const Ctx<B>& c, int d) const {
    return {.u = c.uc.data(), .offsets = c.dev_koffs.data(), .batch = c.batch, .E = E_, .K = K_,
            .w = p.data + doff_[d].conv_w, .bias = p.data + doff_[d].conv_b, .reverse = d == 1};
  }

  template <class B>
  void direction_forward_device(ParamsView<const T, B> p, Ctx<B>& c, int d) const {
    const index_t E = E_, R = R_, S = S_, W = W_, Tk = c.koffs.back();
    const DirOffsets& q = doff_[d];
    auto& s = c.dir[d];
    size_direction(s, Tk);
    s.low.resize(static_cast<std::size_t>(Tk * R));
    s.ckpt.resize(static_cast<std::size_t>(c.ck_offs.back() * E * S));
    ops::device::for_each(E * S, ops::ssm::NegExp<T>{p.data + q.A_log, s.A.data()}, "neg_exp");
    ops::device::for_each(Tk * E, ops::ssm::ConvForward<T>{device_conv(p, c, d), s.v.data(), s.up.data()},
                          "ssm_conv_forward");
    ops::device::linear_forward(s.up.data(), Tk, E, p.data + q.x_w, static_cast<const T*>(nullptr), W, s.xdbl.data());
    copy_block_device(s.xdbl.data(), W, Tk, R, s.low.data(), R);
    ops::device::linear_forward(s.low.data(), Tk, R, p.data + q.dt_w, p.data + q.dt_b, E, s.dtp.data());
    ops::device::for_each(Tk * E, ops::ssm::Softplus<T>{s.dtp.data(), s.delta.data()}, "softplus");
    ops::device::ssm_scan_forward(device_scan(p, c, d), c.ysum.data(), d != 0, s.ckpt.data());
  }

  template <class B>
  void direction_backward_device(ParamsView<const T, B> p, Ctx<B>& c, int d, ParamsView<T, B> g) const {
    const index_t E = E_, K = K_, R = R_, S = S_, W = W_, Tk = c.koffs.back();
    const DirOffsets& q = doff_[d];
    auto& s = c.dir[d];
    c.dup.resize(static_cast<std::size_t>(Tk * E));
    c.ddtp.resize(static_cast<std::size_t>(Tk * E));
    c.dxdbl.resize(static_cast<std::size_t>(Tk * W));
    c.part.resize(static_cast<std::size_t>(ops::ssm::groups(E) * Tk * 2 * S));
    c.pgrad.resize(static_cast<std::size_t>(c.batch * E * (S + 1)));
    c.tmp.resize(static_cast<std::size_t>(Tk * std::max(E, R)));
    c.cpart.resize(static_cast<std::size_t>(c.batch * E * (K + 1)));
    // The scan: du' and d dtp (softplus' included) assigned, dB, dC into dxdbl, dA_log and dD.
    ops::device::ssm_scan_backward(device_scan(p, c, d),
                                   ops::ssm::ScanGrads<T>{.ckpt = s.ckpt.data(), .dy = c.dys.data(),
                                                          .dtp = s.dtp.data(), .du = c.dup.data(),
                                                          .ddtp = c.ddtp.data(), .part = c.part.data(),
                                                          .pgrad = c.pgrad.data()},
                                   Tk, c.dxdbl.data(), W, R, g.data + q.A_log, g.data + q.D);
    // dtp = δ W_dtᵀ + b_dt;  [δ, B, C] = u' W_xᵀ
    ops::device::linear_backward(s.low.data(), Tk, R, p.data + q.dt_w, E, c.ddtp.data(), c.tmp.data(),
                                 g.data + q.dt_w, g.data + q.dt_b);
    copy_block_device(c.tmp.data(), R, Tk, R, c.dxdbl.data(), W);
    ops::device::linear_backward(s.up.data(), Tk, E, p.data + q.x_w, W, c.dxdbl.data(), c.tmp.data(),
                                 g.data + q.x_w, static_cast<T*>(nullptr));
    ops::device::add_into(c.dup.data(), c.tmp.data(), Tk * E);
    ops::device::for_each(Tk * E, ops::ssm::SiluBackward<T>{s.v.data(), c.dup.data()}, "silu_backward");  // u' = SiLU(v)
    // The conv: du accumulated; per-sequence partials of gw, gb, then summed over sequences.
    const auto conv = device_conv(p, c, d);
    ops::device::for_each(conv.batch * conv.E, ops::ssm::ConvBackward<T>{conv, c.dup.data(), c.cpart.data(), c.duc.data()},
                          "ssm_conv_backward");
    ops::device::for_each(conv.E * (conv.K + 1),
                          ops::ssm::SumOverSequences<T>{c.cpart.data(), conv.batch, conv.E, conv.K, g.data + q.conv_w,
                                                        g.data + q.conv_b},
                          "ssm_conv_backward (reduce)");
  }

  // Compact storage: kept tokens of each sequence in scan order. Rebuilt only when the offsets
  // or the mask change, so that steady-state steps allocate nothing.
  // `keep` (rows) is host memory or null; checkpoints every `spacing` kept tokens.
  template <class B>
  void build_order(const index_t* offsets, index_t batch, const std::uint8_t* keep, Ctx<B>& c,
                   index_t spacing) const {
    const index_t rows = offsets[batch];
    bool same = c.key_valid && c.key_offsets.size() == static_cast<std::size_t>(batch + 1) &&
                std::equal(c.key_offsets.begin(), c.key_offsets.end(), offsets) &&
                (keep ? c.key_keep.size() == static_cast<std::size_t>(rows) &&
                            std::equal(c.key_keep.begin(), c.key_keep.end(), keep)
                      : c.key_keep.empty());
    if (!same) {
      c.key_offsets.assign(offsets, offsets + batch + 1);
      if (keep) c.key_keep.assign(keep, keep + rows);
      else c.key_keep.clear();
      c.key_valid = true;
      ++c.order_version;
      c.perm.clear();
      c.koffs.assign(1, 0);
      for (index_t b = 0; b < batch; ++b) {
        const index_t t0 = offsets[b];
        for (index_t i : o_.order.permutation(offsets[b + 1] - t0))
          if (!keep || keep[t0 + i]) c.perm.push_back(t0 + i);
        c.koffs.push_back(static_cast<index_t>(c.perm.size()));
      }
    }
    c.ck_offs.assign(1, 0);
    for (index_t b = 0; b < batch; ++b) {
      const index_t n = c.koffs[b + 1] - c.koffs[b];
      c.ck_offs.push_back(c.ck_offs.back() + (n + spacing - 1) / spacing);
    }
  }

  // Compact row of the k-th token of sequence b in direction d (d = 1 walks it from the end).
  template <class C>
  static index_t pos(const C& c, index_t b, index_t k, bool rev) {
    const index_t t0 = c.koffs[b], n = c.koffs[b + 1] - t0;
    return t0 + (rev ? n - 1 - k : k);
  }

  template <class B>
  void direction_forward(ParamsView<const T, B> p, Ctx<B>& c, int d) const {
    const index_t E = E_, K = K_, R = R_, S = S_, W = W_, Tk = c.koffs.back();
    const bool rev = d == 1;
    const DirOffsets& q = doff_[d];
    auto& s = c.dir[d];
    const T* cw = p.data + q.conv_w;  // (E, K)
    const T* cb = p.data + q.conv_b;  // (E)
    size_direction(s, Tk);
    for (index_t i = 0; i < E * S; ++i) s.A[i] = -std::exp(p.data[q.A_log + i]);

    // v_k = b_conv + Σ_j w_j ⊙ u_{k-(K-1)+j}  (positions before the sequence start are zero),
    // u'_k = SiLU(v_k): PyTorch's Conv1d(padding=K-1)[..., :n] as in Mamba.
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(c.batch)) if (c.batch > 1)
    for (index_t b = 0; b < c.batch; ++b) {
      const index_t n = c.koffs[b + 1] - c.koffs[b];
      for (index_t k = 0; k < n; ++k) {
        T* v = s.v.data() + pos(c, b, k, rev) * E;  // (E)
        std::copy(cb, cb + E, v);
        for (index_t j = std::max<index_t>(0, K - 1 - k); j < K; ++j) {
          const T* u = c.uc.data() + pos(c, b, k - (K - 1) + j, rev) * E;  // (E)
          for (index_t e = 0; e < E; ++e) v[e] += cw[e * K + j] * u[e];
        }
        const CArr V(v, E);
        Arr(s.up.data() + pos(c, b, k, rev) * E, E) = V * V.logistic();  // SiLU, vectorised
      }
    }
    // [δ, B, C] = u' W_xᵀ;  dtp = δ W_dtᵀ + b_dt;  Δ = softplus(dtp)
    ops::linear_forward(s.up.data(), Tk, E, p.data + q.x_w, static_cast<const T*>(nullptr), W,
                        s.xdbl.data());
    {
      host::CStridedMap<T> low(s.xdbl.data(), Tk, R, Eigen::OuterStride<>(W));  // (Tk, R)
      host::CMatMap<T> Wdt(p.data + q.dt_w, E, R);                               // (E, R)
      host::MatMap<T> dtp(s.dtp.data(), Tk, E);                                  // (Tk, E)
      dtp.noalias() = low * Wdt.transpose();
      dtp.rowwise() += host::CVecMap<T>(p.data + q.dt_b, E);
    }
    {  // Δ = softplus(dtp) = max(v, 0) + log1p(exp(-|v|)): no overflow, vectorised
      const CArr V(s.dtp.data(), Tk * E);
      Arr(s.delta.data(), Tk * E) = V.max(T(0)) + (-V.abs()).exp().log1p();
    }

    if (o_.scan == SelectiveScan::fused) scan_fused_forward(p, c, d);
    else scan_materialized_forward(p, c, d);
  }

  // h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u'_t,  y_t = C_t · h_t + D u'_t, one (sequence,
  // channel) per work item; y goes into ysum (assigned by direction 0, added by direction 1).
  template <class B>
  void scan_fused_forward(ParamsView<const T, B> p, Ctx<B>& c, int d) const {
    const index_t E = E_, R = R_, S = S_, W = W_, chunk = o_.chunk;
    const bool rev = d == 1;
    auto& s = c.dir[d];
    const T* Dp = p.data + doff_[d].D;  // (E)
    s.ckpt.resize(static_cast<std::size_t>(c.ck_offs.back() * E * S));
    ops::selective_scan_forward<T>({.delta = s.delta.data(), .u = s.up.data(), .bc = s.xdbl.data() + R,
                                    .ldbc = W, .A = s.A.data(), .Dskip = Dp, .offsets = c.koffs.data(),
                                    .batch = c.batch, .E = E, .S = S, .reverse = rev,
                                    .accumulate = d != 0, .y = c.ysum.data(), .ckpt = s.ckpt.data(),
                                    .ck_offs = c.ck_offs.data(), .chunk = chunk});
  }

  // Reference: a = exp(Δ A), b = Δ B u' materialised, then ops::linear_scan.
  template <class B>
  void scan_materialized_forward(ParamsView<const T, B> p, Ctx<B>& c, int d) const {
    const index_t E = E_, R = R_, S = S_, W = W_, Tk = c.koffs.back(), ES = E_ * S_;
    auto& s = c.dir[d];
    const T* Dp = p.data + doff_[d].D;  // (E)
    s.a.resize(static_cast<std::size_t>(Tk * ES));
    s.b.resize(static_cast<std::size_t>(Tk * ES));
    s.h.resize(static_cast<std::size_t>(Tk * ES));
    for (index_t t = 0; t < Tk; ++t)
      for (index_t e = 0; e < E; ++e)
        for (index_t j = 0; j < S; ++j) {
          const T dl = s.delta[t * E + e];
          s.a[t * ES + e * S + j] = std::exp(dl * s.A[e * S + j]);
          s.b[t * ES + e * S + j] = dl * s.xdbl[t * W + R + j] * s.up[t * E + e];
        }
    ops::linear_scan(B{}, s.a.data(), s.b.data(), s.h.data(), c.koffs.data(), c.batch, ES,
                     {.chunk = o_.chunk, .reverse = d == 1});
    for (index_t t = 0; t < Tk; ++t)
      for (index_t e = 0; e < E; ++e) {
        T yv = Dp[e] * s.up[t * E + e];
        for (index_t j = 0; j < S; ++j) yv += s.xdbl[t * W + R + S + j] * s.h[t * ES + e * S + j];
        c.ysum[t * E + e] = d == 0 ? yv : c.ysum[t * E + e] + yv;
      }
  }

  // Backward of one direction: dys (Tk, E) -> duc += (Tk, E); parameter gradients accumulated.
  template <class B>
  void direction_backward(ParamsView<const T, B> p, Ctx<B>& c, int d, ParamsView<T, B> g) const {
    const index_t E = E_, K = K_, R = R_, W = W_, Tk = c.koffs.back();
    const bool rev = d == 1;
    const DirOffsets& q = doff_[d];
    auto& s = c.dir[d];
    c.dup.resize(static_cast<std::size_t>(Tk * E));
    c.ddtp.resize(static_cast<std::size_t>(Tk * E));
    c.dxdbl.resize(static_cast<std::size_t>(Tk * W));
    // Scan: dys -> du' (assigned), d dtp (assigned), dB, dC (into dxdbl), g(A_log), g(D) (+=).
    if (o_.scan == SelectiveScan::fused) scan_fused_backward(p, c, d, g);
    else scan_materialized_backward(p, c, d, g);
    // Δ = softplus(dtp)  =>  d dtp = dΔ · σ(dtp)
    Arr(c.ddtp.data(), Tk * E) *= CArr(s.dtp.data(), Tk * E).logistic();

    // dtp = δ W_dtᵀ + b_dt  =>  dδ = d dtp W_dt,  dW_dt += d dtpᵀ δ,  db_dt += Σ_t d dtp
    {
      host::CMatMap<T> ddtp(c.ddtp.data(), Tk, E);                                 // (Tk, E)
      host::CMatMap<T> Wdt(p.data + q.dt_w, E, R);                                 // (E, R)
      host::StridedMap<T> dlow(c.dxdbl.data(), Tk, R, Eigen::OuterStride<>(W));    // (Tk, R)
      host::CStridedMap<T> low(s.xdbl.data(), Tk, R, Eigen::OuterStride<>(W));     // (Tk, R)
      dlow.noalias() = ddtp * Wdt;
      host::MatMap<T>(g.data + q.dt_w, E, R).noalias() += ddtp.transpose() * low;
      host::VecMap<T>(g.data + q.dt_b, E) += ddtp.colwise().sum();
    }
    // [δ, B, C] = u' W_xᵀ  =>  du' += dxdbl W_x,  dW_x += dxdblᵀ u'
    {
      host::CMatMap<T> dxdbl(c.dxdbl.data(), Tk, W);  // (Tk, W)
      host::CMatMap<T> Wx(p.data + q.x_w, W, E);       // (W, E)
      host::CMatMap<T> up(s.up.data(), Tk, E);         // (Tk, E)
      host::MatMap<T>(c.dup.data(), Tk, E).noalias() += dxdbl * Wx;
      host::MatMap<T>(g.data + q.x_w, W, E).noalias() += dxdbl.transpose() * up;
    }
    // u' = SiLU(v)  =>  dv = du' ⊙ SiLU'(v)   (in place in dup)
    {
      const CArr V(s.v.data(), Tk * E);
      Arr(c.dup.data(), Tk * E) *= V.logistic() * (T(1) + V * (T(1) - V.logistic()));
    }
    // v_k = b_conv + Σ_j w_j ⊙ u_{k-(K-1)+j}  =>  db_conv += Σ_k dv_k,
    //   dw_j += Σ_k dv_k ⊙ u_{k-(K-1)+j},  du_{k-(K-1)+j} += w_j ⊙ dv_k.  One channel per item.
    const T* cw = p.data + q.conv_w;  // (E, K)
    T* gw = g.data + q.conv_w;        // (E, K)
    T* gb = g.data + q.conv_b;        // (E)
#pragma omp parallel for schedule(static) if (E > 1)
    for (index_t e = 0; e < E; ++e) {
      for (index_t b = 0; b < c.batch; ++b) {
        const index_t n = c.koffs[b + 1] - c.koffs[b];
        for (index_t k = 0; k < n; ++k) {
          const T dv = c.dup[pos(c, b, k, rev) * E + e];
          gb[e] += dv;
          for (index_t j = std::max<index_t>(0, K - 1 - k); j < K; ++j) {
            const index_t tt = pos(c, b, k - (K - 1) + j, rev);
            gw[e * K + j] += dv * c.uc[tt * E + e];
            c.duc[tt * E + e] += cw[e * K + j] * dv;
          }
        }
      }
    }
  }

  // Work items (sequence, channel group); each recomputes h chunk by chunk from the forward's
  // checkpoints, then walks the chunk backwards:
  //   g_t = dh_t (from y_t = C_t·h_t) + a_{t+1} ⊙ g_{t+1}
  //   dC_t += dy_t h_t,  da_t = g_t ⊙ h_{t-1},  db_t = g_t
  //   a = exp(Δ A): dΔ += Σ da a A,  dA_log += da a Δ A   (dA/dA_log = A)
  //   b = Δ B u':   dΔ += Σ g B u',  dB += g Δ u',  du' += Σ g Δ B
  //   y += D u':    dD += dy u',  du' += D dy;     Δ = softplus(dtp): d dtp = dΔ σ(dtp)
  // dB, dC of a token sum over channels: each channel group owns a slice of `part`; dA_log and
  // dD sum over sequences: each thread owns a slice of `pgrad`. Both are reduced afterwards.
  template <class B>
  void scan_fused_backward(ParamsView<const T, B> p, Ctx<B>& c, int d, ParamsView<T, B> g) const {
    const index_t E = E_, R = R_, S = S_, W = W_, Tk = c.koffs.back(), chunk = o_.chunk;
    const bool rev = d == 1;
    const DirOffsets& q = doff_[d];
    auto& s = c.dir[d];
    const T* Dp = p.data + q.D;  // (E)
    const int threads = host::max_threads();
    const index_t groups = std::clamp<index_t>((threads + c.batch - 1) / std::max<index_t>(c.batch, 1), 1, E);
    index_t n_max = 0;
    for (index_t b = 0; b < c.batch; ++b) n_max = std::max(n_max, c.koffs[b + 1] - c.koffs[b]);
    const index_t span = std::min(chunk, n_max);  // tokens recomputed at a time
    const index_t per_thread = 2 * span * S + S;  // h (span, S), a (span, S), g (S)
    c.part.assign(static_cast<std::size_t>(groups * Tk * 2 * S), T(0));
    c.pgrad.assign(static_cast<std::size_t>(threads * (E * S + E)), T(0));
    c.scratch.resize(static_cast<std::size_t>(threads * per_thread));
    const index_t items = c.batch * groups;
#pragma omp parallel for schedule(static) if (items > 1)
    for (index_t i = 0; i < items; ++i) {
      const index_t b = i / groups, gi = i % groups, n = c.koffs[b + 1] - c.koffs[b];
      const int tid = host::thread_id();
      T* hs = c.scratch.data() + tid * per_thread;  // (span, S)
      T* as = hs + span * S;                        // (span, S)
      T* gs = as + span * S;                        // (S)
      T* dBC = c.part.data() + gi * Tk * 2 * S;     // (Tk, 2S)
      T* pA = c.pgrad.data() + tid * (E * S + E);   // (E, S)
      T* pD = pA + E * S;                           // (E)
      const index_t chunks = (n + chunk - 1) / chunk;
      // One channel; kS = S at compile time for the common sizes (Eigen::Dynamic otherwise).
      auto channel = [&]<int kS>(index_t e) {
        using Arr = host::ArrMap<T, kS>;
        using CArr = host::CArrMap<T, kS>;
        const T* Ae = s.A.data() + e * S;  // (S)
        std::fill(gs, gs + S, T(0));
        for (index_t ch = chunks - 1; ch >= 0; --ch) {
          const index_t k0 = ch * chunk, k1 = std::min(n, k0 + chunk);
          const T* h0 = s.ckpt.data() + ((c.ck_offs[b] + ch) * E + e) * S;  // (S) entering
          // Recompute h and a over the chunk, exactly as the forward did.
          const T* prev = h0;
          for (index_t k = k0; k < k1; ++k) {
            const index_t t = pos(c, b, k, rev);
            const T dl = s.delta[t * E + e], du = dl * s.up[t * E + e];
            const T* Bt = s.xdbl.data() + t * W + R;
            T* hk = hs + (k - k0) * S;
            T* ak = as + (k - k0) * S;
            Arr(ak, S) = (dl * CArr(Ae, S)).exp();
            Arr(hk, S) = CArr(ak, S) * CArr(prev, S) + du * CArr(Bt, S);
            prev = hk;
          }
          for (index_t k = k1 - 1; k >= k0; --k) {
            const index_t t = pos(c, b, k, rev);
            const T dl = s.delta[t * E + e], uu = s.up[t * E + e], dyv = c.dys[t * E + e];
            const T* Bt = s.xdbl.data() + t * W + R;  // (S)
            const T* Ct = Bt + S;                     // (S)
            const T* hk = hs + (k - k0) * S;
            const T* hp = k > k0 ? hk - S : h0;
            const T* ak = as + (k - k0) * S;
            T* dB = dBC + t * 2 * S;
            T* dC = dB + S;
            pD[e] += dyv * uu;
            // Over the S states at once: G = dL/dh_t, daa = dL/da_t · a_t.
            Arr G(gs, S);
            G += dyv * CArr(Ct, S);
            Arr(dC, S) += dyv * CArr(hk, S);
            const CArr Hp(hp, S), Ak(ak, S), Aj(Ae, S);
            const T gB = (G * CArr(Bt, S)).sum();
            const T ddl = (G * Hp * Ak * Aj).sum() + gB * uu;
            Arr(pA + e * S, S) += dl * G * Hp * Ak * Aj;
            Arr(dB, S) += (dl * uu) * G;
            const T dupv = dyv * Dp[e] + dl * gB;
            G *= CArr(ak, S);  // carried to h_{t-1}
            c.dup[t * E + e] = dupv;
            c.ddtp[t * E + e] = ddl;  // times softplus'(dtp), vectorised after the scan
          }
        }
      };
      for (index_t e = gi * E / groups; e < (gi + 1) * E / groups; ++e) {
        if (S == 16) channel.template operator()<16>(e);
        else if (S == 8) channel.template operator()<8>(e);
        else channel.template operator()<Eigen::Dynamic>(e);
      }
    }
    // Reduce: dB, dC over channel groups into dxdbl's last 2S columns; dA_log, dD over threads.
#pragma omp parallel for schedule(static) if (Tk > 64)
    for (index_t t = 0; t < Tk; ++t)
      for (index_t j = 0; j < 2 * S; ++j) {
        T sum = 0;
        for (index_t gi = 0; gi < groups; ++gi) sum += c.part[(gi * Tk + t) * 2 * S + j];
        c.dxdbl[t * W + R + j] = sum;
      }
    for (int tid = 0; tid < threads; ++tid) {
      const T* pA = c.pgrad.data() + tid * (E * S + E);
      for (index_t i = 0; i < E * S; ++i) g.data[q.A_log + i] += pA[i];
      for (index_t e = 0; e < E; ++e) g.data[q.D + e] += pA[E * S + e];
    }
  }

  // Reference backward through ops::linear_scan_backward (same formulas as the fused form).
  template <class B>
  void scan_materialized_backward(ParamsView<const T, B> p, Ctx<B>& c, int d,
                                  ParamsView<T, B> g) const {
    const index_t E = E_, R = R_, S = S_, W = W_, Tk = c.koffs.back(), ES = E_ * S_;
    const DirOffsets& q = doff_[d];
    auto& s = c.dir[d];
    const T* Dp = p.data + q.D;  // (E)
    // scratch: dh, da, db (Tk, E·S) each
    c.scratch.resize(static_cast<std::size_t>(3 * Tk * ES));
    T* dh = c.scratch.data();
    T* da = dh + Tk * ES;
    T* db = da + Tk * ES;
    // y_t = C_t · h_t + D u'_t  =>  dh_t = dy_t C_t
    for (index_t t = 0; t < Tk; ++t)
      for (index_t e = 0; e < E; ++e)
        for (index_t j = 0; j < S; ++j)
          dh[t * ES + e * S + j] = c.dys[t * E + e] * s.xdbl[t * W + R + S + j];
    ops::linear_scan_backward(B{}, s.a.data(), s.h.data(), dh, da, db, c.koffs.data(), c.batch, ES,
                              {.chunk = o_.chunk, .reverse = d == 1});
    for (index_t t = 0; t < Tk; ++t)
      for (index_t j = 0; j < 2 * S; ++j) c.dxdbl[t * W + R + j] = 0;
    for (index_t t = 0; t < Tk; ++t)
      for (index_t e = 0; e < E; ++e) {
        const T dl = s.delta[t * E + e], uu = s.up[t * E + e], dyv = c.dys[t * E + e];
        T ddl = 0, dupv = dyv * Dp[e];
        g.data[q.D + e] += dyv * uu;
        for (index_t j = 0; j < S; ++j) {
          const index_t i = t * ES + e * S + j;
          const T Bj = s.xdbl[t * W + R + j], A = s.A[e * S + j];
          c.dxdbl[t * W + R + S + j] += dyv * s.h[i];  // dC
          const T daa = da[i] * s.a[i];
          ddl += daa * A + db[i] * Bj * uu;
          g.data[q.A_log + e * S + j] += daa * dl * A;
          c.dxdbl[t * W + R + j] += db[i] * dl * uu;  // dB
          dupv += db[i] * dl * Bj;
        }
        c.dup[t * E + e] = dupv;
        c.ddtp[t * E + e] = ddl;  // times softplus'(dtp), vectorised after the scan
      }
  }

  SelectiveSsmOptions o_;
  index_t E_ = 0, R_ = 0, S_ = 0, K_ = 0, W_ = 0;
  int dirs_ = 1;
  DirOffsets doff_[2];
  std::size_t count_ = 0;
  layers::Linear<T> in_;
};

static_assert(MixerCore<SelectiveSsmCore<double>>);

template <class T = float>
using SelectiveSsm = Projected<SelectiveSsmCore<T>>;

static_assert(Mixer<SelectiveSsm<float>, backend::Host>);
static_assert(Mixer<SelectiveSsm<double>, backend::Host>);

}  // namespace seqswap::mixers
