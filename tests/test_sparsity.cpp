// Sparsity: the attention's sparse policies (top-k, threshold) pass the conformance test and
// reduce to dense at their neutral settings; the streaming sparsity metrics match rows worked
// out by hand, do not depend on batching, and read a ViT's maps out of its context.
#include <cmath>
#include <numeric>

#include "conformance.hpp"
#include "test_util.hpp"
#include "seqswap/analysis/sparsity_report.hpp"
#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

using namespace seqswap;
using analysis::Metric;
using analysis::Rows;
using analysis::Variant;
using conformance::check_layer;
using Host = backend::Host;

namespace {

template <class Policy>
using Attn = attention::SoftmaxAttention<double, Policy>;

// Forward (and backward) of `a` on random data; returns y, the probabilities, dx and g.
template <class A>
struct Run {
  std::vector<double> y, probs, dx, g;
};
template <class A>
Run<A> run(const A& a, const Layout& l, const std::vector<std::uint8_t>& keep, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<double> p(a.param_count()), x(l.size()), dy(l.size());
  for (auto& v : p) v = rng.normal() * 0.5;
  for (auto& v : x) v = rng.normal();
  for (auto& v : dy) v = rng.normal();
  const std::uint8_t* k = keep.empty() ? nullptr : keep.data();
  typename A::template Ctx<Host> ctx;
  Run<A> r{std::vector<double>(l.size()), {}, std::vector<double>(l.size()),
           std::vector<double>(p.size(), 0.0)};
  a.forward(ParamsView<const double, Host>{p.data(), p.size()}, view_of<const double>(x.data(), l, k),
            view_of<double>(r.y.data(), l, k), ctx);
  r.probs.assign(ctx.core.probs.begin(), ctx.core.probs.end());
  a.backward(ParamsView<const double, Host>{p.data(), p.size()}, ctx,
             view_of<const double>(dy.data(), l, k), view_of<double>(r.dx.data(), l, k),
             ParamsView<double, Host>{r.g.data(), r.g.size()});
  return r;
}

attention::SoftmaxAttentionOptions attn_options(index_t top_k = 0, double threshold = 0.0) {
  return {.dim = 6, .heads = 2, .qkv_bias = true, .name = "attn", .top_k = top_k,
          .threshold = threshold};
}

}  // namespace

TEST_CASE("Sparse attention policies are named", "[attention][sparsity]") {
  CHECK(std::string(sparse::RowRule<sparse::Dense>::name) == "dense");
  CHECK(std::string(sparse::RowRule<sparse::TopK>::name) == "top_k");
  CHECK(std::string(sparse::RowRule<sparse::Threshold>::name) == "threshold");
  CHECK(std::string(Attn<sparse::TopK>::core_type::policy_name()) == "top_k");
}

TEST_CASE("Sparse attention options are checked", "[attention][sparsity]") {
  CHECK_THROWS_AS(Attn<sparse::Dense>(attn_options(3)), Error);           // top_k needs TopK
  CHECK_THROWS_AS(Attn<sparse::Dense>(attn_options(0, 0.5)), Error);      // threshold too
  CHECK_THROWS_AS(Attn<sparse::TopK>(attn_options(-1)), Error);
  CHECK_THROWS_AS(Attn<sparse::Threshold>(attn_options(0, 1.5)), Error);
  CHECK_NOTHROW(Attn<sparse::Threshold>(attn_options(0, 1.0)));
}

TEST_CASE("Top-k attention conforms", "[conformance][attention][sparsity]") {
  const Attn<sparse::TopK> a(attn_options(3));
  for (const auto& in : conformance::standard_layouts(6)) {
    check_layer(a, in, {.keep = {}, .mixer = true});
    check_layer(a, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("Threshold attention conforms", "[conformance][attention][sparsity]") {
  const Attn<sparse::Threshold> a(attn_options(0, 0.5));
  for (const auto& in : conformance::standard_layouts(6)) {
    check_layer(a, in, {.keep = {}, .mixer = true});
    check_layer(a, in, {.keep = conformance::some_mask(in), .mixer = true});
  }
}

TEST_CASE("Top-k with k >= N and threshold 0 equal dense (to rounding)", "[attention][sparsity]") {
  const Attn<sparse::Dense> dense(attn_options());
  const Attn<sparse::TopK> top_all(attn_options(50)), top_more(attn_options(1000));
  const Attn<sparse::Threshold> thr0(attn_options(0, 0.0));
  for (const auto& in : conformance::standard_layouts(6))
    for (const auto& keep : {std::vector<std::uint8_t>{}, conformance::some_mask(in)}) {
      // Different instantiations may contract multiply-adds differently (-march=native, FMA):
      // equal up to rounding, not bit for bit.
      const auto d = run(dense, in, keep, 7);
      for (const auto& s : {run(top_all, in, keep, 7), run(top_more, in, keep, 7)}) {
        CHECK(test_util::rel_error(s.y.data(), d.y) <= 1e-12);
        CHECK(test_util::rel_error(s.probs.data(), d.probs) <= 1e-12);
        CHECK(test_util::rel_error(s.dx.data(), d.dx) <= 1e-12);
        CHECK(test_util::rel_error(s.g.data(), d.g) <= 1e-12);
      }
      const auto t = run(thr0, in, keep, 7);
      CHECK(test_util::rel_error(t.y.data(), d.y) <= 1e-12);
      CHECK(test_util::rel_error(t.probs.data(), d.probs) <= 1e-12);
      CHECK(test_util::rel_error(t.dx.data(), d.dx) <= 1e-12);
      CHECK(test_util::rel_error(t.g.data(), d.g) <= 1e-12);
    }
}

TEST_CASE("Sparse rows are the dense rows restricted and renormalised", "[attention][sparsity]") {
  const Layout in = Layout::ragged({17, 6, 1}, 6);
  const auto keep = conformance::some_mask(in);
  const index_t H = 2, k = 3;
  const double tau = 0.8;
  const auto d = run(Attn<sparse::Dense>(attn_options()), in, keep, 3);
  const auto t = run(Attn<sparse::TopK>(attn_options(k)), in, keep, 3);
  const auto h = run(Attn<sparse::Threshold>(attn_options(0, tau)), in, keep, 3);
  std::size_t off = 0;
  for (index_t b = 0; b < in.batch; ++b) {
    const index_t n = in.length(b), t0 = in.offsets[b];
    index_t n_kept = 0;
    for (index_t j = 0; j < n; ++j) n_kept += keep[t0 + j];
    for (index_t hd = 0; hd < H; ++hd)
      for (index_t i = 0; i < n; ++i, off += std::size_t(n)) {
        if (!keep[t0 + i]) continue;
        // dense row sorted: the k-th largest kept probability
        std::vector<double> row(d.probs.begin() + off, d.probs.begin() + off + n);
        std::vector<double> sorted = row;
        std::sort(sorted.rbegin(), sorted.rend());
        const double kth = sorted[std::size_t(std::min(k, n_kept) - 1)];
        double top_mass = 0, thr_mass = 0;
        for (double v : row) {
          if (v >= kth) top_mass += v;
          if (v >= tau / double(n_kept)) thr_mass += v;
        }
        index_t nonzero = 0;
        for (index_t j = 0; j < n; ++j) {
          const double p = row[std::size_t(j)];
          nonzero += t.probs[off + std::size_t(j)] > 0;
          CHECK(t.probs[off + std::size_t(j)] == Approx(p >= kth ? p / top_mass : 0.0).margin(1e-14));
          CHECK(h.probs[off + std::size_t(j)] ==
                Approx(p >= tau / double(n_kept) ? p / thr_mass : 0.0).margin(1e-14));
        }
        CHECK(nonzero == std::min(k, n_kept));
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Metrics of single rows, by hand.

namespace {
analysis::RowValues metrics_of(const std::vector<double>& a, Variant v = Variant::all_keys,
                               index_t query = 1, index_t grid = 0,
                               analysis::SparsityOptions o = {}) {
  analysis::RowScratch scratch;
  return analysis::row_metrics(a.data(), index_t(a.size()), nullptr, query, grid, o, scratch)[int(v)];
}
double at(const analysis::RowValues& r, Metric m) { return r[int(m)]; }
}  // namespace

TEST_CASE("Sparsity of a uniform row is zero", "[analysis][sparsity]") {
  for (index_t N : {2, 5, 10, 49, 50}) {
    const auto r = metrics_of(std::vector<double>(std::size_t(N), 1.0 / double(N)));
    INFO("N = " << N);
    CHECK(at(r, Metric::entropy_sparsity) == Approx(0.0).margin(1e-12));
    CHECK(at(r, Metric::gini) == Approx(0.0).margin(1e-12));
    CHECK(at(r, Metric::hoyer) == Approx(0.0).margin(1e-12));
    CHECK(at(r, Metric::top_p_width) == Approx(std::ceil(0.9 * double(N)) / double(N)));
    CHECK(at(r, Metric::below_tau) == 0.0);
    CHECK(std::isnan(at(r, Metric::distance)));  // no grid given
  }
}

TEST_CASE("Sparsity of a one-hot row is maximal", "[analysis][sparsity]") {
  for (index_t N : {2, 5, 50}) {
    std::vector<double> a(std::size_t(N), 0.0);
    a[std::size_t(N / 2)] = 1.0;
    const auto r = metrics_of(a);
    INFO("N = " << N);
    CHECK(at(r, Metric::entropy_sparsity) == Approx(1.0));
    CHECK(at(r, Metric::top_p_width) == Approx(1.0 / double(N)));
    CHECK(at(r, Metric::gini) == Approx(double(N - 1) / double(N)));
    CHECK(at(r, Metric::hoyer) == Approx(1.0));
    CHECK(at(r, Metric::below_tau) == Approx(double(N - 1) / double(N)));
  }
  // N = 1 (one kept key): H is defined as 0, so S_ent = 1; Hoyer is defined as 1; Gini's
  // formula gives 0 = (N-1)/N.
  const auto r = metrics_of({1.0});
  CHECK(at(r, Metric::entropy_sparsity) == 1.0);
  CHECK(at(r, Metric::hoyer) == 1.0);
  CHECK(at(r, Metric::gini) == 0.0);
  CHECK(at(r, Metric::top_p_width) == 1.0);
}

TEST_CASE("Sparsity of a two-value row, by hand", "[analysis][sparsity]") {
  // a = (0.4, 0.2, 0.2, 0.2), N = 4:
  //   H = -(0.4 ln 0.4 + 3 · 0.2 ln 0.2) / ln 4 = (0.366516 + 0.965663) / 1.386294 = 0.960964
  //   S_ent = 0.039036
  //   top-p, p = 0.9: masses 0.4, 0.6, 0.8, 1.0 -> k = 4, width 1;  p = 0.5: k = 2, width 0.5
  //   Gini: ascending (0.2, 0.2, 0.2, 0.4), weights 2j-5 = -3, -1, 1, 3:
  //         (−0.6 − 0.2 + 0.2 + 1.2) / 4 = 0.15
  //   Hoyer: ‖a‖₂ = √0.28 = 0.529150, 1/‖a‖₂ = 1.889822: (2 − 1.889822) / (2 − 1) = 0.110178
  //   below τ/N: τ = 0.1 -> 0.025: none; τ = 0.9 -> 0.225: three of four -> 0.75
  const std::vector<double> a = {0.4, 0.2, 0.2, 0.2};
  const auto r = metrics_of(a);
  CHECK(at(r, Metric::entropy_sparsity) == Approx(0.039036).margin(1e-6));
  CHECK(at(r, Metric::top_p_width) == 1.0);
  CHECK(at(r, Metric::gini) == Approx(0.15).margin(1e-12));
  CHECK(at(r, Metric::hoyer) == Approx(0.110178).margin(1e-6));
  CHECK(at(r, Metric::below_tau) == 0.0);
  const auto r2 = metrics_of(a, Variant::all_keys, 1, 0, {.top_p = 0.5, .tau = 0.9});
  CHECK(at(r2, Metric::top_p_width) == 0.5);
  CHECK(at(r2, Metric::below_tau) == 0.75);
}

TEST_CASE("The drop-CLS variant renormalises over the other keys", "[analysis][sparsity]") {
  // a = (0.5, 0.25, 0.25, 0) -> without key 0: (0.5, 0.5, 0) over N = 3:
  //   S_ent = 1 − ln 2 / ln 3 = 0.369070;  Gini: ascending (0, .5, .5), weights −2, 0, 2: 1/3
  //   Hoyer: 1/‖q‖₂ = √2: (√3 − √2)/(√3 − 1) = 0.434172;  top-p 0.9: k = 2 -> 2/3
  const std::vector<double> a = {0.5, 0.25, 0.25, 0.0};
  const auto r = metrics_of(a, Variant::drop_cls);
  CHECK(at(r, Metric::entropy_sparsity) == Approx(0.369070).margin(1e-6));
  CHECK(at(r, Metric::gini) == Approx(1.0 / 3.0));
  CHECK(at(r, Metric::hoyer) == Approx(0.434172).margin(1e-6));
  CHECK(at(r, Metric::top_p_width) == Approx(2.0 / 3.0));
  CHECK(at(r, Metric::below_tau) == Approx(1.0 / 3.0));  // the zero
  // All mass on CLS: nothing left to renormalise, the row has no drop-CLS metrics.
  const auto r0 = metrics_of({1.0, 0.0, 0.0}, Variant::drop_cls);
  for (double v : r0) CHECK(std::isnan(v));
}

TEST_CASE("Masked keys are not counted", "[analysis][sparsity]") {
  // The row (0.4, x, 0.2, 0.2, x, 0.2) with keys 1 and 4 masked is the row (0.4, 0.2, 0.2, 0.2).
  const std::vector<double> a = {0.4, 0.0, 0.2, 0.2, 0.0, 0.2};
  const std::vector<std::uint8_t> keep = {1, 0, 1, 1, 0, 1};
  analysis::RowScratch scratch;
  const auto r = analysis::row_metrics(a.data(), 6, keep.data(), 2, 0, analysis::SparsityOptions{},
                                       scratch);
  for (Variant v : {Variant::all_keys, Variant::drop_cls}) {
    const auto ref = metrics_of({0.4, 0.2, 0.2, 0.2}, v);
    for (Metric m : {Metric::entropy_sparsity, Metric::top_p_width, Metric::gini, Metric::hoyer,
                     Metric::below_tau})
      CHECK(at(r[int(v)], m) == Approx(at(ref, m)));
  }
}

TEST_CASE("Mean attention distance on a 2x2 grid, by hand", "[analysis][sparsity]") {
  // Tokens: 0 = CLS, 1 (0,0), 2 (0,1), 3 (1,0), 4 (1,1).
  // Query 1 at (0,0), uniform row 0.2: distances 0, 1, 1, √2 to tokens 1..4:
  //   all_keys: 0.2 (0 + 1 + 1 + √2) = 0.682843;  drop_cls: 0.25 (…) = 0.853553
  const double s2 = std::sqrt(2.0);
  const std::vector<double> u(5, 0.2);
  CHECK(at(metrics_of(u, Variant::all_keys, 1, 2), Metric::distance) == Approx(0.2 * (2 + s2)));
  CHECK(at(metrics_of(u, Variant::drop_cls, 1, 2), Metric::distance) == Approx(0.25 * (2 + s2)));
  // Query 4 at (1,1), row (0.1, 0.6, 0.1, 0.1, 0.1): distances √2, 1, 1, 0:
  //   all_keys: 0.6 √2 + 0.1 + 0.1 = 1.048528;  drop_cls: 1.048528 / 0.9 = 1.165032
  const std::vector<double> a = {0.1, 0.6, 0.1, 0.1, 0.1};
  CHECK(at(metrics_of(a, Variant::all_keys, 4, 2), Metric::distance) == Approx(0.6 * s2 + 0.2));
  CHECK(at(metrics_of(a, Variant::drop_cls, 4, 2), Metric::distance) ==
        Approx((0.6 * s2 + 0.2) / 0.9));
  // The CLS query has no position: no distance.
  CHECK(std::isnan(at(metrics_of(a, Variant::all_keys, 0, 2), Metric::distance)));
  CHECK(analysis::grid_side_for(5, 0) == 2);
  CHECK(analysis::grid_side_for(6, 0) == 0);
  CHECK(analysis::grid_side_for(5, 3) == 0);
}

TEST_CASE("Kendall tau of small rankings, by hand", "[analysis][sparsity]") {
  using V = std::vector<double>;
  // One discordant pair of six: (5 − 1) / 6.
  CHECK(analysis::kendall_tau(V{1, 2, 3, 4}, V{1, 3, 2, 4}) == Approx(2.0 / 3.0));
  CHECK(analysis::kendall_tau(V{1, 2, 3, 4}, V{4, 3, 2, 1}) == Approx(-1.0));
  CHECK(analysis::kendall_tau(V{1, 2, 3}, V{10, 20, 30}) == Approx(1.0));
  // τ_b with a tie in x: 5 concordant, 0 discordant, n0 = 6, 1 tied pair: 5 / √(5 · 6).
  CHECK(analysis::kendall_tau(V{1, 1, 2, 3}, V{1, 2, 3, 4}) == Approx(5.0 / std::sqrt(30.0)));
  CHECK(std::isnan(analysis::kendall_tau(V{1, 1}, V{1, 2})));
}

TEST_CASE("Running statistics merge exactly like one pass", "[analysis][sparsity]") {
  analysis::RunningStats all, a, b;
  const std::vector<double> xs = {0.3, 1.5, -2.0, 4.25, 0.0, 7.5, 1.0};
  for (std::size_t i = 0; i < xs.size(); ++i) {
    all.add(xs[i]);
    (i < 3 ? a : b).add(xs[i]);
  }
  a.merge(b);
  CHECK(a.count == all.count);
  CHECK(a.mean == Approx(all.mean));
  CHECK(a.stddev() == Approx(all.stddev()));
  const double mean = std::accumulate(xs.begin(), xs.end(), 0.0) / double(xs.size());
  double ss = 0;
  for (double x : xs) ss += (x - mean) * (x - mean);
  CHECK(all.stddev() == Approx(std::sqrt(ss / double(xs.size()))));  // population std
}

// ---------------------------------------------------------------------------------------------
// Streaming over batches.

namespace {
// Random attention maps for sequences of the given lengths (H heads), with an optional mask.
struct FakeMaps {
  std::vector<double> probs;
  std::vector<std::size_t> prob_offsets{0};
  std::vector<index_t> offsets{0};
  std::vector<std::uint8_t> keep;
  index_t heads = 0;

  FakeMaps(const std::vector<index_t>& lengths, index_t H, bool masked, std::uint64_t seed)
      : heads(H) {
    Rng rng(seed);
    for (index_t n : lengths) {
      offsets.push_back(offsets.back() + n);
      std::vector<std::uint8_t> k(std::size_t(n), 1);
      if (masked)
        for (index_t j = 1; j < n; ++j) k[std::size_t(j)] = rng.uniform() < 0.7;
      keep.insert(keep.end(), k.begin(), k.end());
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < n; ++i) {
          std::vector<double> row(std::size_t(n), 0.0);
          double s = 0;
          for (index_t j = 0; j < n; ++j)
            if (k[std::size_t(i)] && k[std::size_t(j)]) s += row[std::size_t(j)] = std::exp(3 * rng.normal());
          for (double& v : row) probs.push_back(s > 0 ? v / s : 0.0);
        }
      prob_offsets.push_back(probs.size());
    }
    if (!masked) keep.clear();
  }
  analysis::AttentionMaps<double> view() const {
    return {probs.data(), prob_offsets.data(), offsets.data(), keep.empty() ? nullptr : keep.data(),
            index_t(offsets.size()) - 1, heads};
  }
};

void require_same(const analysis::SparsityAccumulator& a, const analysis::SparsityAccumulator& b) {
  for (index_t l = 0; l < a.layers(); ++l)
    for (index_t h = 0; h < a.heads(); ++h)
      for (Metric m : analysis::kAllMetrics)
        for (Variant v : {Variant::all_keys, Variant::drop_cls})
          for (Rows r : {Rows::cls, Rows::patch}) {
            const auto& x = a.stats(l, h, m, v, r);
            const auto& y = b.stats(l, h, m, v, r);
            INFO("layer " << l << " head " << h << " " << analysis::name(m) << " "
                          << analysis::name(v) << " " << analysis::name(r));
            REQUIRE(x.count == y.count);
            REQUIRE(x.mean == y.mean);  // same rows in the same order: bitwise equal
            REQUIRE(x.m2 == y.m2);
          }
}
}  // namespace

TEST_CASE("Streaming in batches equals one pass", "[analysis][sparsity]") {
  const std::vector<index_t> lengths = {5, 5, 10, 1, 5, 17, 5};
  for (bool masked : {false, true}) {
    analysis::SparsityAccumulator once(2, 3), streamed(2, 3);
    // layer l sees its own maps; the whole batch at once ...
    for (index_t l = 0; l < 2; ++l) once.add(l, FakeMaps(lengths, 3, masked, 100 + l).view());
    // ... or in three batches of the same sequences
    for (index_t l = 0; l < 2; ++l) {
      const FakeMaps all(lengths, 3, masked, 100 + l);
      for (auto [lo, hi] : {std::pair{0, 2}, std::pair{2, 3}, std::pair{3, 7}}) {
        // a sub-batch: sequences lo..hi-1 of `all`
        FakeMaps part({}, 3, masked, 0);
        part.prob_offsets = {0};
        part.offsets = {0};
        part.keep.clear();
        for (int b = lo; b < hi; ++b) {
          part.probs.insert(part.probs.end(), all.probs.begin() + long(all.prob_offsets[b]),
                            all.probs.begin() + long(all.prob_offsets[b + 1]));
          part.prob_offsets.push_back(part.probs.size());
          part.offsets.push_back(part.offsets.back() + lengths[std::size_t(b)]);
          if (masked)
            part.keep.insert(part.keep.end(), all.keep.begin() + all.offsets[b],
                             all.keep.begin() + all.offsets[b + 1]);
        }
        streamed.add(l, part.view());
      }
    }
    require_same(once, streamed);
    const auto p = streamed.profile();
    CHECK(p.images == 7);
    CHECK(bool(p.keep_mask[0]) == masked);
    if (masked) {
      // keep ratio = mean over images of kept / n
      double sum = 0;
      const FakeMaps all(lengths, 3, true, 100);
      for (std::size_t b = 0; b < lengths.size(); ++b)
        sum += double(std::count(all.keep.begin() + all.offsets[b], all.keep.begin() + all.offsets[b + 1], 1)) /
               double(lengths[b]);
      CHECK(p.keep_ratio[0].mean == Approx(sum / double(lengths.size())));
    }
  }
}

TEST_CASE("Profile pools heads and rows, ranks layers and writes JSON and CSV",
          "[analysis][sparsity]") {
  // Layer 0: uniform rows (dense); layer 1: one-hot rows (sparse); N = 5 (2x2 grid).
  const index_t n = 5, H = 2;
  auto maps = [&](bool one_hot) {
    FakeMaps f({n, n}, H, false, 1);
    for (std::size_t r = 0; r < f.probs.size() / std::size_t(n); ++r)
      for (index_t j = 0; j < n; ++j)
        f.probs[r * std::size_t(n) + std::size_t(j)] =
            one_hot ? double(j == index_t(r % std::size_t(n))) : 1.0 / double(n);
    return f;
  };
  analysis::SparsityAccumulator acc(3, H);  // layer 2 is never fed: not attention
  acc.add(0, maps(false).view());
  acc.add(1, maps(true).view());
  const auto p = acc.profile();
  CHECK(p.measured == std::vector<std::uint8_t>{1, 1, 0});
  // 2 images x 2 heads x 5 queries; the CLS rows are 2 x 2
  CHECK(p.layer_summary(0, Metric::entropy_sparsity).count == 20);
  CHECK(p.layer_summary(0, Metric::entropy_sparsity, Variant::all_keys, Rows::cls).count == 4);
  CHECK(p.layer_summary(0, Metric::distance).count == 16);  // CLS queries have none
  CHECK(p.layer_summary(0, Metric::entropy_sparsity).mean == Approx(0.0).margin(1e-12));
  CHECK(p.layer_summary(1, Metric::entropy_sparsity).mean == Approx(1.0));
  CHECK(p.layer_summary(1, Metric::entropy_sparsity).std == Approx(0.0).margin(1e-12));
  CHECK(p.at(1, 0, Metric::gini).mean == Approx(0.8));
  // one-hot on itself: query i attends to key i -> distance 0
  CHECK(p.layer_summary(1, Metric::distance).mean == Approx(0.0).margin(1e-12));
  // drop_cls of the CLS query's one-hot row (all on CLS) is undefined: 4 rows fewer
  CHECK(p.layer_summary(1, Metric::gini, Variant::drop_cls).count == 16);
  CHECK(p.ranking() == std::vector<index_t>{1, 0});
  CHECK(p.ranking(Metric::top_p_width) == std::vector<index_t>{1, 0});
  CHECK(p.kendall_tau(Metric::entropy_sparsity, Metric::hoyer) == Approx(1.0));
  CHECK(p.spread(0, Metric::entropy_sparsity) == Approx(0.0).margin(1e-12));

  const nlohmann::json j = p;
  CHECK(j["layers"] == 3);
  CHECK(j["ranking"]["sparsest_first"] == nlohmann::json({1, 0}));
  CHECK(j["layer_stats"][1]["heads"].size() == 2);
  CHECK(j["layer_stats"][1]["all_heads"]["all_keys"]["all"]["entropy_sparsity"]["mean"] ==
        Approx(1.0));
  CHECK(j["layer_stats"][2]["attention"] == false);
  CHECK(j["layer_stats"][0]["keep_ratio"].is_null());
  const std::string csv = analysis::to_csv(p);
  CHECK(csv.rfind("layer,head,variant,rows,metric,count,mean,std\n", 0) == 0);
  CHECK(csv.find("1,all,all_keys,all,entropy_sparsity,20,1,0\n") != std::string::npos);
  // 2 layers x 3 heads-or-all x 2 variants x 3 rows x 6 metrics + header
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 2 * 3 * 2 * 3 * 6 + 1);
}

// ---------------------------------------------------------------------------------------------
// Reading a ViT's maps out of its context.

namespace {
// A mixer without attention maps (output and pre-projection zero): its layer must be skipped.
template <class T>
struct ZeroMixer {
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    Buffer<T> pre;
    Layout layout;
    TokensView<const T, B> pre_projection() const { return view_of<const T, B>(pre.data(), layout); }
  };
  std::size_t param_count() const { return 0; }
  double flops(const Layout&) const { return 0.0; }
  void plan(const Layout& in, Layout& out) const { out = in; }
  template <class F>
  void visit_params(F&&, const std::string&, std::size_t) const {}
  template <class B>
  void forward(ParamsView<const T, B>, TokensView<const T, B> x, TokensView<T, B> y, Ctx<B>& c) const {
    c.layout = Layout{x.batch, x.dim, {x.offsets, x.offsets + x.batch + 1}};
    c.pre.assign(c.layout.size(), T(0));
    std::fill(y.data, y.data + c.layout.size(), T(0));
  }
  template <class B>
  void backward(ParamsView<const T, B>, Ctx<B>&, TokensView<const T, B>, TokensView<T, B> dx,
                ParamsView<T, B>) const {
    if (dx.data) std::fill(dx.data, dx.data + dx.total() * dx.dim, T(0));
  }
  template <class B>
  void backward_pre(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                    ParamsView<T, B> g) const {
    backward(p, c, dpre, dx, g);
  }
  static constexpr const char* kind_name() { return "zero"; }
};
static_assert(Mixer<ZeroMixer<double>, Host>);

model::VitConfig tiny_config() {
  // 8x8 images, 2x2 patches: a 4x4 grid, 17 tokens
  return {.image_size = 8, .channels = 1, .patch = 2, .width = 8, .depth = 3, .heads = 2,
          .mlp_ratio = 2.0, .classes = 3};
}
}  // namespace

TEST_CASE("Attention maps come out of a ViT's context", "[analysis][sparsity]") {
  using Slot = model::Slot<attention::SoftmaxAttention<double>, ZeroMixer<double>>;
  const auto cfg = tiny_config();
  model::Model<model::Vit<double, Slot>> m(model::make_vit<double, Slot>(cfg));
  m.init(5);
  Rng rng(9);
  const index_t B = 6, E = cfg.image_size * cfg.image_size;
  std::vector<double> x(std::size_t(B * E));
  for (auto& v : x) v = rng.normal();

  CHECK_THROWS_AS(analysis::attention_maps(m), Error);  // no forward yet
  m.forward(x.data(), B, E);
  auto maps = analysis::attention_maps(m);
  REQUIRE(maps.size() == 3);
  for (const auto& mp : maps) {
    REQUIRE(mp.has_value());
    CHECK(mp->batch == B);
    CHECK(mp->heads == 2);
    CHECK(mp->length(0) == cfg.tokens());
    const double* row = mp->map(B - 1, 1) + 3 * cfg.tokens();
    CHECK(std::accumulate(row, row + cfg.tokens(), 0.0) == Approx(1.0));
  }

  // Streamed in batches 2 + 3 + 1 == all six at once (through the whole model).
  analysis::SparsityAccumulator once(cfg.depth, cfg.heads), streamed(cfg.depth, cfg.heads);
  once.add_model(m);
  for (auto [lo, n] : {std::pair<index_t, index_t>{0, 2}, {2, 3}, {5, 1}}) {
    m.forward(x.data() + lo * E, n, E);
    streamed.add_model(m);
  }
  const auto p1 = once.profile(), p2 = streamed.profile();
  CHECK(p1.images == B);
  CHECK(p2.images == B);
  for (index_t l = 0; l < cfg.depth; ++l)
    for (index_t h = 0; h <= cfg.heads; ++h)
      for (Metric mt : analysis::kAllMetrics)
        for (Variant v : {Variant::all_keys, Variant::drop_cls})
          for (Rows r : {Rows::cls, Rows::patch, Rows::all}) {
            const auto& a = p1.at(l, h, mt, v, r);
            const auto& b = p2.at(l, h, mt, v, r);
            REQUIRE(a.count == b.count);
            if (a.count == 0) continue;  // e.g. the CLS query's distance: NaN in both
            REQUIRE(a.mean == Approx(b.mean).margin(1e-12));
            REQUIRE(a.std == Approx(b.std).margin(1e-12));
          }
  CHECK(p1.ranking() == p2.ranking());
  CHECK(p1.layer_summary(0, Metric::distance).count == B * cfg.heads * cfg.num_patches());

  // Block 1 re-seated with a non-attention mixer: forward first, then it is skipped.
  m.net().mixer(1).emplace<ZeroMixer<double>>();
  m.relayout(5);
  CHECK_THROWS_AS(analysis::block_attention(m, 1), Error);  // context still the attention's
  m.forward(x.data(), B, E);
  maps = analysis::attention_maps(m);
  CHECK(maps[0].has_value());
  CHECK(!maps[1].has_value());
  CHECK(maps[2].has_value());
  analysis::SparsityAccumulator acc(cfg.depth, cfg.heads);
  acc.add_model(m);
  CHECK(acc.profile().measured == std::vector<std::uint8_t>{1, 0, 1});
  CHECK(acc.profile().ranking().size() == 2);
}

TEST_CASE("Attention maps exist only where the forward stored them", "[analysis][sparsity]") {
  const Layout l = Layout::ragged({5, 9}, 4);
  Rng rng(3);
  std::vector<double> x(l.size()), y(l.size());
  for (auto& v : x) v = rng.normal();
  for (const index_t up_to : {index_t(9), index_t(8)}) {
    const Attn<sparse::Dense> a({.dim = 4, .heads = 2, .qkv_bias = true, .name = "attn",
                                 .store_probs_up_to = up_to, .query_block = 2});
    std::vector<double> p(a.param_count(), 0.1);
    Attn<sparse::Dense>::Ctx<Host> ctx;
    a.forward(ParamsView<const double, Host>{p.data(), p.size()}, view_of<const double>(x.data(), l),
              view_of<double>(y.data(), l), ctx);
    if (up_to == 9) {
      const auto maps = analysis::maps_of(ctx);
      const double* row = maps.map(1, 1) + 9 * 4;  // sequence 1, head 1, query 4
      CHECK(std::accumulate(row, row + 9, 0.0) == Approx(1.0));
    } else {
      // The longest sequence (9) is over the limit: no maps, and the error says what to raise.
      CHECK_THROWS_WITH(analysis::maps_of(ctx), Catch::Contains("store_probs_up_to") &&
                                                     Catch::Contains("(9)"));
    }
  }
}
