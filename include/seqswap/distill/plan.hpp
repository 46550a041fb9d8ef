// Replacement plans: which layers of the teacher get a new mixer.
//   sparsest:g      the g layers with the highest sparsity score
//   densest:g       the g layers with the lowest sparsity score
//   random:g:seed   g layers drawn uniformly without replacement (seeded)
//   layers:3,5      exactly these layers
//   single:l        one layer
// Scores come from the sparsity profile (default S_ent = 1 - normalised entropy, per layer).
#pragma once
#include <algorithm>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap::distill {

struct Plan {
  std::string spec;             // as given
  std::vector<index_t> layers;  // sorted ascending, unique
};

namespace detail {
inline index_t parse_index(const std::string& s, const std::string& spec) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == s.size() && !s.empty() && v >= 0, "plan '", spec,
        "': expected a non-negative integer, found '", s, "'");
  return static_cast<index_t>(v);
}
inline std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, sep)) out.push_back(part);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}
}  // namespace detail

// Layers ordered from sparsest to densest (ties: lower layer first).
inline std::vector<index_t> rank_sparsest_first(const std::vector<double>& score) {
  std::vector<index_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), index_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t b) { return score[a] > score[b]; });
  return idx;
}

// Resolves `spec` for a model of `depth` layers with per-layer sparsity `score` (higher =
// sparser; may be empty when the plan does not need it).
inline Plan parse_plan(const std::string& spec, index_t depth, const std::vector<double>& score = {}) {
  const auto parts = detail::split(spec, ':');
  check(!parts.empty(), "plan: expected one of sparsest:g, densest:g, random:g:seed, layers:i,j, "
        "single:l; found an empty plan");
  const std::string& kind = parts[0];
  Plan p{spec, {}};
  auto need_score = [&] {
    check(static_cast<index_t>(score.size()) == depth, "plan '", spec, "': needs a sparsity score per layer (",
          depth, "), found ", score.size(), " scores");
  };
  auto group = [&](std::size_t i) {
    check(parts.size() > i, "plan '", spec, "': expected a group size after '", kind, ":'");
    const index_t g = detail::parse_index(parts[i], spec);
    check(g >= 1 && g <= depth, "plan '", spec, "': expected a group size in 1..", depth, ", found ", g);
    return g;
  };
  if (kind == "sparsest" || kind == "densest") {
    check(parts.size() == 2, "plan '", spec, "': expected ", kind, ":g");
    need_score();
    const index_t g = group(1);
    auto order = rank_sparsest_first(score);
    if (kind == "densest") std::reverse(order.begin(), order.end());
    p.layers.assign(order.begin(), order.begin() + g);
  } else if (kind == "random") {
    check(parts.size() == 3, "plan '", spec, "': expected random:g:seed");
    const index_t g = group(1);
    Rng rng(static_cast<std::uint64_t>(detail::parse_index(parts[2], spec)));
    std::vector<index_t> all(static_cast<std::size_t>(depth));
    std::iota(all.begin(), all.end(), index_t{0});
    for (index_t i = 0; i < g; ++i)  // partial Fisher-Yates
      std::swap(all[std::size_t(i)], all[std::size_t(i) + rng.below(std::uint64_t(depth - i))]);
    p.layers.assign(all.begin(), all.begin() + g);
  } else if (kind == "layers") {
    check(parts.size() == 2 && !parts[1].empty(), "plan '", spec, "': expected layers:i,j,...");
    for (const auto& s : detail::split(parts[1], ',')) p.layers.push_back(detail::parse_index(s, spec));
  } else if (kind == "single") {
    check(parts.size() == 2, "plan '", spec, "': expected single:l");
    p.layers.push_back(detail::parse_index(parts[1], spec));
  } else {
    fail("plan '", spec, "': unknown kind '", kind,
         "'; expected one of sparsest:g, densest:g, random:g:seed, layers:i,j, single:l");
  }
  std::sort(p.layers.begin(), p.layers.end());
  p.layers.erase(std::unique(p.layers.begin(), p.layers.end()), p.layers.end());
  for (index_t l : p.layers)
    check(l < depth, "plan '", spec, "': layer ", l, " does not exist (the model has ", depth, " layers: 0..",
          depth - 1, ")");
  return p;
}

}  // namespace seqswap::distill
