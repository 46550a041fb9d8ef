// Multi-head softmax attention (timm's ViT Attention):
//   Attn(x) = Proj(concat_h softmax(Q_h K_hᵀ / √d) V_h),  [Q K V] = x W_qkvᵀ + b_qkv
// over ragged token batches. Masked keys are excluded from every softmax; rows of masked
// queries are zero in the pre-projection output and in the output. The Policy tag
// (attention/policies.hpp) may drop further keys per row: softmax over the rest.
//
// A composition like every mixer: SoftmaxAttention<T, Policy> =
// layers::Projected<SoftmaxAttentionCore<T, Policy>>. The core is qkv and the attention
// itself, x -> concat_h P_h V_h (the pre-projection output); the output projection "proj",
// the masked-rows tail and the two backward entries come from Projected.
#pragma once
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
#include "seqswap/layers/output_projection.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/flash_attention.hpp"
#include "seqswap/ops/mask.hpp"
#include "seqswap/ops/small_gemm.hpp"

namespace seqswap::attention {

struct SoftmaxAttentionOptions {
  index_t dim = 0;
  index_t heads = 1;
  bool qkv_bias = true;
  std::string name = "attn";
  index_t top_k = 0;       // sparse::TopK: keys kept per query row; 0 = all
  double threshold = 0.0;  // sparse::Threshold: τ in [0, 1], drop p < τ / N_kept; 0 = none
  // Memory: a forward over sequences of at most this many tokens keeps every softmax row
  // (B·H·n² values) for backward and for the attention maps (analysis/attention_maps.hpp);
  // longer sequences take the memory-bounded path, which keeps nothing quadratic: it walks
  // query blocks of `query_block` rows (scores in a per-thread block × n scratch) and its
  // backward recomputes each block's scores. 512 and 64: measured (B 8, D 192, 3 heads, two
  // threads, forward + backward: storing wins by 10% at n = 384, the bounded path by 20% at
  // n = 1024; blocks of 64 rows beat 16/32/128 at n = 4096), docs/performance.md.
  index_t store_probs_up_to = 512;
  index_t query_block = 64;
  // The per-head products (QKᵀ, PV and the four of backward) of a sequence whose K panel
  // (n · d values) takes at most this many bytes run in ops::small_gemm's register tiles; larger
  // heads go through Eigen's blocked GEMM. -1 (the default): this CPU's L1 data cache
  // (host::l1_data_bytes; 32 KB on Zen 3 and 4, 48 KB on Zen 5): measured per head on one Zen 3
  // thread, the tiles take 0.54x Eigen's time at n 50, d 16 and 0.95x at n 128, d 64 (a 32 KB
  // panel), but 1.07x at n 197, d 64 and 1.8x at n 1024, d 64 (ops/small_gemm.hpp): they win
  // while the panel stays in L1. 0: always Eigen.
  index_t small_head_bytes = -1;
};

template <class T = float, class Policy = sparse::Dense>
class SoftmaxAttentionCore {
  using Rule = sparse::RowRule<Policy>;  // the policy's row rule (a delegate class)
  static_assert(sizeof(Rule) > 0);
  static constexpr bool kTopK = std::is_same_v<Policy, sparse::TopK>;
  static constexpr bool kThreshold = std::is_same_v<Policy, sparse::Threshold>;

 public:
  using scalar_type = T;
  using policy_type = Policy;
  using Options = SoftmaxAttentionOptions;
  // What the attention maps (analysis/attention_maps.hpp) read: probs, prob_offsets, stored,
  // qkv_layout (the token offsets), keep and heads.
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> qkv_ctx;
    Layout qkv_layout;
    Buffer<T, B> qkv;                    // (rows, 3D)
    Buffer<T, B> probs;                  // Σ_b H n_b²: softmax rows per sequence and head (stored path)
    std::vector<std::size_t> prob_offsets;  // (B+1) into probs; empty after a memory-bounded forward
    bool stored = true;               // which path the last forward took
    const T* pre = nullptr;           // (rows, D) the forward's output (Projected's; not owned)
    Buffer<T, B> dqkv;                   // backward scratch
    Buffer<T, B> scratch;                // (threads, 2 · rows · n_max) per-thread scores / dP blocks
    Buffer<T, B> select;                 // (threads, n_max) sparse policies' per-row scratch
    Buffer<T, B> packed;                 // (threads, 2 · d · n_max) one head's Kᵀ and Vᵀ
    const std::uint8_t* keep = nullptr;
    const index_t* offsets = nullptr;
    index_t batch = 0;
    index_t heads = 0;
    // backend::Cuda (the streamed kernels of ops/flash_attention.hpp; nothing quadratic kept):
    Buffer<ops::flash::RowStats<T>, B> stats;  // (rows · heads) each row's max and normaliser
    Buffer<T, B> delta;                         // (rows · heads) backward scratch
    Buffer<index_t, B> dev_offsets;             // the token offsets on the device
    Offsets dev_offsets_of;
  };

  SoftmaxAttentionCore() = default;
  explicit SoftmaxAttentionCore(SoftmaxAttentionOptions o) : o_(std::move(o)) {
    check(o_.heads > 0 && o_.dim % o_.heads == 0, "SoftmaxAttention '", o_.name,
          "': expected width divisible by heads, found width ", o_.dim, " and ", o_.heads,
          " heads");
    check(o_.top_k >= 0, "SoftmaxAttention '", o_.name, "': expected top_k >= 0, found ", o_.top_k);
    check(o_.threshold >= 0.0 && o_.threshold <= 1.0, "SoftmaxAttention '", o_.name,
          "': expected threshold in [0, 1], found ", o_.threshold);
    // An option the policy ignores is a configuration mistake, not a no-op to accept silently.
    check(kTopK || o_.top_k == 0, "SoftmaxAttention '", o_.name, "': top_k = ", o_.top_k,
          " needs the policy sparse::TopK, found '", Rule::name, "'");
    check(kThreshold || o_.threshold == 0.0, "SoftmaxAttention '", o_.name, "': threshold = ",
          o_.threshold, " needs the policy sparse::Threshold, found '", Rule::name,
          "'");
    check(o_.small_head_bytes >= -1, "SoftmaxAttention '", o_.name,
          "': expected small_head_bytes >= 0 (or -1: the L1 data cache), found ", o_.small_head_bytes);
    check(o_.query_block > 0 && o_.store_probs_up_to >= 0, "SoftmaxAttention '", o_.name,
          "': expected query_block > 0 and store_probs_up_to >= 0, found ", o_.query_block, " and ",
          o_.store_probs_up_to);
    qkv_ = layers::Linear<T>({.in = o_.dim, .out = 3 * o_.dim, .bias = o_.qkv_bias, .name = "qkv"});
  }
  const SoftmaxAttentionOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "softmax_attention"; }
  static constexpr const char* policy_name() { return Rule::name; }

  std::size_t param_count() const { return qkv_.param_count(); }
  index_t width() const { return o_.dim; }  // of the pre-projection output
  // qkv per token, plus QKᵀ and PV: 2·n²·D each per sequence of n tokens (proj: Projected's).
  double flops(const Layout& in) const {
    return 2.0 * double(param_count()) * double(in.total()) + 4.0 * double(o_.dim) * in.pair_count();
  }
  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    qkv_.visit_params(f, base, offset);
  }

  // x (rows, D) -> pre (rows, D) = concat_h P_h V_h; rows of masked queries zero
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre,
               Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, rows = x.total();
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.heads = H;
    c.qkv_layout = Layout{x.batch, 3 * D, {x.offsets, x.offsets + x.batch + 1}};
    c.qkv.resize(static_cast<std::size_t>(rows * 3 * D));
    c.pre = pre.data;
    if constexpr (backend::is_cuda<B>) {  // streamed: no probabilities kept, so no attention maps
      c.stored = false;
      c.prob_offsets.clear();
      qkv_.forward(p, x, view_of<T, B>(c.qkv.data(), c.qkv_layout), c.qkv_ctx);
      c.stats.resize(static_cast<std::size_t>(rows * H));
      const auto fp = flash_problem(c.qkv.data(), ops::device::device_offsets(c.qkv_layout.offsets.data(), c.batch,
                                                                             c.dev_offsets, c.dev_offsets_of),
                                    c.keep, c.batch);
      ops::device::attention_forward(fp, rows, pre.data, c.stats.data());
    } else {
      forward_host(p, x, pre, c);
    }
  }

  // dpre (rows, D), zero at masked rows -> dx (assigned), g (qkv's, accumulated)
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>) {
      const index_t rows = c.qkv_layout.total();
      c.dqkv.resize(static_cast<std::size_t>(rows * 3 * o_.dim));
      c.delta.resize(static_cast<std::size_t>(rows * o_.heads));
      const auto fp = flash_problem(c.qkv.data(), c.dev_offsets.data(), c.keep, c.batch);
      ops::device::attention_backward(fp, rows, c.stats.data(), c.pre, dpre.data, c.delta.data(), c.dqkv.data());
      qkv_.backward(p, c.qkv_ctx, TokensView<const T, B>(view_of<T, B>(c.dqkv.data(), c.qkv_layout)), dx, g);
    } else {
      backward_host(p, c, dpre, dx, g);
    }
  }

  // The streamed kernels' problem (ops/flash_attention.hpp) for this layer's options and policy.
  ops::flash::Problem<T> flash_problem(const T* qkv, const index_t* offsets, const std::uint8_t* keep,
                                       index_t batch) const {
    ops::flash::Problem<T> fp{.qkv = qkv, .offsets = offsets, .keep = keep, .batch = batch, .dim = o_.dim,
                              .heads = o_.heads, .rule = ops::flash::Rule::dense, .top_k = o_.top_k,
                              .threshold = o_.threshold};
    if constexpr (kTopK) fp.rule = ops::flash::Rule::top_k;
    if constexpr (kThreshold) fp.rule = ops::flash::Rule::threshold;
    return fp;
  }

  // The core's slice is qkv's (weight, then bias).
  template <class P>
  P qkv_params(P p) const { return p.sub(0, qkv_.param_count()); }

 private:
  // The host forward: the softmax rows of each (sequence, head, query block) through Eigen.
  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H;
    index_t n_max = 0;
    for (index_t b = 0; b < x.batch; ++b) n_max = std::max(n_max, x.length(b));
    c.stored = n_max <= o_.store_probs_up_to;
    const index_t m = block_rows(c.stored, n_max);
    const int threads = host::max_threads();
    if (c.stored) {
      c.prob_offsets.assign(1, 0);
      for (index_t b = 0; b < x.batch; ++b) {
        const auto n = static_cast<std::size_t>(x.length(b));
        c.prob_offsets.push_back(c.prob_offsets.back() + static_cast<std::size_t>(H) * n * n);
      }
      c.probs.resize(c.prob_offsets.back());
    } else {
      c.prob_offsets.clear();  // no maps to read: attention_maps() says so
      c.scratch.resize(static_cast<std::size_t>(threads * m * n_max));
    }
    if constexpr (Rule::kNeedsScratch) c.select.resize(static_cast<std::size_t>(threads * n_max));
    c.packed.resize(static_cast<std::size_t>(threads * 2 * d * n_max));

    qkv_.forward(p, x, view_of<T, B>(c.qkv.data(), c.qkv_layout), c.qkv_ctx);

    // Tasks: (sequence, head, query block); the stored path has one block per sequence.
    const index_t blocks = m > 0 ? (n_max + m - 1) / m : 0;
    const index_t tasks = x.batch * H * blocks;
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(tasks)) if (tasks > 1)
    for (index_t task = 0; task < tasks; ++task) {
      const index_t bh = task / blocks, b = bh / H, h = bh % H, t0 = x.begin(b), n = x.length(b);
      const index_t i0 = (task % blocks) * m;
      if (i0 >= n) continue;
      const index_t mq = std::min(m, n - i0);
      const T* qkv = c.qkv.data() + t0 * 3 * D;
      const int tid = host::thread_id();
      const bool tiled = tiled_head(n);
      T* pr = c.stored ? c.probs.data() + c.prob_offsets[b] + static_cast<std::size_t>(h * n * n)
                       : c.scratch.data() + static_cast<std::size_t>(tid * m * n_max);
      softmax_block(qkv, h, i0, mq, n, x.keep ? x.keep + t0 : nullptr, pr, c, tid, n_max);
      // O = P V
      head_gemm<false>(tiled, {.m = mq, .w = d, .k = n, .a_row = n, .ldb = 3 * D, .ldc = D}, T(1), pr,
                       qkv + 2 * D + h * d, pre.data + (t0 + i0) * D + h * d);
    }
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    const index_t D = o_.dim, H = o_.heads, d = D / H;
    const index_t rows = c.qkv_layout.total();
    const T scale = T(1) / std::sqrt(T(d));
    c.dqkv.resize(static_cast<std::size_t>(rows * 3 * D));

    index_t n_max = 0;
    for (index_t b = 0; b < c.batch; ++b) n_max = std::max(n_max, c.qkv_layout.length(b));
    const index_t m = block_rows(c.stored, n_max);
    const int threads = host::max_threads();
    // Per thread: the block's dP / dS, and (memory-bounded path) its recomputed probabilities.
    const index_t per_thread = (c.stored ? 1 : 2) * m * n_max;
    c.scratch.resize(static_cast<std::size_t>(threads * per_thread));
    c.packed.resize(static_cast<std::size_t>(threads * 2 * d * n_max));

    const index_t BH = c.batch * H;
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(BH)) if (BH > 1)
    for (index_t bh = 0; bh < BH; ++bh) {
      const index_t b = bh / H, h = bh % H, t0 = c.offsets[b], n = c.offsets[b + 1] - t0;
      if (n == 0) continue;
      const T* qkv = c.qkv.data() + t0 * 3 * D;
      T* dqkv = c.dqkv.data() + t0 * 3 * D;
      const T* K = qkv + D + h * d;
      const T* V = qkv + 2 * D + h * d;
      const bool tiled = tiled_head(n);
      T* dK = dqkv + D + h * d;
      T* dV = dqkv + 2 * D + h * d;
      const int tid = host::thread_id();
      T* ds_data = c.scratch.data() + static_cast<std::size_t>(tid * per_thread);
      T* vt = c.packed.data() + static_cast<std::size_t>((2 * tid + 1) * d * n_max);
      ops::transpose_into(V, n, d, 3 * D, vt);  // Vᵀ (d, n)
      for (index_t i0 = 0; i0 < n; i0 += m) {
        const index_t mq = std::min(m, n - i0);
        const T* pr;
        if (c.stored) {
          pr = c.probs.data() + c.prob_offsets[b] + static_cast<std::size_t>(h * n * n);
        } else {  // recompute this block's probabilities, exactly as the forward made them
          T* buf = ds_data + m * n_max;
          softmax_block(qkv, h, i0, mq, n, c.keep ? c.keep + t0 : nullptr, buf, c, tid, n_max);
          pr = buf;
        }
        const T* Qb = qkv + i0 * 3 * D + h * d;
        T* dQb = dqkv + i0 * 3 * D + h * d;
        const T* dOb = dpre.data + (t0 + i0) * D + h * d;
        host::CStridedMap<T> dOm(dOb, mq, d, Eigen::OuterStride<>(D));
        host::CStridedMap<T> Ob(c.pre + (t0 + i0) * D + h * d, mq, d, Eigen::OuterStride<>(D));
        host::CMatMap<T> P(pr, mq, n);
        host::MatMap<T> dS(ds_data, mq, n);
        // O = P V  =>  dV = Pᵀ dO (summed over the query blocks; the first assigns), dP = dO Vᵀ
        const ops::SmallGemmArgs by_key{.m = n, .w = d, .k = mq, .a_row = 1, .a_col = n, .ldb = D, .ldc = 3 * D};
        if (i0 == 0)
          head_gemm<false>(tiled, by_key, T(1), pr, dOb, dV);
        else
          head_gemm<true>(tiled, by_key, T(1), pr, dOb, dV);
        head_gemm<false>(tiled, {.m = mq, .w = n, .k = d, .a_row = D, .ldb = n, .ldc = n}, T(1), dOb, vt, ds_data);
        // P = softmax(S)  =>  dS = P ∘ (dP - rowsum(dP ∘ P)), times the scale of S = scale Q Kᵀ;
        // rowsum(dP ∘ P)_i = dO_i · O_i (O_i = Σ_j P_ij V_j), a d-length dot instead of n.
        // Sparse policies: P is the softmax over the selected keys (selection fixed) and 0 on
        // the others, so the same line gives their gradient, 0 on every dropped entry.
        for (index_t r = 0; r < mq; ++r) {
          const T dot = dOm.row(r).dot(Ob.row(r));
          dS.row(r).array() = P.row(r).array() * (dS.row(r).array() - dot) * scale;
        }
        // S = scale Q Kᵀ  =>  dQ = dS K,  dK = dSᵀ Q (summed over the query blocks)
        head_gemm<false>(tiled, {.m = mq, .w = d, .k = n, .a_row = n, .ldb = 3 * D, .ldc = 3 * D}, T(1), ds_data,
                         K, dQb);
        const ops::SmallGemmArgs by_key_q{.m = n, .w = d, .k = mq, .a_row = 1, .a_col = n, .ldb = 3 * D, .ldc = 3 * D};
        if (i0 == 0)
          head_gemm<false>(tiled, by_key_q, T(1), ds_data, Qb, dK);
        else
          head_gemm<true>(tiled, by_key_q, T(1), ds_data, Qb, dK);
      }
    }
    qkv_.backward(p, c.qkv_ctx, TokensView<const T, B>(view_of<T, B>(c.dqkv.data(), c.qkv_layout)), dx, g);
  }

  // Whether a head of a sequence of n tokens takes the register-tiled products (small_head_bytes).
  bool tiled_head(index_t n) const {
    const index_t limit = o_.small_head_bytes < 0 ? host::l1_data_bytes() : o_.small_head_bytes;
    return n * (o_.dim / o_.heads) * index_t(sizeof(T)) <= limit;
  }
  // C (=, or += with Acc) α A B for one head: ops::small_gemm or ops::blocked_gemm, one contract.
  template <bool Acc>
  static void head_gemm(bool tiled, const ops::SmallGemmArgs& g, T alpha, const T* a, const T* b, T* c) {
    if (tiled)
      ops::small_gemm<Acc>(g, alpha, a, b, c);
    else
      ops::blocked_gemm<Acc>(g, alpha, a, b, c);
  }

  // Query rows per block: the whole sequence when the rows are stored, else query_block.
  index_t block_rows(bool stored, index_t n_max) const {
    return stored ? n_max : std::min(o_.query_block, n_max);
  }

  // P (mq, n) <- the policy's softmax rows of queries i0 .. i0+mq-1 of one sequence and head:
  // P = scale · Q_blk Kᵀ, then each row in place. qkv: the sequence's (n, 3D) rows; keep: its
  // keep flags or nullptr. Deterministic, so backward's recomputation equals the forward's rows.
  template <class C>
  void softmax_block(const T* qkv, index_t h, index_t i0, index_t mq, index_t n,
                     const std::uint8_t* keep, T* P, C& c, int tid, index_t n_max) const {
    const index_t D = o_.dim, d = D / o_.heads;
    const T scale = T(1) / std::sqrt(T(d));
    // S = scale · Q_blk Kᵀ, through this thread's Kᵀ (d, n)
    const bool tiled = tiled_head(n);
    T* kt = c.packed.data() + static_cast<std::size_t>(2 * tid * d * n_max);
    ops::transpose_into(qkv + D + h * d, n, d, 3 * D, kt);
    head_gemm<false>(tiled, {.m = mq, .w = n, .k = d, .a_row = 3 * D, .ldb = n, .ldc = n}, scale,
                     qkv + i0 * 3 * D + h * d, kt, P);
    T* sel = Rule::kNeedsScratch ? c.select.data() + static_cast<std::size_t>(tid * n_max) : nullptr;
    const index_t n_kept =
        keep ? index_t(std::count_if(keep, keep + n, [](std::uint8_t v) { return v != 0; })) : n;
    for (index_t r = 0; r < mq; ++r)
      Rule::apply(P + r * n, n, keep, i0 + r, n_kept, sel, {.top_k = o_.top_k, .threshold = o_.threshold});
  }

  SoftmaxAttentionOptions o_;
  layers::Linear<T> qkv_;
};

template <class T = float, class Policy = sparse::Dense>
using SoftmaxAttention = layers::Projected<SoftmaxAttentionCore<T, Policy>>;

static_assert(layers::MixerCore<SoftmaxAttentionCore<double>>);
static_assert(Mixer<SoftmaxAttention<float>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double, sparse::TopK>, backend::Host>);
static_assert(Mixer<SoftmaxAttention<double, sparse::Threshold>, backend::Host>);

}  // namespace seqswap::attention
