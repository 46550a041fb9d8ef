// Kinds of sparse attention per layer and head, streamed over a dataset: where an attention
// head puts its mass (on the query itself, its grid neighbours, the CLS token, the image
// background) and how much of its pattern depends on the query (marginal entropy, query-key
// mutual information). Complements analysis/sparsity.hpp, which measures how concentrated
// rows are, not where they look; only running means and variances are kept (RunningStats).
//
// For one image b and head h, over the kept tokens only (keep-mask): N = number of kept keys;
// each kept query's row a_i is renormalised over the kept keys, p_i = a_i / Σ_{j kept} a_ij
// (rows of unkept queries are skipped, and so is a kept row with no positive mass on kept keys).
// Q = the rows taken, patch queries = those with i ≥ 1. Tokens: CLS at 0, then the G×G patches
// in raster order (G from grid_side_for).
//   self_mass           (1/Q) Σ_i p_i(i)
//   local_mass          mean over patch queries of Σ p_i(j) over the kept patch keys j with
//                       Chebyshev distance ≤ 1 to i on the grid (its 3×3 neighbourhood, i itself
//                       included); NaN when G is unknown (0) or there are no patch queries
//   cls_mass            mean over patch queries of p_i(0); NaN when key 0 is not kept
//   marginal_entropy    H(p̄) / log N,  p̄ = (1/Q) Σ_i p_i  (1 = the query-independent part is
//                       uniform, 0 = every query's mass on one common key); N = 1: 0
//   mutual_information  (H(p̄) − (1/Q) Σ_i H(p_i)) / log N: the query-key mutual information
//                       I(query; key) with the query uniform over the Q rows, normalised
//                       (0 = every query attends the same way, 1 = N distinct one-hot lookups
//                       when Q = N); N = 1: 0
//   background_mass     (1/Q) Σ_i Σ p_i(j) over the kept keys j flagged as background; NaN when
//                       no flags are given (see background_tokens)
// H is the natural-log entropy; the ratios do not depend on the base. Everything is summed in
// double. A value is one number per (image, head), added to a RunningStats per
// (layer, head, kind); NaN values are not added.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/analysis/attention_maps.hpp"
#include "seqswap/analysis/sparsity.hpp"
#include "seqswap/core/error.hpp"

namespace seqswap::analysis {

enum class Kind : int {
  self_mass,
  local_mass,
  cls_mass,
  marginal_entropy,
  mutual_information,
  background_mass
};
inline constexpr int kKinds = 6;
inline constexpr std::array<Kind, kKinds> kAllKinds = {
    Kind::self_mass,        Kind::local_mass,         Kind::cls_mass,
    Kind::marginal_entropy, Kind::mutual_information, Kind::background_mass};

inline const char* name(Kind k) {
  constexpr const char* n[] = {"self_mass",        "local_mass",         "cls_mass",
                               "marginal_entropy", "mutual_information", "background_mass"};
  return n[static_cast<int>(k)];
}

// Values of one (image, head), indexed by int(Kind); NaN where undefined.
using KindValues = std::array<double, kKinds>;

// A suggested threshold for background_tokens on pixels in [0, 1] (before normalisation): a
// patch whose pixels spread less than 5% of the range is flat, i.e. background.
inline constexpr double kBackgroundThreshold = 0.05;

// Background flags of one image's tokens (1 + G² of them, G = image_size / patch): CLS = 0,
// patch = 1 when the population standard deviation of its C·patch·patch pixels (all channels
// pooled) is < threshold. `image` is (channels, image_size, image_size) row-major, as the
// ViT's input. The threshold is in the units of the pixels passed: kBackgroundThreshold (0.05)
// suits raw pixels in [0, 1]; for pixels normalised as (x − μ) / σ pass threshold / σ (or pass
// the raw pixels) — caller's choice, but pixels and threshold must agree. Summed in double.
template <class T>
std::vector<std::uint8_t> background_tokens(const T* image, index_t channels, index_t image_size,
                                            index_t patch,
                                            double threshold = kBackgroundThreshold) {
  check(image != nullptr, "background_tokens: expected an image, found nullptr");
  check(channels > 0 && image_size > 0 && patch > 0,
        "background_tokens: expected channels, image size and patch > 0, found ", channels, ", ",
        image_size, " and ", patch);
  check(image_size % patch == 0, "background_tokens: expected image size ", image_size,
        " to be a multiple of the patch size, found patch ", patch);
  check(threshold >= 0.0, "background_tokens: expected threshold >= 0, found ", threshold);
  const index_t G = image_size / patch;
  std::vector<std::uint8_t> flags(static_cast<std::size_t>(1 + G * G), 0);
  const double count = double(channels * patch * patch);
  for (index_t pr = 0; pr < G; ++pr)
    for (index_t pc = 0; pc < G; ++pc) {
      auto pixels = [&](auto&& f) {
        for (index_t c = 0; c < channels; ++c)
          for (index_t y = pr * patch; y < (pr + 1) * patch; ++y) {
            const T* row = image + (c * image_size + y) * image_size;
            for (index_t x = pc * patch; x < (pc + 1) * patch; ++x) f(double(row[x]));
          }
      };
      double sum = 0.0, ss = 0.0;
      pixels([&](double v) { sum += v; });
      const double mean = sum / count;
      pixels([&](double v) { ss += (v - mean) * (v - mean); });
      flags[static_cast<std::size_t>(1 + pr * G + pc)] = std::sqrt(ss / count) < threshold ? 1 : 0;
    }
  return flags;
}

// The kinds of one (image, head) map (n × n row-major, row i = query i's distribution).
// keep (n, nullable = all kept); grid = G of the patch grid (n = 1 + G²) or 0 when unknown;
// background (n, nullable = not measured) flags background tokens. pbar is scratch (resized).
template <class T>
KindValues kind_values(const T* map, index_t n, const std::uint8_t* keep, index_t grid,
                       const std::uint8_t* background, std::vector<double>& pbar) {
  check(n >= 0, "kind_values: expected n >= 0, found ", n);
  check(grid >= 0, "kind_values: expected grid >= 0, found ", grid);
  check(grid == 0 || n == 1 + grid * grid, "kind_values: expected n = 1 + grid² = ",
        1 + grid * grid, " tokens for grid ", grid, ", found ", n);
  check(n == 0 || map != nullptr, "kind_values: expected a map of ", n, "x", n,
        " values, found nullptr");
  KindValues r;
  r.fill(RunningStats::nan());
  auto kept = [&](index_t j) { return !keep || keep[j] != 0; };
  index_t N = 0;
  for (index_t j = 0; j < n; ++j) N += kept(j) ? 1 : 0;
  if (N == 0) return r;
  const bool cls_kept = kept(0);

  pbar.assign(static_cast<std::size_t>(n), 0.0);
  index_t Q = 0, Qp = 0;  // rows taken; patch rows among them
  double self = 0.0, local = 0.0, cls = 0.0, bg = 0.0, row_entropy = 0.0;
  for (index_t i = 0; i < n; ++i) {
    if (!kept(i)) continue;
    const T* a = map + i * n;
    double s = 0.0;
    for (index_t j = 0; j < n; ++j)
      if (kept(j)) s += double(a[j]);
    if (!(s > 0.0) || !std::isfinite(s)) continue;
    const double inv = 1.0 / s;
    double ent = 0.0, bgi = 0.0;
    for (index_t j = 0; j < n; ++j) {
      if (!kept(j)) continue;
      const double v = double(a[j]) * inv;
      pbar[std::size_t(j)] += v;
      if (v > 0.0) ent -= v * std::log(v);
      if (background && background[j]) bgi += v;
    }
    ++Q;
    row_entropy += ent;
    bg += bgi;
    self += double(a[i]) * inv;
    if (i >= 1) {
      ++Qp;
      if (cls_kept) cls += double(a[0]) * inv;
      if (grid > 0) {
        const index_t qr = (i - 1) / grid, qc = (i - 1) % grid;
        double li = 0.0;
        for (index_t y = std::max<index_t>(qr - 1, 0); y <= std::min(qr + 1, grid - 1); ++y)
          for (index_t x = std::max<index_t>(qc - 1, 0); x <= std::min(qc + 1, grid - 1); ++x) {
            const index_t j = 1 + y * grid + x;
            if (kept(j)) li += double(a[j]);
          }
        local += li * inv;
      }
    }
  }
  if (Q == 0) return r;
  const double dQ = double(Q);
  double H = 0.0;  // H(p̄)
  for (index_t j = 0; j < n; ++j) {
    const double v = pbar[std::size_t(j)] / dQ;
    if (kept(j) && v > 0.0) H -= v * std::log(v);
  }
  const double logN = std::log(double(N));
  r[int(Kind::self_mass)] = self / dQ;
  if (Qp > 0 && grid > 0) r[int(Kind::local_mass)] = local / double(Qp);
  if (Qp > 0 && cls_kept) r[int(Kind::cls_mass)] = cls / double(Qp);
  r[int(Kind::marginal_entropy)] = N > 1 ? H / logN : 0.0;
  r[int(Kind::mutual_information)] = N > 1 ? (H - row_entropy / dQ) / logN : 0.0;
  if (background) r[int(Kind::background_mass)] = bg / dQ;
  return r;
}

template <class T>
KindValues kind_values(const T* map, index_t n, const std::uint8_t* keep, index_t grid,
                       const std::uint8_t* background = nullptr) {
  std::vector<double> pbar;
  return kind_values(map, n, keep, grid, background, pbar);
}

// Streams attention maps in, layer by layer and batch by batch. Each (layer, head) cell gets
// its images in a fixed order, so the result does not depend on the thread count.
class KindAccumulator {
 public:
  // grid_side: G of the G×G patch grid; 0 = infer from n = 1 + G² per image (grid_side_for).
  KindAccumulator(index_t layers, index_t heads, index_t grid_side = 0)
      : L_(layers), H_(heads), G_(grid_side) {
    check(layers > 0 && heads > 0, "KindAccumulator: expected layers > 0 and heads > 0, found ",
          layers, " and ", heads);
    check(grid_side >= 0, "KindAccumulator: expected grid_side >= 0, found ", grid_side);
    stats_.resize(static_cast<std::size_t>(L_ * H_ * kKinds));
    images_.assign(static_cast<std::size_t>(L_), 0);
  }
  index_t layers() const { return L_; }
  index_t heads() const { return H_; }
  index_t grid_side() const { return G_; }
  std::int64_t images(index_t layer) const {
    check_layer(layer, "images");
    return images_[std::size_t(layer)];
  }

  // Adds every image of one layer's maps (one batch). background: nullptr (background_mass not
  // measured for this batch) or one flag per token packed like the keep-mask, i.e. image b's
  // length(b) flags start at maps.offsets[b] (for images of equal length n: (batch, n)
  // row-major, background_tokens of each image concatenated).
  template <class T>
  void add(index_t layer, const AttentionMaps<T>& maps, const std::uint8_t* background = nullptr) {
    check_layer(layer, "add");
    check(maps.heads == H_, "KindAccumulator: layer ", layer, ": expected ", H_,
          " heads, found ", maps.heads);
    check(maps.batch >= 0, "KindAccumulator: layer ", layer, ": expected batch >= 0, found ",
          maps.batch);
    images_[std::size_t(layer)] += maps.batch;
    if (maps.batch == 0) return;

    // Heads are independent cells: one thread per head keeps each cell's image order fixed.
#pragma omp parallel for schedule(dynamic, 1) if (H_ > 1)
    for (index_t h = 0; h < H_; ++h) {
      std::vector<double> pbar;
      for (index_t b = 0; b < maps.batch; ++b) {
        const index_t n = maps.length(b);
        if (n == 0) continue;
        const std::uint8_t* bgb = background ? background + maps.offsets[b] : nullptr;
        const KindValues v = kind_values(maps.map(b, h), n, maps.keep_of(b),
                                         grid_side_for(n, G_), bgb, pbar);
        for (int k = 0; k < kKinds; ++k)
          if (!std::isnan(v[std::size_t(k)]))
            stats_[index(layer, h, Kind(k))].add(v[std::size_t(k)]);
      }
    }
  }

  // After model.forward(...) of a Model<Vit<T, Slot>>: adds every attention block's maps
  // (other blocks stay unmeasured). background as in add (the same flags for every layer).
  template <class M>
  void add_model(M& model, const std::uint8_t* background = nullptr) {
    const auto maps = attention_maps(model);
    check(index_t(maps.size()) == L_, "KindAccumulator: expected a model with ", L_,
          " blocks, found ", maps.size());
    for (std::size_t l = 0; l < maps.size(); ++l)
      if (maps[l]) add(index_t(l), *maps[l], background);
  }

  const RunningStats& stats(index_t layer, index_t head, Kind k) const {
    check_layer(layer, "stats");
    check(head >= 0 && head < H_, "KindAccumulator::stats: head ", head, " out of range (", H_,
          " heads)");
    return stats_[index(layer, head, k)];
  }
  // Merged over heads (in head order).
  RunningStats pooled(index_t layer, Kind k) const {
    check_layer(layer, "pooled");
    RunningStats s;
    for (index_t h = 0; h < H_; ++h) s.merge(stats_[index(layer, h, k)]);
    return s;
  }

  // {grid_side, heads, kinds: [names], layers: [{layer, images, count: {kind: n},
  //  mean: {kind: pooled mean | null}, std: {kind: pooled population std | null},
  //  heads: [{kind: mean | null}, ...]}]}; null where nothing was measured.
  nlohmann::json to_json() const {
    using nlohmann::json;
    auto number = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
    json names = json::array(), layers = json::array();
    for (Kind k : kAllKinds) names.push_back(name(k));
    for (index_t l = 0; l < L_; ++l) {
      json count = json::object(), mean = json::object(), sd = json::object();
      for (Kind k : kAllKinds) {
        const RunningStats s = pooled(l, k);
        count[name(k)] = s.count;
        mean[name(k)] = number(s.mean_or_nan());
        sd[name(k)] = number(s.stddev());
      }
      json heads = json::array();
      for (index_t h = 0; h < H_; ++h) {
        json e = json::object();
        for (Kind k : kAllKinds) e[name(k)] = number(stats_[index(l, h, k)].mean_or_nan());
        heads.push_back(std::move(e));
      }
      layers.push_back(json{{"layer", l},
                            {"images", images_[std::size_t(l)]},
                            {"count", std::move(count)},
                            {"mean", std::move(mean)},
                            {"std", std::move(sd)},
                            {"heads", std::move(heads)}});
    }
    return json{{"grid_side", G_}, {"heads", H_}, {"kinds", std::move(names)},
                {"layers", std::move(layers)}};
  }

 private:
  void check_layer(index_t layer, const char* what) const {
    check(layer >= 0 && layer < L_, "KindAccumulator::", what, ": layer ", layer,
          " out of range (", L_, " layers)");
  }
  std::size_t index(index_t l, index_t h, Kind k) const {
    return static_cast<std::size_t>((l * H_ + h) * kKinds + int(k));
  }

  index_t L_, H_, G_;
  std::vector<RunningStats> stats_;   // (L, H, kKinds)
  std::vector<std::int64_t> images_;  // (L)
};

}  // namespace seqswap::analysis
