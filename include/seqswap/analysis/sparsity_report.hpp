// A sparsity profile as files: JSON (every metric, variant and row kind per layer and head)
// and CSV, written atomically. The metric math is analysis/sparsity.hpp.
#pragma once
#include <filesystem>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "seqswap/analysis/sparsity.hpp"
#include "seqswap/io/atomic_file.hpp"

namespace seqswap::analysis {

namespace detail {
inline nlohmann::json number_or_null(double x) {
  return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr);
}
inline nlohmann::json summary_json(const MetricSummary& s) {
  return {{"count", s.count}, {"mean", number_or_null(s.mean)}, {"std", number_or_null(s.std)}};
}
}  // namespace detail

// {options, layers, heads, images, names, layer_stats: [{layer, attention, keep_ratio,
//  all_heads: {variant: {rows: {metric: {count, mean, std, head_spread}}}}, heads: [...]}],
//  ranking: {metric, variant, rows, sparsest_first, by_metric}, kendall_tau: {variant: matrix}}
inline void to_json(nlohmann::json& j, const SparsityProfile& p) {
  using nlohmann::json;
  const index_t L = p.layers, H = p.heads;
  json metrics = json::array(), dirs = json::object();
  for (Metric m : kAllMetrics) {
    metrics.push_back(name(m));
    dirs[name(m)] = direction(m) > 0 ? "higher_is_sparser" : "lower_is_sparser";
  }
  auto cells = [&](index_t l, index_t h) {
    json c = json::object();
    for (int v = 0; v < kVariants; ++v)
      for (int r = 0; r < kRowKinds; ++r)
        for (Metric m : kAllMetrics) {
          json s = detail::summary_json(p.at(l, h, m, Variant(v), Rows(r)));
          if (h == H) s["head_spread"] = detail::number_or_null(p.spread(l, m, Variant(v), Rows(r)));
          c[name(Variant(v))][name(Rows(r))][name(m)] = std::move(s);
        }
    return c;
  };
  json layers = json::array();
  for (index_t l = 0; l < L; ++l) {
    json e = {{"layer", l}, {"attention", bool(p.measured[std::size_t(l)])}};
    e["keep_ratio"] = p.keep_mask[std::size_t(l)] ? detail::summary_json(p.keep_ratio[std::size_t(l)])
                                                   : json(nullptr);
    if (p.measured[std::size_t(l)]) {
      e["all_heads"] = cells(l, H);
      json hs = json::array();
      for (index_t h = 0; h < H; ++h) hs.push_back(cells(l, h));
      e["heads"] = std::move(hs);
    }
    layers.push_back(std::move(e));
  }
  json by_metric = json::object(), kendall = json::object();
  for (int v = 0; v < kVariants; ++v) {
    json mat = json::array();
    for (Metric a : kAllMetrics) {
      by_metric[name(Variant(v))][name(a)] = p.ranking(a, Variant(v));
      json row = json::array();
      for (Metric b : kAllMetrics) row.push_back(detail::number_or_null(p.kendall_tau(a, b, Variant(v))));
      mat.push_back(std::move(row));
    }
    kendall[name(Variant(v))] = std::move(mat);
  }
  j = json{{"options",
            {{"top_p", p.options.top_p}, {"tau", p.options.tau}, {"grid_side", p.options.grid_side}}},
           {"layers", L},
           {"heads", H},
           {"images", p.images},
           {"metrics", metrics},
           {"metric_direction", dirs},
           {"variants", {name(Variant::all_keys), name(Variant::drop_cls)}},
           {"rows", {name(Rows::cls), name(Rows::patch), name(Rows::all)}},
           {"std", "population standard deviation over rows (heads, queries, images)"},
           {"layer_stats", std::move(layers)},
           {"ranking",
            {{"metric", name(Metric::entropy_sparsity)},
             {"variant", name(Variant::all_keys)},
             {"rows", name(Rows::all)},
             {"sparsest_first", p.ranking()},
             {"by_metric", std::move(by_metric)}}},
           {"kendall_tau", {{"metrics", metrics}, {"matrix", std::move(kendall)}}}};
}

// Long format, one line per cell: layer,head,variant,rows,metric,count,mean,std (head "all" =
// pooled over heads; metric keep_ratio: tokens kept per image, with empty variant and rows).
inline std::string to_csv(const SparsityProfile& p) {
  std::ostringstream os;
  os.precision(10);
  const auto num = [](std::ostream& o, double x) -> std::ostream& {  // empty when not finite
    if (std::isfinite(x)) o << x;
    return o;
  };
  os << "layer,head,variant,rows,metric,count,mean,std\n";
  for (index_t l = 0; l < p.layers; ++l) {
    if (p.keep_mask[std::size_t(l)]) {
      const auto& k = p.keep_ratio[std::size_t(l)];
      os << l << ",all,,,keep_ratio," << k.count << ',';
      num(os, k.mean) << ',';
      num(os, k.std) << '\n';
    }
    if (!p.measured[std::size_t(l)]) continue;
    for (index_t h = 0; h <= p.heads; ++h)
      for (int v = 0; v < kVariants; ++v)
        for (int r = 0; r < kRowKinds; ++r)
          for (Metric m : kAllMetrics) {
            const auto& s = p.at(l, h, m, Variant(v), Rows(r));
            os << l << ',';
            if (h == p.heads) os << "all"; else os << h;
            os << ',' << name(Variant(v)) << ',' << name(Rows(r)) << ',' << name(m) << ','
               << s.count << ',';
            num(os, s.mean) << ',';
            num(os, s.std) << '\n';
          }
  }
  return os.str();
}

inline void write_json(const std::filesystem::path& path, const SparsityProfile& p) {
  io::write_file_atomic(path, nlohmann::json(p).dump(2) + "\n");
}
inline void write_csv(const std::filesystem::path& path, const SparsityProfile& p) {
  io::write_file_atomic(path, to_csv(p));
}

}  // namespace seqswap::analysis
