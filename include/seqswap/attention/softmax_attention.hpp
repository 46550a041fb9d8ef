// Multi-head softmax attention (timm's ViT Attention):
//   Attn(x) = Proj(concat_h softmax(Q_h K_hᵀ / √d) V_h),  [Q K V] = x W_qkvᵀ + b_qkv
// over ragged token batches. Masked keys are excluded from every softmax; rows of masked
// queries are zero in the pre-projection output and in the output.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "seqswap/attention/policies.hpp"
#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"

namespace seqswap::attention {

struct SoftmaxAttentionOptions {
  index_t dim = 0;
  index_t heads = 1;
  bool qkv_bias = true;
  std::string name = "attn";
};

template <class Policy>
struct PolicyTraits {
  static_assert(dependent_false<Policy>,
                "SoftmaxAttention: unknown sparsity policy; use a tag from attention/policies.hpp");
};
template <>
struct PolicyTraits<sparse::Dense> {
  static constexpr const char* name = "dense";
};

template <class T = float, class Policy = sparse::Dense>
class SoftmaxAttention {
  static_assert(sizeof(PolicyTraits<Policy>) > 0);

 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> qkv_ctx, proj_ctx;
    Layout qkv_layout, pre_layout;
    Buffer<T> qkv;                    // (rows, 3D)
    Buffer<T> probs;                  // Σ_b H n_b²: softmax rows per sequence and head
    std::vector<std::size_t> prob_offsets;  // (B+1) into probs
    Buffer<T> pre;                    // (rows, D) pre-projection output
    Buffer<T> dpre, dqkv, dy_masked;  // backward scratch
    Buffer<T> scratch;                // (threads, n_max²) per-thread dP
    const std::uint8_t* keep = nullptr;
    const index_t* offsets = nullptr;
    index_t batch = 0;

    TokensView<const T, B> pre_projection() const {
      return {pre.data(), pre_layout.offsets.data(), pre_layout.batch, pre_layout.dim, keep};
    }
  };

  SoftmaxAttention() = default;
  explicit SoftmaxAttention(SoftmaxAttentionOptions o) : o_(std::move(o)) {
    check(o_.heads > 0 && o_.dim % o_.heads == 0, "SoftmaxAttention '", o_.name,
          "': expected width divisible by heads, found width ", o_.dim, " and ", o_.heads,
          " heads");
    qkv_ = layers::Linear<T>({.in = o_.dim, .out = 3 * o_.dim, .bias = o_.qkv_bias, .name = "qkv"});
    proj_ = layers::Linear<T>({.in = o_.dim, .out = o_.dim, .bias = true, .name = "proj"});
  }
  const SoftmaxAttentionOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "softmax_attention"; }

  std::size_t param_count() const { return qkv_.param_count() + proj_.param_count(); }
  // Parameters of the output projection (the part a replacement may reuse).
  std::size_t proj_param_offset() const { return qkv_.param_count(); }

  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.dim, "SoftmaxAttention '", o_.name, "': expected width ", o_.dim,
          ", found ", in.dim);
    out = in;
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const std::string base = join_name(prefix, o_.name);
    qkv_.visit_params(f, base, offset);
    proj_.visit_params(f, base, offset + qkv_.param_count());
  }

  // x (rows, D) -> y (rows, D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H, rows = x.total();
    const T scale = T(1) / std::sqrt(T(d));
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.qkv_layout = Layout{x.batch, 3 * D, {x.offsets, x.offsets + x.batch + 1}};
    c.pre_layout = Layout{x.batch, D, c.qkv_layout.offsets};
    c.qkv.resize(static_cast<std::size_t>(rows * 3 * D));
    c.pre.resize(static_cast<std::size_t>(rows * D));
    c.prob_offsets.assign(1, 0);
    for (index_t b = 0; b < x.batch; ++b) {
      const auto n = static_cast<std::size_t>(x.length(b));
      c.prob_offsets.push_back(c.prob_offsets.back() + static_cast<std::size_t>(H) * n * n);
    }
    c.probs.resize(c.prob_offsets.back());

    qkv_.forward(qkv_params(p), x, view_of<T, B>(c.qkv.data(), c.qkv_layout), c.qkv_ctx);

    const index_t BH = x.batch * H;
#pragma omp parallel for schedule(dynamic, 1) if (BH > 1)
    for (index_t bh = 0; bh < BH; ++bh) {
      const index_t b = bh / H, h = bh % H, t0 = x.begin(b), n = x.length(b);
      if (n == 0) continue;
      const T* qkv = c.qkv.data() + t0 * 3 * D;
      host::CStridedMap<T> Q(qkv + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::CStridedMap<T> K(qkv + D + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::CStridedMap<T> V(qkv + 2 * D + h * d, n, d, Eigen::OuterStride<>(3 * D));
      T* pr = c.probs.data() + c.prob_offsets[b] + static_cast<std::size_t>(h * n * n);
      host::MatMap<T> P(pr, n, n);
      P.noalias() = (Q * K.transpose()) * scale;
      const std::uint8_t* keep = x.keep ? x.keep + t0 : nullptr;
      for (index_t i = 0; i < n; ++i) masked_softmax_row(pr + i * n, n, keep, i);
      host::StridedMap<T> O(c.pre.data() + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
      O.noalias() = P * V;
    }

    proj_.forward(proj_params(p), TokensView<const T, B>(view_of<T, B>(c.pre.data(), c.pre_layout)),
                  y, c.proj_ctx);
    if (x.keep) zero_masked_rows(y.data, rows, D, x.keep);
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H;
    const index_t rows = c.qkv_layout.total();
    const T scale = T(1) / std::sqrt(T(d));
    const T* dy_eff = dy.data;
    if (c.keep) {  // y = keep ∘ proj(pre): masked rows pass no gradient
      c.dy_masked.resize(static_cast<std::size_t>(rows * D));
      std::copy(dy.data, dy.data + rows * D, c.dy_masked.data());
      zero_masked_rows(c.dy_masked.data(), rows, D, c.keep);
      dy_eff = c.dy_masked.data();
    }
    c.dpre.resize(static_cast<std::size_t>(rows * D));
    c.dqkv.resize(static_cast<std::size_t>(rows * 3 * D));
    proj_.backward(proj_params(p), c.proj_ctx,
                   TokensView<const T, B>{dy_eff, c.offsets, c.batch, D, c.keep},
                   view_of<T, B>(c.dpre.data(), c.pre_layout), proj_params(g));

    index_t n_max = 0;
    for (index_t b = 0; b < c.batch; ++b) n_max = std::max(n_max, c.pre_layout.length(b));
    const int threads = host::max_threads();
    c.scratch.resize(static_cast<std::size_t>(threads * n_max * n_max));

    const index_t BH = c.batch * H;
#pragma omp parallel for schedule(dynamic, 1) if (BH > 1)
    for (index_t bh = 0; bh < BH; ++bh) {
      const index_t b = bh / H, h = bh % H, t0 = c.offsets[b], n = c.offsets[b + 1] - t0;
      if (n == 0) continue;
      const T* qkv = c.qkv.data() + t0 * 3 * D;
      T* dqkv = c.dqkv.data() + t0 * 3 * D;
      host::CStridedMap<T> Q(qkv + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::CStridedMap<T> K(qkv + D + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::CStridedMap<T> V(qkv + 2 * D + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::StridedMap<T> dQ(dqkv + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::StridedMap<T> dK(dqkv + D + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::StridedMap<T> dV(dqkv + 2 * D + h * d, n, d, Eigen::OuterStride<>(3 * D));
      host::CStridedMap<T> dO(c.dpre.data() + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
      host::CMatMap<T> P(c.probs.data() + c.prob_offsets[b] + static_cast<std::size_t>(h * n * n),
                         n, n);
      host::MatMap<T> dS(c.scratch.data() + static_cast<std::size_t>(host::thread_id() * n_max * n_max),
                         n, n);
      // O = P V  =>  dV = Pᵀ dO,  dP = dO Vᵀ
      dV.noalias() = P.transpose() * dO;
      dS.noalias() = dO * V.transpose();
      // P = softmax(S)  =>  dS = P ∘ (dP - rowsum(dP ∘ P)); times the scale of S = scale Q Kᵀ
      for (index_t i = 0; i < n; ++i) {
        T dot = 0;
        for (index_t j = 0; j < n; ++j) dot += dS(i, j) * P(i, j);
        for (index_t j = 0; j < n; ++j) dS(i, j) = P(i, j) * (dS(i, j) - dot) * scale;
      }
      // S = scale Q Kᵀ  =>  dQ = dS K,  dK = dSᵀ Q
      dQ.noalias() = dS * K;
      dK.noalias() = dS.transpose() * Q;
    }
    qkv_.backward(qkv_params(p), c.qkv_ctx,
                  TokensView<const T, B>(view_of<T, B>(c.dqkv.data(), c.qkv_layout)), dx,
                  qkv_params(g));
  }

  template <class P>
  P qkv_params(P p) const { return p.sub(0, qkv_.param_count()); }
  template <class P>
  P proj_params(P p) const { return p.sub(qkv_.param_count(), proj_.param_count()); }

 private:
  // In place: row <- softmax(row) over kept keys; a masked query's row becomes all zeros.
  static void masked_softmax_row(T* row, index_t n, const std::uint8_t* keep, index_t i) {
    if (keep && !keep[i]) {
      std::fill(row, row + n, T(0));
      return;
    }
    T mx = -std::numeric_limits<T>::infinity();
    for (index_t j = 0; j < n; ++j)
      if (!keep || keep[j]) mx = std::max(mx, row[j]);
    T sum = 0;
    for (index_t j = 0; j < n; ++j) {
      const T e = (!keep || keep[j]) ? std::exp(row[j] - mx) : T(0);
      row[j] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
    for (index_t j = 0; j < n; ++j) row[j] *= inv;
  }
  static void zero_masked_rows(T* y, index_t rows, index_t D, const std::uint8_t* keep) {
    for (index_t t = 0; t < rows; ++t)
      if (!keep[t]) std::fill(y + t * D, y + (t + 1) * D, T(0));
  }

  SoftmaxAttentionOptions o_;
  layers::Linear<T> qkv_, proj_;
};

static_assert(Mixer<SoftmaxAttention<float>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double>, backend::Host>);

}  // namespace seqswap::attention
