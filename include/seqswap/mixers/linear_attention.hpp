// Non-causal multi-head linear attention (METHOD.md "Linear attention"):
//   y_i = φ(q_i)ᵀ S / (φ(q_i)ᵀ z + eps),  S = Σ_j φ(k_j) v_jᵀ,  z = Σ_j φ(k_j)
// per head over each sequence's kept tokens, then Proj. The sums make it O(N m d) per head
// (m = feature width): the N x N attention matrix is never formed. q, k, v come from a qkv
// Linear laid out exactly like the teacher attention's ([q; k; v] rows, heads contiguous
// d-blocks), so a student can start from the teacher's Q, K, V and Proj (init_from_attention).
//
// A composition (mixers/projected.hpp): LinearAttention<T, Feature> =
// Projected<LinearAttentionCore<T, Feature>>; the core is qkv, the feature map and the two sums,
// the projection and the masked-rows tail are Projected's.
#pragma once
#include "seqswap/mixers/projected.hpp"
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/linear_attention_rows.hpp"

namespace seqswap::mixers {

// Feature-map tags φ: R^d -> R^m, m = expansion * d.
namespace feature {
struct Elu1 {};      // φ(x) = elu(x) + 1 (Katharopoulos et al. 2020), m = d
struct Relu {};      // φ(x) = max(x, 0), m = d
struct Hedgehog {};  // φ(x) = [exp(x W_h), exp(-x W_h)], W_h (d, d) learnable per head, m = 2d
}  // namespace feature

template <class Feature>
struct FeatureTraits {
  static_assert(dependent_false<Feature>,
                "LinearAttention: unknown feature map; use a tag from seqswap::mixers::feature "
                "(Elu1, Relu, Hedgehog)");
};
template <>
struct FeatureTraits<feature::Elu1> {
  static constexpr const char* name = "elu1";
  static constexpr index_t expansion = 1;
  static constexpr bool learnable = false;
  // y = φ(x) = x > 0 ? x + 1 : exp(x) = exp(min(x, 0)) + max(x, 0) over n entries at once:
  // branch-free, so Eigen vectorises it (its select() is not), and exp never overflows.
  template <class T>
  static void values(const T* x, T* y, index_t n) {
    const host::CArrMap<T> X(x, n);
    host::ArrMap<T>(y, n) = X.min(T(0)).exp() + X.max(T(0));
  }
  // φ'(x) from φ(x): elu + 1 exceeds 1 exactly where x > 0 (slope 1) and equals its own
  // slope exp(x) elsewhere, so backward needs no copy of the pre-activation.
  template <class T>
  SEQSWAP_HD static T slope(T phi) { return phi > T(1) ? T(1) : phi; }
  template <class T>
  SEQSWAP_HD static T value(T x) { return std::exp(x < T(0) ? x : T(0)) + (x > T(0) ? x : T(0)); }  // the device's
};
template <>
struct FeatureTraits<feature::Relu> {
  static constexpr const char* name = "relu";
  static constexpr index_t expansion = 1;
  static constexpr bool learnable = false;
  template <class T>
  static void values(const T* x, T* y, index_t n) {
    host::ArrMap<T>(y, n) = host::CArrMap<T>(x, n).max(T(0));
  }
  template <class T>
  SEQSWAP_HD static T slope(T phi) { return phi > T(0) ? T(1) : T(0); }
  template <class T>
  SEQSWAP_HD static T value(T x) { return x > T(0) ? x : T(0); }  // the device's
};
template <>
struct FeatureTraits<feature::Hedgehog> {
  static constexpr const char* name = "hedgehog";
  static constexpr index_t expansion = 2;
  static constexpr bool learnable = true;
};

struct LinearAttentionOptions {
  index_t dim = 0;
  index_t heads = 1;
  bool qkv_bias = true;
  double eps = 1e-6;  // denominator guard: φ(q)ᵀ z + eps
  std::string name = "attn";
};

template <class T = float, class Feature = feature::Elu1>
class LinearAttentionCore {
  using Traits = FeatureTraits<Feature>;
  static_assert(sizeof(Traits) > 0);
  static constexpr index_t kExpansion = Traits::expansion;
  static constexpr bool kLearnable = Traits::learnable;
  using ColMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>>;
  using CColMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>>;

 public:
  using scalar_type = T;
  using feature_type = Feature;
  using Options = LinearAttentionOptions;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> qkv_ctx;
    Layout qkv_layout;
    Buffer<T, B> qkv;           // (rows, 3D) [q k v], heads contiguous d-blocks
    Buffer<T, B> phi_q, phi_k;  // (rows, H m) φ(q), φ(k); masked rows 0 (Hedgehog: scaled, see forward)
    Buffer<T, B> key_shift;     // (B H, m) Hedgehog: per-feature exponent shift of the keys
    Buffer<T, B> state;         // (B H, m, d) S per sequence and head
    Buffer<T, B> norm;          // (B H, m) z per sequence and head
    Buffer<T, B> den;           // (H, rows) φ(q_i)ᵀ z + eps; 1 on masked rows
    const T* out = nullptr;  // (rows, D) the forward's output (the wrapper's pre-projection buffer)
    Buffer<T, B> dnum;                   // (rows, D) backward scratch
    Buffer<T, B> dden;                   // (H, rows)
    Buffer<T, B> dphi_q, dphi_k;         // (rows, H m)
    Buffer<T, B> dstate, dnorm;          // (B H, m, d), (B H, m)
    Buffer<T, B> dqkv;                   // (rows, 3D)
    Buffer<T, B> dfeature;               // (B H, d, d) Hedgehog: per sequence, summed over b after
    Buffer<index_t, B> dev_offsets;      // backend::Cuda: the offsets there, uploaded when they change
    Offsets dev_offsets_of;
    const std::uint8_t* keep = nullptr;
    const index_t* offsets = nullptr;
    index_t batch = 0;
  };

  LinearAttentionCore() = default;
  explicit LinearAttentionCore(LinearAttentionOptions o) : o_(std::move(o)) {
    check(o_.heads > 0 && o_.dim > 0 && o_.dim % o_.heads == 0, "LinearAttention '", o_.name,
          "': expected a positive width divisible by heads, found width ", o_.dim, " and ",
          o_.heads, " heads");
    check(o_.eps >= 0, "LinearAttention '", o_.name, "': expected eps >= 0, found ", o_.eps);
    qkv_ = layers::Linear<T>({.in = o_.dim, .out = 3 * o_.dim, .bias = o_.qkv_bias, .name = "qkv"});
  }
  const LinearAttentionOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "linear_attention"; }
  static constexpr const char* feature_name() { return Traits::name; }

  // 3D² (+ 3D qkv bias) + H d² (Hedgehog); the projection is Projected's
  std::size_t param_count() const { return qkv_.param_count() + feature_count(); }
  index_t width() const { return o_.dim; }  // of the pre-projection output
  // qkv per token, plus per head the state update and read (2·d_φ·d each per token).
  double flops(const Layout& in) const {
    const double d = double(o_.dim / o_.heads), dphi = double(kExpansion) * d;
    return 2.0 * double(param_count()) * double(in.total()) + 4.0 * double(o_.heads) * dphi * d * double(in.total());
  }

  // Names under base ("blocks.3.attn"): qkv, then Hedgehog's feature weight.
  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    qkv_.visit_params(f, base, offset);
    if constexpr (kLearnable) {
      const index_t H = o_.heads, d = o_.dim / H;
      // Identity per head: Hedgehog starts as φ(x) = [exp(x), exp(-x)].
      f(ParamInfo{join_name(base, "feature.weight"), {H, d, d}, offset + qkv_.param_count(),
                  feature_count(), true, Init::custom, 0.0,
                  [H, d](double* w, std::size_t, Rng&) { identity_per_head(w, H, d); }});
    }
  }

  // Writes the tensors visit_params reports as Init::custom (Hedgehog: W_h = I for every
  // head), as Model::init would; leaves all others as they are. p is this mixer's slice.
  template <class B>
  void init(ParamsView<T, B> p) const {
    if constexpr (kLearnable) identity_per_head(feature_params(p).data, o_.heads, o_.dim / o_.heads);
  }

  // x (rows, D) -> pre (rows, D), masked rows 0
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre,
               Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H, m = kExpansion * d, rows = x.total();
    const T eps = T(o_.eps);
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.qkv_layout = Layout{x.batch, 3 * D, {x.offsets, x.offsets + x.batch + 1}};
    c.out = pre.data;
    const auto BH = static_cast<std::size_t>(x.batch * H);
    c.qkv.resize(static_cast<std::size_t>(rows * 3 * D));
    c.phi_q.resize(static_cast<std::size_t>(rows * H * m));
    c.phi_k.resize(static_cast<std::size_t>(rows * H * m));
    c.state.resize(BH * static_cast<std::size_t>(m * d));
    c.norm.resize(BH * static_cast<std::size_t>(m));
    if constexpr (kLearnable) c.key_shift.resize(BH * static_cast<std::size_t>(m));
    c.den.resize(static_cast<std::size_t>(H * rows));

    qkv_.forward(qkv_params(p), x, view_of<T, B>(c.qkv.data(), c.qkv_layout), c.qkv_ctx);
    const T* w = kLearnable ? feature_params(p).data : nullptr;  // (H, d, d)
    if constexpr (backend::is_cuda<B>) {
      forward_device(w, x, pre, c);
    } else {
      const auto BHi = static_cast<index_t>(BH);
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(BHi)) if (BHi > 1)
      for (index_t bh = 0; bh < BHi; ++bh) {
        const index_t b = bh / H, h = bh % H, t0 = x.begin(b), n = x.length(b);
        host::MatMap<T> S(c.state.data() + bh * m * d, m, d);
        host::VecMap<T> z(c.norm.data() + bh * m, m);
        if (n == 0) {
          S.setZero();
          z.setZero();
          continue;
        }
        const std::uint8_t* keep = x.keep ? x.keep + t0 : nullptr;
        const T* qkv = c.qkv.data() + t0 * 3 * D;
        host::CStridedMap<T> V(qkv + 2 * D + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::StridedMap<T> Pq(c.phi_q.data() + t0 * H * m + h * m, n, m, Eigen::OuterStride<>(H * m));
        host::StridedMap<T> Pk(c.phi_k.data() + t0 * H * m + h * m, n, m, Eigen::OuterStride<>(H * m));
        host::StridedMap<T> O(pre.data + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
        T* den = c.den.data() + h * rows + t0;  // (n)
        const T* wh = kLearnable ? w + h * d * d : nullptr;

        if constexpr (kLearnable) {
          // den temporarily holds each query's exponent shift a_i.
          T* key_shift = c.key_shift.data() + bh * m;
          hedgehog_keys(qkv + D + h * d, 3 * D, Pk, n, wh, keep, key_shift);
          hedgehog_queries(qkv + h * d, 3 * D, Pq, n, wh, keep, key_shift, den);
        } else {
          elementwise_features(qkv + D + h * d, 3 * D, Pk, n, keep);
          elementwise_features(qkv + h * d, 3 * D, Pq, n, keep);
        }
        // S = Σ_j φ(k_j) v_jᵀ, z = Σ_j φ(k_j) over kept keys (masked rows of Φk are 0)
        S.noalias() = Pk.transpose() * V;
        z.noalias() = Pk.colwise().sum();
        // y_i = φ(q_i)ᵀ S / (φ(q_i)ᵀ z + eps); Hedgehog's scaled features need eps e^{-a_i}
        // (see hedgehog_keys) for the same ratio.
        O.noalias() = Pq * S;
        for (index_t i = 0; i < n; ++i) {
          if (keep && !keep[i]) {
            O.row(i).setZero();
            den[i] = T(1);
            continue;
          }
          const T eps_i = kLearnable ? eps * std::exp(-den[i]) : eps;
          den[i] = Pq.row(i).dot(z) + eps_i;
          O.row(i) /= den[i];
        }
      }
    }
  }

  // dpre (rows, D), zero at masked rows -> dx ASSIGNED (nullable), g ACCUMULATED
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H, m = kExpansion * d;
    const index_t rows = c.qkv_layout.total();
    const auto BH = static_cast<std::size_t>(c.batch * H);
    c.dnum.resize(static_cast<std::size_t>(rows * D));
    c.dden.resize(static_cast<std::size_t>(H * rows));
    c.dphi_q.resize(static_cast<std::size_t>(rows * H * m));
    c.dphi_k.resize(static_cast<std::size_t>(rows * H * m));
    c.dstate.resize(BH * static_cast<std::size_t>(m * d));
    c.dnorm.resize(BH * static_cast<std::size_t>(m));
    c.dqkv.resize(static_cast<std::size_t>(rows * 3 * D));
    const T* w = kLearnable ? feature_params(p).data : nullptr;  // (H, d, d)
    if constexpr (backend::is_cuda<B>) {
      backward_device(w, c, dpre.data, kLearnable ? feature_params(g).data : nullptr);
    } else {
      if constexpr (kLearnable) c.dfeature.assign(BH * static_cast<std::size_t>(d * d), T(0));

      const auto BHi = static_cast<index_t>(BH);
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(BHi)) if (BHi > 1)
      for (index_t bh = 0; bh < BHi; ++bh) {
        const index_t b = bh / H, h = bh % H, t0 = c.offsets[b], n = c.offsets[b + 1] - t0;
        if (n == 0) continue;
        const std::uint8_t* keep = c.keep ? c.keep + t0 : nullptr;
        const T* qkv = c.qkv.data() + t0 * 3 * D;
        T* dqkv = c.dqkv.data() + t0 * 3 * D;
        host::CStridedMap<T> Q(qkv + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::CStridedMap<T> K(qkv + D + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::CStridedMap<T> V(qkv + 2 * D + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::StridedMap<T> dQ(dqkv + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::StridedMap<T> dK(dqkv + D + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::StridedMap<T> dV(dqkv + 2 * D + h * d, n, d, Eigen::OuterStride<>(3 * D));
        host::CStridedMap<T> Pq(c.phi_q.data() + t0 * H * m + h * m, n, m, Eigen::OuterStride<>(H * m));
        host::CStridedMap<T> Pk(c.phi_k.data() + t0 * H * m + h * m, n, m, Eigen::OuterStride<>(H * m));
        host::StridedMap<T> dPq(c.dphi_q.data() + t0 * H * m + h * m, n, m, Eigen::OuterStride<>(H * m));
        host::StridedMap<T> dPk(c.dphi_k.data() + t0 * H * m + h * m, n, m, Eigen::OuterStride<>(H * m));
        host::CStridedMap<T> O(c.out + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
        host::CStridedMap<T> dO(dpre.data + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
        host::StridedMap<T> dNum(c.dnum.data() + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
        CColMap den(c.den.data() + h * rows + t0, n);
        ColMap dden(c.dden.data() + h * rows + t0, n);
        host::CMatMap<T> S(c.state.data() + bh * m * d, m, d);
        host::CVecMap<T> z(c.norm.data() + bh * m, m);
        host::MatMap<T> dS(c.dstate.data() + bh * m * d, m, d);
        host::VecMap<T> dz(c.dnorm.data() + bh * m, m);

        // y_i = num_i / den_i  =>  dnum_i = dy_i / den_i,  dden_i = -dy_i · y_i / den_i
        // (a masked query produced nothing, so it passes nothing back)
        for (index_t i = 0; i < n; ++i) {
          if (keep && !keep[i]) {
            dNum.row(i).setZero();
            dden[i] = T(0);
            continue;
          }
          dNum.row(i) = dO.row(i) / den[i];
          dden[i] = -dO.row(i).dot(O.row(i)) / den[i];
        }
        // num_i = φ(q_i)ᵀ S, den_i = φ(q_i)ᵀ z + eps
        //   =>  dφ(q_i) = S dnum_i + z dden_i,  dS = Σ_i φ(q_i) dnum_iᵀ,  dz = Σ_i φ(q_i) dden_i
        dPq.noalias() = dNum * S.transpose();
        dPq.noalias() += dden * z;
        dS.noalias() = Pq.transpose() * dNum;
        dz.noalias() = dden.transpose() * Pq;
        // S = Σ_j φ(k_j) v_jᵀ, z = Σ_j φ(k_j)  =>  dφ(k_j) = dS v_j + dz,  dv_j = dSᵀ φ(k_j)
        // (masked keys took no part: their dφ(k) is 0 and their φ(k) = 0 gives dv = 0)
        dPk.noalias() = V * dS.transpose();
        dPk.rowwise() += dz;
        if (keep)
          for (index_t j = 0; j < n; ++j)
            if (!keep[j]) dPk.row(j).setZero();
        dV.noalias() = Pk * dS;

        if constexpr (kLearnable) {
          // φ̃ = [exp(u - s₊), exp(-u - s₋)], u = x W_h (the shifts are constants: y does not
          // depend on them)  =>  du = dφ̃₊ ∘ φ̃₊ - dφ̃₋ ∘ φ̃₋; dx = du W_hᵀ, dW_h += xᵀ du
          host::CMatMap<T> Wh(w + h * d * d, d, d);
          host::MatMap<T> dW(c.dfeature.data() + bh * d * d, d, d);
          to_exponent_grad(Pq, dPq, n, d);
          to_exponent_grad(Pk, dPk, n, d);
          dQ.noalias() = dPq.leftCols(d) * Wh.transpose();
          dK.noalias() = dPk.leftCols(d) * Wh.transpose();
          // masked rows have du = 0 (φ = 0 there), so their q, k add nothing
          dW.noalias() = Q.transpose() * dPq.leftCols(d);
          dW.noalias() += K.transpose() * dPk.leftCols(d);
        } else {
          // φ(q), φ(k) elementwise  =>  dq = dφ(q) ∘ φ'(q), dk = dφ(k) ∘ φ'(k)
          (void)Q;
          (void)K;
          for (index_t i = 0; i < n; ++i)
            for (index_t e = 0; e < d; ++e) {
              dQ(i, e) = dPq(i, e) * Traits::slope(Pq(i, e));
              dK(i, e) = dPk(i, e) * Traits::slope(Pk(i, e));
            }
        }
      }

      if constexpr (kLearnable) {  // dW_h = Σ_b dW_{b,h}: kept apart above so threads never race
        T* gw = feature_params(g).data;  // (H, d, d)
        for (index_t bh = 0; bh < BHi; ++bh) {
          const index_t h = bh % H;
          host::MatMap<T>(gw + h * d * d, d, d) += host::CMatMap<T>(c.dfeature.data() + bh * d * d, d, d);
        }
      }
    }
    // Masked rows of dqkv are 0 by construction, hence so are masked rows of dx.
    qkv_.backward(qkv_params(p), c.qkv_ctx,
                  TokensView<const T, B>(view_of<T, B>(c.dqkv.data(), c.qkv_layout)), dx,
                  qkv_params(g));
  }

  template <class P>
  P qkv_params(P p) const { return p.sub(0, qkv_.param_count()); }
  template <class P>
  P feature_params(P p) const { return p.sub(qkv_.param_count(), feature_count()); }

 private:
  // The device path (backend::Cuda): the same sums as the functors of
  // ops/linear_attention_rows.hpp, one thread per element, every sum over tokens in order.
  template <class B>
  void forward_device(const T* w, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    namespace la = ops::linattn;
    const index_t D = o_.dim, H = o_.heads, d = D / H, m = kExpansion * d, rows = x.total(), BH = x.batch * H;
    const la::Dims s{rows, x.batch, H, d, m, ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of)};
    T *pq = c.phi_q.data(), *pk = c.phi_k.data();
    if constexpr (kLearnable) {
      ops::device::for_each(rows * D, la::HedgehogProject<T>{s, c.qkv.data(), w, pq, pk}, "hedgehog features");
      ops::device::for_each(BH * d, la::HedgehogKeyShift<T>{s, pk, x.keep, c.key_shift.data()}, "hedgehog key shift");
      ops::device::for_each(rows * H, la::HedgehogExp<T>{s, x.keep, c.key_shift.data(), pq, pk, c.den.data()},
                            "hedgehog exponentials");
    } else {
      ops::device::for_each(rows * D, la::Features<T, Traits>{s, c.qkv.data(), x.keep, pq, pk}, "linear attention features");
    }
    ops::device::for_each(BH * m * d, la::State<T>{s, c.qkv.data(), pk, c.state.data(), c.norm.data()},
                          "linear attention state");
    ops::device::for_each(rows * H, la::Output<T>{s, pq, c.state.data(), c.norm.data(), x.keep, T(o_.eps), kLearnable,
                                                  c.den.data(), pre.data}, "linear attention output");
  }
  template <class B>
  void backward_device(const T* w, Ctx<B>& c, const T* dpre, T* gw) const {
    namespace la = ops::linattn;
    const index_t D = o_.dim, H = o_.heads, d = D / H, m = kExpansion * d, rows = c.qkv_layout.total(), BH = c.batch * H;
    const la::Dims s{rows, c.batch, H, d, m, c.dev_offsets.data()};
    T *dpq = c.dphi_q.data(), *dpk = c.dphi_k.data(), *dqkv = c.dqkv.data();
    ops::device::for_each(rows * H, la::DNum<T>{s, dpre, c.out, c.den.data(), c.keep, c.dnum.data(), c.dden.data()},
                          "linear attention: dnum");
    ops::device::for_each(rows * H * m, la::DPhiQ<T>{s, c.dnum.data(), c.dden.data(), c.state.data(), c.norm.data(), dpq},
                          "linear attention: dphi(q)");
    ops::device::for_each(BH * m * d, la::DState<T>{s, c.phi_q.data(), c.dnum.data(), c.dden.data(), c.dstate.data(),
                                                    c.dnorm.data()}, "linear attention: dstate");
    ops::device::for_each(rows * H * m, la::DPhiK<T>{s, c.qkv.data(), c.dstate.data(), c.dnorm.data(), c.keep, dpk},
                          "linear attention: dphi(k)");
    ops::device::for_each(rows * D, la::DV<T>{s, c.phi_k.data(), c.dstate.data(), dqkv}, "linear attention: dv");
    if constexpr (kLearnable) {
      ops::device::for_each(rows * D, la::HedgehogExponentGrad<T>{s, c.phi_q.data(), c.phi_k.data(), dpq, dpk},
                            "hedgehog: exponent gradient");
      ops::device::for_each(rows * D, la::HedgehogDx<T>{s, w, dpq, dpk, dqkv}, "hedgehog: dq, dk");
      ops::device::for_each(H * d * d, la::HedgehogDw<T>{s, c.qkv.data(), dpq, dpk, gw}, "hedgehog: dW");
    } else {
      (void)w;
      (void)gw;
      ops::device::for_each(rows * D, la::DFeatures<T, Traits>{s, c.phi_q.data(), c.phi_k.data(), dpq, dpk, dqkv},
                            "linear attention: dq, dk");
    }
  }

  std::size_t feature_count() const {
    if constexpr (kLearnable) {
      const index_t d = o_.dim / o_.heads;
      return static_cast<std::size_t>(o_.heads * d * d);
    } else {
      return 0;
    }
  }

  // w (H, d, d) = I per head.
  template <class U>
  static void identity_per_head(U* w, index_t H, index_t d) {
    std::fill(w, w + H * d * d, U(0));
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < d; ++i) w[(h * d + i) * d + i] = U(1);
  }

  // Phi (n, m) = φ(X) for one head's rows, X (n, d) with row stride ldx; masked rows 0.
  template <class PhiMap>
  static void elementwise_features(const T* x, index_t ldx, PhiMap& Phi, index_t n,
                                   const std::uint8_t* keep) {
    for (index_t i = 0; i < n; ++i) {
      if (keep && !keep[i]) {
        Phi.row(i).setZero();
        continue;
      }
      Traits::values(x + i * ldx, &Phi(i, 0), Phi.cols());
    }
  }

  // Hedgehog without overflow. With u = x W_h and f_c the c-th entry of [u, -u], the plain
  // features e^{f_c} overflow float for |u| > ~88. For feature c, a scale common to all keys
  // (e^{-b_c} on S_c and z_c) is undone by e^{+b_c} on every query's feature c, and a scale
  // per query (e^{-a_i}) cancels in y_i's ratio once eps is scaled with it:
  //   y_i = Σ_c φ̃q_ic S̃_c / (Σ_c φ̃q_ic z̃_c + eps e^{-a_i}),
  //   φ̃k_jc = e^{f_jc - b_c},  b_c = max_{kept j} f_jc;  φ̃q_ic = e^{f_ic + b_c - a_i},
  //   a_i = max_c (f_ic + b_c).
  // Every φ̃ <= 1 and every z̃_c >= 1 (its largest key gives e^0), so the denominator is >= 1:
  // nothing overflows and it never underflows to 0/0. a_i >= 0 (b_c + b_{c+d} >= 0), so
  // eps e^{-a_i} <= eps. The shifts are constants for backward: y does not depend on them.
  //
  // Keys: Phi (n, m) = φ̃k of X (n, d) (row stride ldx); key_shift (m) = b; masked rows 0.
  template <class PhiMap>
  static void hedgehog_keys(const T* x, index_t ldx, PhiMap& Phi, index_t n, const T* wh,
                            const std::uint8_t* keep, T* key_shift) {
    const index_t d = Phi.cols() / 2;
    host::CStridedMap<T> X(x, n, d, Eigen::OuterStride<>(ldx));
    host::CMatMap<T> Wh(wh, d, d);
    Phi.leftCols(d).noalias() = X * Wh;  // u, exponentiated in place below
    bool any = false;
    for (index_t i = 0; i < n; ++i) {
      if (keep && !keep[i]) continue;
      for (index_t e = 0; e < d; ++e) {
        const T u = Phi(i, e);
        key_shift[e] = any ? std::max(key_shift[e], u) : u;
        key_shift[d + e] = any ? std::max(key_shift[d + e], -u) : -u;
      }
      any = true;
    }
    if (!any) std::fill(key_shift, key_shift + 2 * d, T(0));
    for (index_t i = 0; i < n; ++i) {
      if (keep && !keep[i]) {
        Phi.row(i).setZero();
        continue;
      }
      // [e^{u - b₊}, e^{-u - b₋}] on the whole row (Eigen's vectorised exp); the second half
      // first, since the first overwrites u.
      const CArr Bp(key_shift, d), Bm(key_shift + d, d);
      Arr U(&Phi(i, 0), d), Neg(&Phi(i, d), d);
      Neg = (-U - Bm).exp();
      U = (U - Bp).exp();
    }
  }
  // Queries: Phi (n, m) = φ̃q of X (n, d) given the keys' b (m); row_shift (n) = a; masked
  // rows 0 (shift 0).
  template <class PhiMap>
  static void hedgehog_queries(const T* x, index_t ldx, PhiMap& Phi, index_t n, const T* wh,
                               const std::uint8_t* keep, const T* key_shift, T* row_shift) {
    const index_t d = Phi.cols() / 2;
    host::CStridedMap<T> X(x, n, d, Eigen::OuterStride<>(ldx));
    host::CMatMap<T> Wh(wh, d, d);
    Phi.leftCols(d).noalias() = X * Wh;  // u, exponentiated in place below
    for (index_t i = 0; i < n; ++i) {
      if (keep && !keep[i]) {
        Phi.row(i).setZero();
        row_shift[i] = T(0);
        continue;
      }
      T a = Phi(i, 0) + key_shift[0];
      for (index_t e = 0; e < d; ++e)
        a = std::max({a, Phi(i, e) + key_shift[e], -Phi(i, e) + key_shift[d + e]});
      row_shift[i] = a;
      const CArr Bp(key_shift, d), Bm(key_shift + d, d);
      Arr U(&Phi(i, 0), d), Neg(&Phi(i, d), d);
      Neg = (-U + Bm - a).exp();
      U = (U + Bp - a).exp();
    }
  }

  using Arr = host::ArrMap<T>;
  using CArr = host::CArrMap<T>;

  // In place over dPhi's first d columns: du = dφ₊ ∘ φ₊ - dφ₋ ∘ φ₋ (Hedgehog).
  template <class PhiMap, class DPhiMap>
  static void to_exponent_grad(const PhiMap& Phi, DPhiMap& dPhi, index_t n, index_t d) {
    for (index_t i = 0; i < n; ++i)
      for (index_t e = 0; e < d; ++e)
        dPhi(i, e) = dPhi(i, e) * Phi(i, e) - dPhi(i, d + e) * Phi(i, d + e);
  }


  LinearAttentionOptions o_;
  layers::Linear<T> qkv_;
};

template <class T = float, class Feature = feature::Elu1>
using LinearAttention = Projected<LinearAttentionCore<T, Feature>>;

static_assert(Mixer<LinearAttention<float>, backend::Host>);
static_assert(Mixer<LinearAttention<double>, backend::Host>);
static_assert(Mixer<LinearAttention<float, feature::Relu>, backend::Host>);
static_assert(Mixer<LinearAttention<double, feature::Hedgehog>, backend::Host>);

// Starts a linear-attention student from a softmax-attention teacher: copies the teacher's
// qkv and proj tensors (same layout, same names) into the student's slice. Hedgehog's feature
// weight is left as it is (call student.init(...) for the identity first).
// teacher_params, student_params: each module's own parameter slice.
template <class T, class Feature, class Policy>
void init_from_attention(const attention::SoftmaxAttention<T, Policy>& teacher,
                         std::type_identity_t<ParamsView<const T, backend::Host>> teacher_params,
                         const LinearAttention<T, Feature>& student,
                         std::type_identity_t<ParamsView<T, backend::Host>> student_params) {
  const auto& to = teacher.options();
  const auto& so = student.options();
  check(to.dim == so.dim && to.heads == so.heads && to.qkv_bias == so.qkv_bias,
        "init_from_attention: expected the teacher's width, heads and qkv bias (", to.dim, ", ",
        to.heads, ", ", to.qkv_bias, "), found ", so.dim, ", ", so.heads, ", ", so.qkv_bias,
        " in LinearAttention '", so.name, "'");
  check(teacher_params.size == teacher.param_count(), "init_from_attention: expected a teacher slice of ",
        teacher.param_count(), " values, found ", teacher_params.size);
  check(student_params.size == student.param_count(), "init_from_attention: expected a student slice of ",
        student.param_count(), " values, found ", student_params.size);
  auto copy = [](ParamsView<const T, backend::Host> from, ParamsView<T, backend::Host> to_) {
    std::copy(from.data, from.data + from.size, to_.data);
  };
  const auto& core = student.core();  // the student's slice: the core's parameters, then proj
  const auto& tcore = teacher.core();  // the teacher's too: qkv, then proj
  copy(tcore.qkv_params(teacher_params.sub(0, tcore.param_count())),
       core.qkv_params(student_params.sub(0, core.param_count())));
  copy(teacher_params.sub(teacher.proj_param_offset(), teacher.param_count() - teacher.proj_param_offset()),
       student_params.sub(student.proj_param_offset(), student.param_count() - student.proj_param_offset()));
}

}  // namespace seqswap::mixers
