// Multi-head softmax attention (timm's ViT Attention):
//   Attn(x) = Proj(concat_h softmax(Q_h K_hᵀ / √d) V_h),  [Q K V] = x W_qkvᵀ + b_qkv
// over ragged token batches. Masked keys are excluded from every softmax; rows of masked
// queries are zero in the pre-projection output and in the output. The Policy tag
// (attention/policies.hpp) may drop further keys per row: softmax over the rest.
#pragma once
#include "seqswap/layers/output_projection.hpp"
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>

#include "seqswap/attention/policies.hpp"
#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/ops/mask.hpp"

namespace seqswap::attention {

struct SoftmaxAttentionOptions {
  index_t dim = 0;
  index_t heads = 1;
  bool qkv_bias = true;
  std::string name = "attn";
  index_t top_k = 0;       // sparse::TopK: keys kept per query row; 0 = all
  double threshold = 0.0;  // sparse::Threshold: τ in [0, 1], drop p < τ / N_kept; 0 = none
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
template <>
struct PolicyTraits<sparse::TopK> {
  static constexpr const char* name = "top_k";
};
template <>
struct PolicyTraits<sparse::Threshold> {
  static constexpr const char* name = "threshold";
};

template <class T = float, class Policy = sparse::Dense>
class SoftmaxAttention : public layers::ProjectedMixer<SoftmaxAttention<T, Policy>, T> {
  static_assert(sizeof(PolicyTraits<Policy>) > 0);
  static constexpr bool kDense = std::is_same_v<Policy, sparse::Dense>;
  static constexpr bool kTopK = std::is_same_v<Policy, sparse::TopK>;
  static constexpr bool kThreshold = std::is_same_v<Policy, sparse::Threshold>;

 public:
  using scalar_type = T;
  using policy_type = Policy;
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
    Buffer<T> select;                 // (threads, n_max) sparse policies' per-row scratch
    const std::uint8_t* keep = nullptr;
    const index_t* offsets = nullptr;
    index_t batch = 0;
    index_t heads = 0;

    TokensView<const T, B> pre_projection() const {
      return {pre.data(), pre_layout.offsets.data(), pre_layout.batch, pre_layout.dim, keep};
    }
  };

  SoftmaxAttention() = default;
  explicit SoftmaxAttention(SoftmaxAttentionOptions o) : o_(std::move(o)) {
    check(o_.heads > 0 && o_.dim % o_.heads == 0, "SoftmaxAttention '", o_.name,
          "': expected width divisible by heads, found width ", o_.dim, " and ", o_.heads,
          " heads");
    check(o_.top_k >= 0, "SoftmaxAttention '", o_.name, "': expected top_k >= 0, found ", o_.top_k);
    check(o_.threshold >= 0.0 && o_.threshold <= 1.0, "SoftmaxAttention '", o_.name,
          "': expected threshold in [0, 1], found ", o_.threshold);
    // An option the policy ignores is a configuration mistake, not a no-op to accept silently.
    check(kTopK || o_.top_k == 0, "SoftmaxAttention '", o_.name, "': top_k = ", o_.top_k,
          " needs the policy sparse::TopK, found '", PolicyTraits<Policy>::name, "'");
    check(kThreshold || o_.threshold == 0.0, "SoftmaxAttention '", o_.name, "': threshold = ",
          o_.threshold, " needs the policy sparse::Threshold, found '", PolicyTraits<Policy>::name,
          "'");
    qkv_ = layers::Linear<T>({.in = o_.dim, .out = 3 * o_.dim, .bias = o_.qkv_bias, .name = "qkv"});
    proj_ = layers::Linear<T>({.in = o_.dim, .out = o_.dim, .bias = true, .name = "proj"});
  }
  const SoftmaxAttentionOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "softmax_attention"; }
  static constexpr const char* policy_name() { return PolicyTraits<Policy>::name; }

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
    c.heads = H;
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
    index_t n_max = 0;
    if constexpr (!kDense) {
      for (index_t b = 0; b < x.batch; ++b) n_max = std::max(n_max, x.length(b));
      c.select.resize(static_cast<std::size_t>(host::max_threads() * n_max));
    }

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
      if constexpr (kDense) {
        for (index_t i = 0; i < n; ++i) masked_softmax_row(pr + i * n, n, keep, i);
      } else {
        T* sel = c.select.data() + static_cast<std::size_t>(host::thread_id() * n_max);
        const index_t n_kept = keep ? index_t(std::count_if(keep, keep + n, [](std::uint8_t v) { return v != 0; })) : n;
        for (index_t i = 0; i < n; ++i) sparse_softmax_row(pr + i * n, n, keep, i, n_kept, sel);
      }
      host::StridedMap<T> O(c.pre.data() + t0 * D + h * d, n, d, Eigen::OuterStride<>(D));
      O.noalias() = P * V;
    }

    proj_.forward(proj_params(p), TokensView<const T, B>(view_of<T, B>(c.pre.data(), c.pre_layout)),
                  y, c.proj_ctx);
    if (x.keep) ops::zero_masked_rows(y.data, rows, D, x.keep);
  }

  // backward / backward_pre come from layers::ProjectedMixer; both land here, starting from dy
  // (through the projection) or from dpre_in (the pre-projection gradient).
  template <class B>
  void backward_impl(ParamsView<const T, B> p, Ctx<B>& c, const T* dy_data, const T* dpre_in,
                     TokensView<T, B> dx, ParamsView<T, B> g) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H;
    const index_t rows = c.qkv_layout.total();
    const T scale = T(1) / std::sqrt(T(d));
    c.dqkv.resize(static_cast<std::size_t>(rows * 3 * D));
    layers::projection_backward(proj_, proj_params(p), proj_params(g), c.proj_ctx, dy_data, dpre_in, c.pre_layout,
                                c.keep, o_.dim, c.dy_masked, c.dpre);

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
      // P = softmax(S)  =>  dS = P ∘ (dP - rowsum(dP ∘ P)); times the scale of S = scale Q Kᵀ.
      // Sparse policies: P is the softmax over the selected keys (selection fixed) and 0 on the
      // others, so the same line gives their gradient, 0 on every dropped entry.
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
  // In place: row <- the policy's sparse softmax over kept keys. n_kept = kept keys in the
  // sequence; sel (n) is scratch.
  void sparse_softmax_row(T* row, index_t n, const std::uint8_t* keep, index_t i, index_t n_kept,
                          T* sel) const {
    if constexpr (kTopK) {
      const index_t k = o_.top_k;
      if (k > 0 && k < n_kept && !(keep && !keep[i])) {
        // Keep the k largest logits (ties: lower key index first); the rest leave the softmax
        // like masked keys.
        index_t m = 0;
        for (index_t j = 0; j < n; ++j)
          if (!keep || keep[j]) sel[m++] = row[j];
        std::nth_element(sel, sel + (k - 1), sel + m, std::greater<T>());
        const T kth = sel[k - 1];
        index_t above = 0;
        for (index_t j = 0; j < m; ++j) above += sel[j] > kth;
        index_t ties = k - above;
        for (index_t j = 0; j < n; ++j) {
          if (keep && !keep[j]) continue;
          if (row[j] > kth) continue;
          if (row[j] == kth && ties > 0) {
            --ties;
            continue;
          }
          row[j] = -std::numeric_limits<T>::infinity();
        }
      }
      masked_softmax_row(row, n, keep, i);
    } else if constexpr (kThreshold) {
      masked_softmax_row(row, n, keep, i);
      if (o_.threshold <= 0.0 || (keep && !keep[i])) return;
      // Drop p < τ / N_kept; the row's largest entry always stays (rounding at τ = 1).
      T mx = 0;
      for (index_t j = 0; j < n; ++j) mx = std::max(mx, row[j]);
      const T cut = std::min(T(o_.threshold / double(n_kept)), mx);
      T sum = 0;
      for (index_t j = 0; j < n; ++j) {
        if (row[j] < cut) row[j] = T(0);
        sum += row[j];
      }
      const T inv = T(1) / sum;
      for (index_t j = 0; j < n; ++j) row[j] *= inv;
    } else {
      static_assert(dependent_false<Policy>, "SoftmaxAttention: sparsity policy without a row rule");
    }
    (void)sel;
  }

  SoftmaxAttentionOptions o_;
  layers::Linear<T> qkv_, proj_;
};

static_assert(Mixer<SoftmaxAttention<float>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double, sparse::TopK>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double, sparse::Threshold>, backend::Host>);

}  // namespace seqswap::attention
