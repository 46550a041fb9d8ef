// Attention sparsity per layer and head, streamed over a dataset (METHOD.md "Attention
// sparsity"): every attention row is reduced to a few numbers at once and only running means
// and variances are kept, so memory is O(layers · heads · metrics) whatever the dataset size.
//
// For one row a of one head (query i, over the N keys considered, renormalised to sum 1):
//   entropy_sparsity  S_ent = 1 - H,  H = -Σ a_j log a_j / log N   (N = 1: H = 0, S_ent = 1)
//   top_p_width       k_p / N,  k_p = min{k : mass of the k largest ≥ p}
//   gini              (1/N) Σ_j (2j - N - 1) a_(j), a sorted ascending, j = 1..N
//   hoyer             (√N - 1/‖a‖₂) / (√N - 1)                      (N = 1: 1)
//   below_tau         #{j : a_j < τ/N} / N
//   distance          Σ_{j patch} a_j ‖pos_i - pos_j‖₂ on the patch grid, in patch units
// Keys considered: the kept keys (keep-mask) in variant all_keys; the kept keys but key 0
// (CLS, often an attention sink) in variant drop_cls, renormalised over the rest. Rows are
// split by query: the CLS query (token 0) and patch queries; Rows::all pools both.
// CLS has no grid position: the CLS key adds no distance (its mass still counts in the
// all_keys normaliser, so all_keys distance = (1 - a_0) · drop_cls distance), and the CLS
// query has no distance at all (it is left out of that metric's count).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "seqswap/analysis/attention_maps.hpp"
#include "seqswap/core/error.hpp"

namespace seqswap::analysis {

enum class Metric : int { entropy_sparsity, top_p_width, gini, hoyer, below_tau, distance };
inline constexpr int kMetrics = 6;
inline constexpr std::array<Metric, kMetrics> kAllMetrics = {
    Metric::entropy_sparsity, Metric::top_p_width, Metric::gini,
    Metric::hoyer,            Metric::below_tau,   Metric::distance};

enum class Variant : int { all_keys, drop_cls };
inline constexpr int kVariants = 2;

// Which query rows: the CLS query, patch queries, or both pooled (profiles only).
enum class Rows : int { cls, patch, all };
inline constexpr int kRowKinds = 3;

inline const char* name(Metric m) {
  constexpr const char* n[] = {"entropy_sparsity", "top_p_width", "gini",
                               "hoyer",            "below_tau",   "distance"};
  return n[static_cast<int>(m)];
}
inline const char* name(Variant v) { return v == Variant::all_keys ? "all_keys" : "drop_cls"; }
inline const char* name(Rows r) {
  constexpr const char* n[] = {"cls", "patch", "all"};
  return n[static_cast<int>(r)];
}
// +1 when a larger value means a sparser row, -1 when a smaller one does (for distance:
// more local). Rankings put the sparsest (most local) layer first.
inline int direction(Metric m) {
  return (m == Metric::top_p_width || m == Metric::distance) ? -1 : +1;
}

struct SparsityOptions {
  double top_p = 0.9;     // METHOD.md's p for top_p_width
  double tau = 0.1;       // below_tau counts entries below τ/N: a tenth of the uniform weight
  index_t grid_side = 0;  // G of the G×G patch grid; 0 = infer from n = 1 + G² per sequence

  void validate() const {
    check(top_p > 0.0 && top_p <= 1.0, "sparsity: expected top_p in (0, 1], found ", top_p);
    check(tau >= 0.0, "sparsity: expected tau >= 0, found ", tau);
    check(grid_side >= 0, "sparsity: expected grid_side >= 0, found ", grid_side);
  }
};

// Mass reached "≥ p" up to this much: rows are float softmax outputs whose sums carry rounding,
// and a uniform row's mass 9·(1/10) must count as reaching 0.9.
inline constexpr double kMassTolerance = 1e-9;

// Running count, mean and sum of squared deviations (Welford; Chan et al. to merge), in double.
struct RunningStats {
  std::int64_t count = 0;
  double mean = 0.0;
  double m2 = 0.0;

  void add(double x) {
    ++count;
    const double d = x - mean;
    mean += d / double(count);
    m2 += d * (x - mean);
  }
  void merge(const RunningStats& o) {
    if (o.count == 0) return;
    if (count == 0) {
      *this = o;
      return;
    }
    const double n = double(count + o.count), d = o.mean - mean;
    mean += d * double(o.count) / n;
    m2 += o.m2 + d * d * double(count) * double(o.count) / n;
    count += o.count;
  }
  // Population standard deviation (divides by count): the spread of the rows themselves.
  double stddev() const { return count > 0 ? std::sqrt(std::max(m2, 0.0) / double(count)) : nan(); }
  double mean_or_nan() const { return count > 0 ? mean : nan(); }
  static double nan() { return std::numeric_limits<double>::quiet_NaN(); }
};

// Metric values of one row; NaN where undefined.
using RowValues = std::array<double, kMetrics>;

// The side G of the patch grid of a sequence of n tokens (CLS + G² patches in raster order),
// or 0 when n does not fit: then rows of that sequence get no distance.
inline index_t grid_side_for(index_t n, index_t grid_side) {
  if (grid_side > 0) return n == 1 + grid_side * grid_side ? grid_side : 0;
  if (n < 2) return 0;
  const auto g = static_cast<index_t>(std::llround(std::sqrt(double(n - 1))));
  return g * g == n - 1 ? g : 0;
}

// Reused between rows: the kept values in key order (CLS first when kept), and sorted copies.
struct RowScratch {
  std::vector<double> values, rest_sorted, all_sorted;
};

namespace detail {
// Gini and top-p width of a row given ascending (N) values that sum to 1/inv.
inline void sorted_metrics(const std::vector<double>& asc, double inv, const SparsityOptions& o,
                           RowValues& r) {
  const auto N = static_cast<index_t>(asc.size());
  double gini = 0.0, cum = 0.0;
  for (index_t j = 0; j < N; ++j) gini += double(2 * (j + 1) - N - 1) * asc[std::size_t(j)];
  index_t kp = 0;
  while (kp < N && cum < o.top_p - kMassTolerance) cum += asc[std::size_t(N - 1 - kp++)] * inv;
  r[int(Metric::gini)] = gini * inv / double(N);
  r[int(Metric::top_p_width)] = double(std::max<index_t>(kp, 1)) / double(N);
}
// The metrics that need no order, from raw sums over the N values of mass `mass`:
// ent = Σ v log v, sq = Σ v², below = #{v < τ mass / N}, dist = Σ v ‖pos_i - pos_j‖.
inline void sum_metrics(index_t N, double mass, double ent, double sq, index_t below, double dist,
                        bool has_pos, RowValues& r) {
  const double dN = double(N);
  // q = v / mass:  -Σ q log q = -ent / mass + log mass;  Σ q² = sq / mass²
  const double H = N > 1 ? (-ent / mass + std::log(mass)) / std::log(dN) : 0.0;
  r[int(Metric::entropy_sparsity)] = 1.0 - H;
  const double inv_l2 = mass / std::sqrt(sq);
  r[int(Metric::hoyer)] = N > 1 ? (std::sqrt(dN) - inv_l2) / (std::sqrt(dN) - 1.0) : 1.0;
  r[int(Metric::below_tau)] = double(below) / dN;
  if (has_pos) r[int(Metric::distance)] = dist / mass;
}
}  // namespace detail

// The metrics of query `query`'s row a (n) of one head, in both variants ([all_keys,
// drop_cls]). keep (n, nullable) marks kept keys; grid = G of the patch grid or 0 (no
// distance). A variant's values are all NaN when it has no key with positive mass left (e.g.
// drop_cls of a row all on CLS). One gather and one sort serve both variants.
template <class T>
std::array<RowValues, kVariants> row_metrics(const T* a, index_t n, const std::uint8_t* keep,
                                             index_t query, index_t grid,
                                             const SparsityOptions& o, RowScratch& s) {
  std::array<RowValues, kVariants> r;
  for (auto& v : r) v.fill(RunningStats::nan());
  auto& vals = s.values;
  vals.clear();
  const bool has_pos = grid > 0 && query >= 1;
  const index_t g = std::max<index_t>(grid, 1), qi = (query - 1) / g, qj = (query - 1) % g;
  const bool cls = n > 0 && (!keep || keep[0]);  // key 0 takes part: vals[0] is its value
  double c = 0.0, rest = 0.0, ent_rest = 0.0, sq_rest = 0.0, dist = 0.0;
  for (index_t j = 0; j < n; ++j) {
    if (keep && !keep[j]) continue;
    const double v = double(a[j]);
    vals.push_back(v);
    if (j == 0) {
      c = v;
      continue;
    }
    rest += v;
    if (v > 0.0) ent_rest += v * std::log(v);
    sq_rest += v * v;
    if (has_pos) {
      const double di = double((j - 1) / grid - qi), dj = double((j - 1) % grid - qj);
      dist += v * std::sqrt(di * di + dj * dj);
    }
  }
  const auto N = static_cast<index_t>(vals.size()), N_rest = N - (cls ? 1 : 0);
  const double mass = c + rest;
  const double ent = ent_rest + (c > 0.0 ? c * std::log(c) : 0.0), sq = sq_rest + c * c;

  // drop_cls: the values but key 0's, sorted ascending; all_keys: key 0's value merged in.
  s.rest_sorted.assign(vals.begin() + (cls ? 1 : 0), vals.end());
  std::sort(s.rest_sorted.begin(), s.rest_sorted.end());
  if (N > 0 && mass > 0.0) {
    index_t below = 0;
    const double cut = o.tau * mass / double(N);
    for (double v : vals) below += v < cut;
    auto& all = r[int(Variant::all_keys)];
    detail::sum_metrics(N, mass, ent, sq, below, dist, has_pos, all);
    if (cls) {
      s.all_sorted.resize(vals.size());
      const auto at = std::upper_bound(s.rest_sorted.begin(), s.rest_sorted.end(), c);
      auto out = std::copy(s.rest_sorted.begin(), at, s.all_sorted.begin());
      *out++ = c;
      std::copy(at, s.rest_sorted.end(), out);
      detail::sorted_metrics(s.all_sorted, 1.0 / mass, o, all);
    } else {
      detail::sorted_metrics(s.rest_sorted, 1.0 / mass, o, all);
    }
  }
  if (N_rest > 0 && rest > 0.0) {
    index_t below = 0;
    const double cut = o.tau * rest / double(N_rest);
    for (double v : s.rest_sorted) below += v < cut;
    auto& drop = r[int(Variant::drop_cls)];
    detail::sum_metrics(N_rest, rest, ent_rest, sq_rest, below, dist, has_pos, drop);
    detail::sorted_metrics(s.rest_sorted, 1.0 / rest, o, drop);
  }
  return r;
}

// Kendall's τ_b between two score vectors (ties allowed): (C - D) / √((n₀ - n_x)(n₀ - n_y));
// NaN when either vector is constant or has fewer than 2 entries.
inline double kendall_tau(std::span<const double> x, std::span<const double> y) {
  check(x.size() == y.size(), "kendall_tau: expected vectors of equal length, found ", x.size(),
        " and ", y.size());
  const std::size_t n = x.size();
  double conc = 0, disc = 0, tx = 0, ty = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) {
      const double dx = x[i] - x[j], dy = y[i] - y[j];
      if (dx == 0) ++tx;
      if (dy == 0) ++ty;
      if (dx * dy > 0) ++conc;
      if (dx * dy < 0) ++disc;
    }
  const double n0 = double(n) * double(n - (n > 0)) / 2.0;
  const double den = std::sqrt((n0 - tx) * (n0 - ty));
  return den > 0 ? (conc - disc) / den : RunningStats::nan();
}

// One summary cell of a profile.
struct MetricSummary {
  std::int64_t count = 0;
  double mean = RunningStats::nan();
  double std = RunningStats::nan();

  static MetricSummary of(const RunningStats& s) { return {s.count, s.mean_or_nan(), s.stddev()}; }
};

// The result: means and standard deviations per (layer, head or all heads, metric, variant,
// rows), keep ratios, layer rankings and the Kendall τ between the metrics' rankings.
struct SparsityProfile {
  SparsityOptions options;
  index_t layers = 0, heads = 0;
  std::int64_t images = 0;
  std::vector<std::uint8_t> measured;  // (L) 1 = the layer was attention and saw data
  // (L, H+1, kMetrics, kVariants, kRowKinds); head index H = all heads pooled
  std::vector<MetricSummary> stats;
  // (L, kMetrics, kVariants, kRowKinds): population std of the H per-head means
  std::vector<double> head_spread;
  std::vector<MetricSummary> keep_ratio;  // (L) kept / tokens per image
  std::vector<std::uint8_t> keep_mask;    // (L) 1 = a keep-mask was present
  // (kVariants, kMetrics): measured layers sparsest first by that metric (all heads, all rows)
  std::vector<std::vector<index_t>> rankings;
  std::vector<double> kendall;  // (kVariants, kMetrics, kMetrics) τ_b between layer rankings

  static std::size_t cell(index_t l, index_t h, Metric m, Variant v, Rows r, index_t H) {
    return static_cast<std::size_t>(
        (((l * (H + 1) + h) * kMetrics + int(m)) * kVariants + int(v)) * kRowKinds + int(r));
  }
  // head = heads: over all heads.
  const MetricSummary& at(index_t layer, index_t head, Metric m, Variant v = Variant::all_keys,
                          Rows r = Rows::all) const {
    check(layer >= 0 && layer < layers && head >= 0 && head <= heads, "SparsityProfile: cell (",
          layer, ", ", head, ") out of range (", layers, " layers, ", heads, " heads + all)");
    return stats[cell(layer, head, m, v, r, heads)];
  }
  const MetricSummary& layer_summary(index_t layer, Metric m, Variant v = Variant::all_keys,
                                     Rows r = Rows::all) const {
    return at(layer, heads, m, v, r);
  }
  double spread(index_t layer, Metric m, Variant v = Variant::all_keys, Rows r = Rows::all) const {
    return head_spread[static_cast<std::size_t>(
        ((layer * kMetrics + int(m)) * kVariants + int(v)) * kRowKinds + int(r))];
  }
  // Measured layers, sparsest first by `m` (METHOD.md ranks by S_ent).
  const std::vector<index_t>& ranking(Metric m = Metric::entropy_sparsity,
                                      Variant v = Variant::all_keys) const {
    return rankings[static_cast<std::size_t>(int(v) * kMetrics + int(m))];
  }
  double kendall_tau(Metric a, Metric b, Variant v = Variant::all_keys) const {
    return kendall[static_cast<std::size_t>((int(v) * kMetrics + int(a)) * kMetrics + int(b))];
  }
};

// Streams attention maps in, layer by layer and batch by batch; profile() summarises.
// Rows of each (layer, head) are added in a fixed order (image, then query), so the result
// does not depend on how the images were split into batches, nor on the thread count.
class SparsityAccumulator {
 public:
  SparsityAccumulator(index_t layers, index_t heads, SparsityOptions o = {})
      : o_(o), L_(layers), H_(heads) {
    o_.validate();
    check(layers > 0 && heads > 0, "SparsityAccumulator: expected layers > 0 and heads > 0, found ",
          layers, " and ", heads);
    stats_.resize(static_cast<std::size_t>(L_ * H_ * kMetrics * kVariants * 2));
    keep_ratio_.resize(static_cast<std::size_t>(L_));
    keep_mask_.assign(static_cast<std::size_t>(L_), 0);
    images_.assign(static_cast<std::size_t>(L_), 0);
  }
  const SparsityOptions& options() const { return o_; }
  index_t layers() const { return L_; }
  index_t heads() const { return H_; }
  std::int64_t images(index_t layer) const { return images_[std::size_t(layer)]; }

  // Adds every kept query row of one layer's maps (one batch of images).
  template <class T>
  void add(index_t layer, const AttentionMaps<T>& maps) {
    check(layer >= 0 && layer < L_, "SparsityAccumulator: layer ", layer, " out of range (",
          L_, " layers)");
    check(maps.heads == H_, "SparsityAccumulator: layer ", layer, ": expected ", H_,
          " heads, found ", maps.heads);
    for (index_t b = 0; b < maps.batch; ++b) {
      const index_t n = maps.length(b);
      if (n == 0) continue;
      const std::uint8_t* keep = maps.keep_of(b);
      index_t kept = n;
      if (keep) kept = index_t(std::count_if(keep, keep + n, [](std::uint8_t v) { return v != 0; }));
      keep_ratio_[std::size_t(layer)].add(double(kept) / double(n));
    }
    if (maps.keep) keep_mask_[std::size_t(layer)] = 1;
    images_[std::size_t(layer)] += maps.batch;

    // Heads are independent cells: one thread per head keeps each cell's row order fixed.
#pragma omp parallel for schedule(dynamic, 1) if (H_ > 1)
    for (index_t h = 0; h < H_; ++h) {
      RowScratch scratch;
      for (index_t b = 0; b < maps.batch; ++b) {
        const index_t n = maps.length(b);
        const std::uint8_t* keep = maps.keep_of(b);
        const index_t grid = grid_side_for(n, o_.grid_side);
        const T* P = maps.map(b, h);
        for (index_t i = 0; i < n; ++i) {
          if (keep && !keep[i]) continue;
          const Rows rows = i == 0 ? Rows::cls : Rows::patch;
          const auto r = row_metrics(P + i * n, n, keep, i, grid, o_, scratch);
          for (int v = 0; v < kVariants; ++v)
            for (Metric m : kAllMetrics)
              if (!std::isnan(r[v][int(m)])) cell(layer, h, m, Variant(v), rows).add(r[v][int(m)]);
        }
      }
    }
  }

  // After model.forward(...) of a Model<Vit<T, Slot>>: adds every attention block's maps
  // (blocks holding another mixer are skipped and stay unmeasured).
  template <class M>
  void add_model(M& model) {
    const auto maps = attention_maps(model);
    check(index_t(maps.size()) == L_, "SparsityAccumulator: expected a model with ", L_,
          " blocks, found ", maps.size());
    for (std::size_t l = 0; l < maps.size(); ++l)
      if (maps[l]) add(index_t(l), *maps[l]);
  }

  // The running statistics of one cell (rows: cls or patch).
  const RunningStats& stats(index_t layer, index_t head, Metric m, Variant v, Rows rows) const {
    check(rows != Rows::all, "SparsityAccumulator::stats: rows must be cls or patch; pooled() "
          "merges them");
    return stats_[index(layer, head, m, v, rows)];
  }
  // Merged over row kinds (rows = all) and/or heads (head = heads()).
  RunningStats pooled(index_t layer, index_t head, Metric m, Variant v, Rows rows) const {
    RunningStats s;
    for (index_t h = (head == H_ ? 0 : head); h < (head == H_ ? H_ : head + 1); ++h)
      for (Rows r : {Rows::cls, Rows::patch})
        if (rows == Rows::all || rows == r) s.merge(stats_[index(layer, h, m, v, r)]);
    return s;
  }

  SparsityProfile profile() const {
    SparsityProfile p;
    p.options = o_;
    p.layers = L_;
    p.heads = H_;
    p.images = *std::max_element(images_.begin(), images_.end());
    p.stats.resize(static_cast<std::size_t>(L_ * (H_ + 1) * kMetrics * kVariants * kRowKinds));
    p.head_spread.assign(static_cast<std::size_t>(L_ * kMetrics * kVariants * kRowKinds),
                         RunningStats::nan());
    for (index_t l = 0; l < L_; ++l) {
      p.measured.push_back(images_[std::size_t(l)] > 0 ? 1 : 0);
      p.keep_ratio.push_back(MetricSummary::of(keep_ratio_[std::size_t(l)]));
      p.keep_mask.push_back(keep_mask_[std::size_t(l)]);
      for (Metric m : kAllMetrics)
        for (int v = 0; v < kVariants; ++v)
          for (int r = 0; r < kRowKinds; ++r) {
            RunningStats means;  // of the per-head means
            for (index_t h = 0; h <= H_; ++h) {
              const RunningStats s = pooled(l, h, m, Variant(v), Rows(r));
              p.stats[SparsityProfile::cell(l, h, m, Variant(v), Rows(r), H_)] = MetricSummary::of(s);
              if (h < H_ && s.count > 0) means.add(s.mean);
            }
            if (means.count == H_)
              p.head_spread[static_cast<std::size_t>(((l * kMetrics + int(m)) * kVariants + v) *
                                                     kRowKinds + r)] = means.stddev();
          }
    }
    // Rankings and Kendall τ over the layers measured in every metric (pooled heads and rows).
    for (int v = 0; v < kVariants; ++v) {
      std::vector<index_t> layers;
      for (index_t l = 0; l < L_; ++l) {
        bool all = p.measured[std::size_t(l)] != 0;
        for (Metric m : kAllMetrics) all = all && p.layer_summary(l, m, Variant(v)).count > 0;
        if (all) layers.push_back(l);
      }
      std::vector<std::vector<double>> score(kMetrics);
      for (Metric m : kAllMetrics) {
        for (index_t l : layers)
          score[int(m)].push_back(direction(m) * p.layer_summary(l, m, Variant(v)).mean);
        std::vector<std::size_t> order(layers.size());
        for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
          return score[int(m)][a] > score[int(m)][b];
        });
        std::vector<index_t> ranked;
        for (std::size_t k : order) ranked.push_back(layers[k]);
        p.rankings.push_back(std::move(ranked));
      }
      for (Metric a : kAllMetrics)
        for (Metric b : kAllMetrics)
          p.kendall.push_back(seqswap::analysis::kendall_tau(score[int(a)], score[int(b)]));
    }
    return p;
  }

 private:
  std::size_t index(index_t l, index_t h, Metric m, Variant v, Rows r) const {
    check(l >= 0 && l < L_ && h >= 0 && h < H_, "SparsityAccumulator: cell (", l, ", ", h,
          ") out of range (", L_, " layers, ", H_, " heads)");
    return static_cast<std::size_t>((((l * H_ + h) * kMetrics + int(m)) * kVariants + int(v)) * 2 +
                                    int(r));
  }
  RunningStats& cell(index_t l, index_t h, Metric m, Variant v, Rows r) {
    return stats_[index(l, h, m, v, r)];
  }

  SparsityOptions o_;
  index_t L_, H_;
  std::vector<RunningStats> stats_;        // (L, H, kMetrics, kVariants, {cls, patch})
  std::vector<RunningStats> keep_ratio_;   // (L) over images
  std::vector<std::uint8_t> keep_mask_;    // (L)
  std::vector<std::int64_t> images_;       // (L)
};

}  // namespace seqswap::analysis
