// Bidirectional retention (RetNet: Sun et al. 2023, "Retentive Network: A Successor to
// Transformer for Large Language Models"; its two-sided form for images as in ViR, Hatamizadeh
// et al. 2023, and RMT, Fan et al. 2024). Per head h with a fixed decay γ_h = 1 − 2^{−(c+h)}
// (RetNet's schedule, c = decay_offset = 5), over the tokens in scan order:
//   q, k, v = split(x W_qkvᵀ + b),  q ← q / √d
//   pre_t = (1 / c_t) Σ_s γ^{|t−s|} (q_t · k_s) v_s,   c_t = Σ_s γ^{|t−s|}
// computed as two recurrences over a d×d state, S_t = γ S_{t−1} + k_t v_tᵀ, one from each end:
//   pre_t = q_t (S→_t + S←_t − k_t v_tᵀ) / c_t          O(n·d²) per head, no n×n matrix.
// The normalisation is a plain decayed average (divide by the row sum c_t); RetNet's own divides
// the decays by √(row sum), then by max(|Σ|, 1) and applies a GroupNorm — left out here, as
// the output projection that follows is the teacher's. For decay_offset + h ≥ 25 the float
// decay rounds to 1 and that head becomes an undecayed average.
// Masked tokens are identity steps (distances count kept tokens only, so packed ≡ masked) and
// give zero rows. Its qkv has attention's name and shape: a student starts from the teacher's.
// Backward walks the same recurrences: dq_t = (S→_t + S←_t − k_t v_tᵀ) dô_t with dô_t = dpre_t/c_t,
// and with G_t = γ G_{t−1} + q_t dô_tᵀ from each end, G = G→ + G← − q dôᵀ: dk = G v, dv = Gᵀ k.
#pragma once
#include <cmath>
#include <initializer_list>
#include <string>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/mixers/ordered.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/retention_rows.hpp"

namespace seqswap::mixers {

struct RetentionOptions {
  index_t dim = 0;
  index_t heads = 1;
  bool qkv_bias = true;
  double decay_offset = 5.0;  // γ_h = 1 − 2^{−(decay_offset + h)}
  order::ScanOrder order{};   // which token the recurrences visit k-th
  std::string name = "attn";
};

template <class T = float>
class RetentionCore {
 public:
  using scalar_type = T;
  using Options = RetentionOptions;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> qkv_ctx;
    Layout qkv_layout;
    Buffer<T, B> qkv, dqkv;   // (rows, 3D) [q | k | v], q scaled
    Buffer<T, B> inv_c;       // (rows, H) 1 / c_t
    const std::uint8_t* keep = nullptr;
    index_t batch = 0;
    Buffer<index_t, B> dev_offsets;  // backend::Cuda: the offsets there, uploaded when they change
    Offsets dev_offsets_of;
  };

  RetentionCore() = default;
  explicit RetentionCore(RetentionOptions o) : o_(std::move(o)) {
    check(o_.dim > 0 && o_.heads > 0 && o_.dim % o_.heads == 0, "Retention '", o_.name,
          "': expected dim > 0 divisible by heads, found dim ", o_.dim, ", heads ", o_.heads);
    qkv_ = layers::Linear<T>({.in = o_.dim, .out = 3 * o_.dim, .bias = o_.qkv_bias, .name = "qkv"});
  }
  const RetentionOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "retention"; }
  index_t width() const { return o_.dim; }
  std::size_t param_count() const { return qkv_.param_count(); }
  // qkv per token, plus per head and direction the state decay (d²), update and read (2·d² each).
  double flops(const Layout& in) const {
    return (2.0 * double(param_count()) + 10.0 * double(o_.dim) * double(o_.dim / o_.heads)) * double(in.total());
  }
  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    qkv_.visit_params(f, base, offset);
  }
  T gamma(index_t h) const { return T(1.0 - std::pow(2.0, -(o_.decay_offset + double(h)))); }

  // x (rows, D) -> pre (rows, D), scan order
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, rows = x.total();
    c.keep = x.keep;
    c.batch = x.batch;
    c.qkv_layout = Layout{x.batch, 3 * D, {x.offsets, x.offsets + x.batch + 1}};
    c.qkv.resize(c.qkv_layout.size());
    c.inv_c.resize(static_cast<std::size_t>(rows * H));
    qkv_.forward(p, x, view_of<T, B>(c.qkv.data(), c.qkv_layout), c.qkv_ctx);
    if constexpr (backend::is_cuda<B>)
      forward_device(x, pre, c);
    else
      forward_host(x, pre, c);
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(c, dpre);
    else
      backward_host(c, dpre);
    qkv_.backward(p, c.qkv_ctx, TokensView<const T, B>(view_of<T, B>(c.dqkv.data(), c.qkv_layout)), dx, g);
  }

 private:
  template <class B>
  void forward_host(TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H, rows = x.total();
    host::MatMap<T>(c.qkv.data(), rows, 3 * D).leftCols(D) *= T(1.0 / std::sqrt(double(d)));
    std::fill(pre.data, pre.data + rows * D, T(0));
    const T* qkv = c.qkv.data();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t b = 0; b < x.batch; ++b)
      for (index_t h = 0; h < H; ++h) {
        host::RowMat<T> S(d, d);
        const auto q = [&](index_t t, index_t part = 0) { return host::CVecMap<T>(qkv + t * 3 * D + part * D + h * d, d); };
        // o_t += q_t S_t in both directions; c_t + 1 by the same recurrence on scalars.
        walk(x.offsets[b], x.offsets[b + 1], c.keep, h, {&S}, [&](index_t t, T n, bool first) {
          S.noalias() += q(t, 1).transpose() * q(t, 2);
          host::VecMap<T>(pre.data + t * D + h * d, d).noalias() += q(t) * S;
          c.inv_c[t * H + h] = first ? n : c.inv_c[t * H + h] + n;
        });
        for (index_t t = x.offsets[b]; t < x.offsets[b + 1]; ++t) {  // the diagonal was counted twice
          if (c.keep && !c.keep[t]) continue;
          const T ic = c.inv_c[t * H + h] = T(1) / (c.inv_c[t * H + h] - T(1));
          auto o = host::VecMap<T>(pre.data + t * D + h * d, d);
          o = (o - q(t).dot(q(t, 1)) * q(t, 2)) * ic;
        }
      }
  }

  template <class B>
  void backward_host(Ctx<B>& c, TokensView<const T, B> dpre) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H, rows = dpre.total();
    c.dqkv.assign(c.qkv_layout.size(), T(0));
    const T* qkv = c.qkv.data();
#pragma omp parallel for collapse(2) schedule(static)
    for (index_t b = 0; b < dpre.batch; ++b)
      for (index_t h = 0; h < H; ++h) {
        host::RowMat<T> S(d, d), G(d, d);
        host::RowVec<T> o(d);
        const auto q = [&](index_t t, index_t part = 0) { return host::CVecMap<T>(qkv + t * 3 * D + part * D + h * d, d); };
        const auto dq = [&](index_t t, index_t part = 0) { return host::VecMap<T>(c.dqkv.data() + t * 3 * D + part * D + h * d, d); };
        const auto dhat = [&](index_t t) {  // dô_t = dpre_t / c_t (dpre is zero at masked rows)
          o = host::CVecMap<T>(dpre.data + t * D + h * d, d) * c.inv_c[t * H + h];
        };
        walk(dpre.offsets[b], dpre.offsets[b + 1], c.keep, h, {&S, &G}, [&](index_t t, T, bool) {
          dhat(t);
          S.noalias() += q(t, 1).transpose() * q(t, 2);
          G.noalias() += q(t).transpose() * o;
          dq(t).noalias() += o * S.transpose();     // dq += S dô
          dq(t, 1).noalias() += q(t, 2) * G.transpose();  // dk += G v
          dq(t, 2).noalias() += q(t, 1) * G;        // dv += Gᵀ k
        });
        for (index_t t = dpre.offsets[b]; t < dpre.offsets[b + 1]; ++t) {  // the diagonal was counted twice
          if (c.keep && !c.keep[t]) continue;
          dhat(t);
          const T vo = q(t, 2).dot(o), qk = q(t).dot(q(t, 1));
          dq(t) -= vo * q(t, 1);
          dq(t, 1) -= vo * q(t);
          dq(t, 2) -= qk * o;
        }
      }
    host::MatMap<T>(c.dqkv.data(), rows, 3 * D).leftCols(D) *= T(1.0 / std::sqrt(double(d)));  // q = q_raw / √d
  }

  // The device path (backend::Cuda): the walks below as functors (ops/retention_rows.hpp), one
  // thread per row or column of a head's d×d states, every sum over tokens in order.
  ops::retention::Dims device_dims(const index_t* dev_offsets, index_t batch) const {
    check(o_.dim / o_.heads <= ops::retention::kMaxHead, "Retention '", o_.name, "': backend::Cuda holds heads up to ",
          ops::retention::kMaxHead, " wide, found ", o_.dim / o_.heads);
    return {batch, o_.heads, o_.dim / o_.heads, dev_offsets, o_.decay_offset};
  }
  template <class B>
  void forward_device(TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    namespace rt = ops::retention;
    const index_t D = o_.dim, d = D / o_.heads, rows = x.total();
    const auto s = device_dims(ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of), x.batch);
    ops::device::for_each(rows * D, rt::ScaleQ<T>{D, T(1.0 / std::sqrt(double(d))), c.qkv.data()}, "retention: scale q");
    ops::device::for_each(x.batch * o_.heads, rt::InvC<T>{s, x.keep, c.inv_c.data()}, "retention: normalisers");
    ops::device::for_each(x.batch * D, rt::Forward<T>{s, c.qkv.data(), c.inv_c.data(), x.keep, pre.data},
                          "retention: forward");  // every row: masked ones 0
  }
  template <class B>
  void backward_device(Ctx<B>& c, TokensView<const T, B> dpre) const {
    namespace rt = ops::retention;
    const index_t D = o_.dim, d = D / o_.heads, rows = dpre.total();
    const auto s = device_dims(c.dev_offsets.data(), c.batch);
    c.dqkv.resize(c.qkv_layout.size());
    ops::device::for_each(c.batch * D, rt::BackwardRows<T>{s, c.qkv.data(), c.inv_c.data(), dpre.data, c.keep, c.dqkv.data()},
                          "retention: dq, dk");
    ops::device::for_each(c.batch * D,
                          rt::BackwardColumns<T>{s, c.qkv.data(), c.inv_c.data(), dpre.data, c.keep, c.dqkv.data()},
                          "retention: dv");
    ops::device::for_each(rows * D, rt::ScaleQ<T>{D, T(1.0 / std::sqrt(double(d))), c.dqkv.data()},
                          "retention: q = q_raw / sqrt(d)");
  }

  // Visits the kept tokens of rows [t0, t1) forward, then backward. At each direction's start
  // the states are zeroed; before each token they decay by γ_h. f(t, n = Σ γ^dist over the
  // direction's kept tokens so far, first direction?).
  template <class F>
  void walk(index_t t0, index_t t1, const std::uint8_t* keep, index_t h, std::initializer_list<host::RowMat<T>*> states,
            F&& f) const {
    const T gm = gamma(h);
    for (int dir = 0; dir < 2; ++dir) {
      for (auto* s : states) s->setZero();
      T n = 0;
      for (index_t i = 0; i < t1 - t0; ++i) {
        const index_t t = dir == 0 ? t0 + i : t1 - 1 - i;
        if (keep && !keep[t]) continue;
        for (auto* s : states) *s *= gm;
        n = gm * n + T(1);
        f(t, n, dir == 0);
      }
    }
  }

  RetentionOptions o_;
  layers::Linear<T> qkv_;
};

static_assert(MixerCore<RetentionCore<double>>);

template <class T = float>
using Retention = Projected<Ordered<RetentionCore<T>>>;

static_assert(Mixer<Retention<float>, backend::Host>);
static_assert(Mixer<Retention<double>, backend::Host>);

}  // namespace seqswap::mixers
