// The replacement planner's core (issue 18): choose, for every layer, a mixer or "keep
// attention" so that the objective (latency, FLOPs or parameters: any additive cost) is as small
// as possible while the predicted accuracy drop stays within a budget; then correct the
// prediction with measurements until a distilled student meets the budget.
//
// The search is a multiple-choice knapsack, solved exactly by dynamic programming over layers
// and drop units: a layer's predicted drop is rounded UP to a multiple of `unit` (default 1e-4,
// a hundredth of a point), so every plan the search accepts also meets the budget with the
// unrounded drops; the plan is optimal among the plans whose rounded drops fit. Negative
// predictions count as 0 (a replacement is never assumed to help). Ties in cost go to the
// smaller predicted drop, then to the lower option index (attention first), so the result is
// deterministic.
//
// The correction loop (back_off) asks an oracle (in the driver: distil the chosen student and
// measure its drop on the test set) and, while the measured drop exceeds the budget, scales
// every prediction by measured / predicted (the additive model's error on this plan) and
// re-solves; when that leaves the plan unchanged, the replaced layer with the largest scaled
// prediction is pinned to attention. It stops at the first plan that meets the budget or when
// its run budget is spent, and reports every plan it measured.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap::distill {

inline constexpr const char* kKeepAttention = "attention";

// One choice for one layer: a mixer (or kKeepAttention) with its cost and its predicted drop
// (accuracy points as a fraction, e.g. 0.004) and that prediction's standard error.
struct LayerOption {
  std::string mixer;
  double cost = 0;
  double drop = 0;
  double drop_se = 0;
};

// Whether a measured drop meets the budget. Accuracies are counts over a test set, and their
// difference in double carries rounding (0.8965 − 0.8865 = 0.010000000000000009): a drop equal to
// the budget up to that rounding meets it.
inline bool within_budget(double drop, double budget) { return drop <= budget + 1e-9 * std::max(1.0, std::abs(budget)); }

struct PlanProblem {
  std::vector<std::vector<LayerOption>> layers;  // per layer: its options (one must be kKeepAttention)
  double budget = 0.01;                          // predicted drop allowed in total
  double unit = 1e-4;                            // the search's drop resolution

  void validate() const {
    check(std::isfinite(budget) && budget >= 0 && budget < 1, "planner: expected a budget in [0, 1) (a fraction of "
          "accuracy: 0.01 = one point), found ", budget);
    check(std::isfinite(unit) && unit > 0 && budget / unit <= 1e6, "planner: expected a drop unit > 0 with at most "
          "1e6 units in the budget, found unit ", unit, " for budget ", budget);
    check(!layers.empty(), "planner: expected at least one layer, found none");
    for (std::size_t l = 0; l < layers.size(); ++l) {
      check(!layers[l].empty(), "planner: layer ", l, " has no options");
      bool keep = false;
      for (const auto& o : layers[l]) {
        check(std::isfinite(o.cost) && std::isfinite(o.drop) && std::isfinite(o.drop_se), "planner: layer ", l,
              " option '", o.mixer, "': expected finite cost and drop, found cost ", o.cost, ", drop ", o.drop);
        keep = keep || o.mixer == kKeepAttention;
      }
      check(keep, "planner: layer ", l, " has no '", kKeepAttention, "' option (keeping the layer must always be "
            "possible)");
    }
  }
  // A drop in whole units, rounded up (negative: 0).
  long units(double drop) const { return drop <= 0 ? 0 : static_cast<long>(std::ceil(drop / unit - 1e-9)); }
};

// A chosen plan: option index per layer, and its totals.
struct Choice {
  std::vector<std::size_t> option;  // per layer, into PlanProblem::layers[l]
  double cost = 0;
  double drop = 0;  // predicted (unrounded, negatives as 0)

  bool operator==(const Choice& o) const { return option == o.option; }
};

inline Choice totals(const PlanProblem& p, std::vector<std::size_t> option) {
  Choice c{std::move(option), 0, 0};
  for (std::size_t l = 0; l < c.option.size(); ++l) {
    const auto& o = p.layers[l][c.option[l]];
    c.cost += o.cost;
    c.drop += std::max(0.0, o.drop);
  }
  return c;
}

// The cheapest plan whose rounded predicted drops fit the budget (exact, by DP). Keeping every
// layer always fits, so there is always an answer. `pinned[l]` forces layer l to keep attention.
inline Choice solve(const PlanProblem& p, const std::vector<bool>& pinned = {}) {
  p.validate();
  const std::size_t L = p.layers.size();
  const long U = static_cast<long>(std::floor(p.budget / p.unit + 1e-9));
  const double inf = std::numeric_limits<double>::infinity();
  // best[l][u]: the least cost of layers l.. using at most u units; pick[l][u]: its option.
  std::vector<std::vector<double>> best(L + 1, std::vector<double>(std::size_t(U + 1), 0.0));
  std::vector<std::vector<std::size_t>> pick(L, std::vector<std::size_t>(std::size_t(U + 1), 0));
  for (std::size_t l = L; l-- > 0;) {
    for (long u = 0; u <= U; ++u) {
      double b = inf, b_drop = inf;
      std::size_t arg = 0;
      for (std::size_t k = 0; k < p.layers[l].size(); ++k) {
        const auto& o = p.layers[l][k];
        if (l < pinned.size() && pinned[l] && o.mixer != kKeepAttention) continue;
        const long w = p.units(o.drop);
        if (w > u) continue;
        const double c = o.cost + best[l + 1][std::size_t(u - w)];
        const double d = std::max(0.0, o.drop);
        const double tol = 1e-12 * std::abs(c);  // equal costs up to rounding: the smaller drop wins
        if (b == inf || c < b - tol || (c <= b + tol && d < b_drop)) {
          b = c;
          b_drop = d;
          arg = k;
        }
      }
      best[l][std::size_t(u)] = b;
      pick[l][std::size_t(u)] = arg;
    }
  }
  std::vector<std::size_t> option(L);
  long u = U;
  for (std::size_t l = 0; l < L; ++l) {
    option[l] = pick[l][std::size_t(u)];
    u -= p.units(p.layers[l][option[l]].drop);
  }
  return totals(p, std::move(option));
}

// One measured plan of the correction loop.
struct Attempt {
  Choice choice;          // choice.drop: the scaled prediction it was solved with
  double scale = 1;       // the prediction scale
  double measured = NAN;  // the oracle's drop
};
struct BackOffResult {
  std::vector<Attempt> attempts;  // in order
  bool met = false;               // some attempt meets the budget
  std::size_t chosen = 0;         // the answer: the cheapest attempt that meets it (none: the last)
  const Attempt& last() const { return attempts.back(); }
  const Attempt& answer() const { return attempts[chosen]; }
};

// The correction loop: measure(choice) -> the student's measured drop. At most `max_runs` calls.
// With `use_slack`, a plan that meets the budget does not end the loop when its measured drop is
// below its prediction: the predictions are scaled down to that measurement (scale ← measured /
// predicted, at least one unit over the prediction) and the cheaper plan they allow is measured
// too; the loop ends when the model offers a plan already measured, or the runs are spent, and
// the answer is the cheapest plan that met the budget.
inline BackOffResult back_off(const PlanProblem& p, const std::function<double(const Choice&)>& measure, int max_runs,
                              bool use_slack = false) {
  check(max_runs >= 1, "planner: expected at least one correction run, found ", max_runs);
  BackOffResult r;
  std::vector<bool> pinned(p.layers.size(), false);
  double scale = 1;
  PlanProblem scaled = p;
  for (int run = 0; run < max_runs; ++run) {
    for (std::size_t l = 0; l < p.layers.size(); ++l)
      for (std::size_t k = 0; k < p.layers[l].size(); ++k) scaled.layers[l][k].drop = p.layers[l][k].drop * scale;
    Choice c = solve(scaled, pinned);
    if (!r.attempts.empty() && c == r.last().choice && within_budget(r.last().measured, p.budget)) break;  // converged
    if (!r.attempts.empty() && c == r.last().choice) {
      // The calibrated model still picks the plan that failed: keep the replaced layer with the
      // largest scaled prediction, and solve again.
      std::size_t worst = c.option.size();
      double worst_drop = -1;
      for (std::size_t l = 0; l < c.option.size(); ++l) {
        const auto& o = scaled.layers[l][c.option[l]];
        if (o.mixer != kKeepAttention && o.drop > worst_drop) {
          worst_drop = o.drop;
          worst = l;
        }
      }
      if (worst == c.option.size()) break;  // every layer keeps attention and still fails
      pinned[worst] = true;
      c = solve(scaled, pinned);
    }
    if (std::any_of(r.attempts.begin(), r.attempts.end(), [&](const Attempt& a) { return a.choice == c; })) break;
    const double m = measure(c);
    check(std::isfinite(m), "planner: the measured drop of a plan is not finite (", m, ")");
    r.attempts.push_back({c, scale, m});
    const double predicted = totals(p, c.option).drop;
    if (within_budget(m, p.budget)) {
      if (!r.met || c.cost < r.answer().choice.cost) r.chosen = r.attempts.size() - 1;
      r.met = true;
      if (!use_slack || predicted <= 0 || std::max(m, p.unit) / predicted >= scale) break;  // no slack to use
      scale = std::max(m, p.unit) / predicted;
      continue;
    }
    if (predicted > 0) scale = std::max(scale, m / predicted);  // scaled predictions then equal this measurement
  }
  if (!r.met) r.chosen = r.attempts.size() - 1;
  return r;
}

// The plan as JSON (what replace_layers --plan file:... reads, and the planner writes):
//   {"budget": 0.01, "objective": "latency", "cost": .., "predicted_drop": ..,
//    "layers": [{"layer": 0, "mixer": "attention"}, {"layer": 1, "mixer": "min_gru"}, ...]}
inline nlohmann::json plan_json(const PlanProblem& p, const Choice& c, const std::string& objective) {
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t l = 0; l < c.option.size(); ++l)
    layers.push_back({{"layer", l}, {"mixer", p.layers[l][c.option[l]].mixer}});
  return {{"budget", p.budget}, {"objective", objective}, {"cost", c.cost}, {"predicted_drop", c.drop},
          {"layers", layers}};
}

// Reads a plan back: the mixer per layer (kKeepAttention for kept layers), checked against the
// model's depth and the known mixer names.
inline std::vector<std::string> read_plan_json(const nlohmann::json& j, index_t depth,
                                               const std::vector<std::string>& known, const std::string& where) {
  check(j.is_object() && j.contains("layers") && j["layers"].is_array(), where,
        ": expected a plan object with a \"layers\" array, found ", j.dump().substr(0, 120));
  std::vector<std::string> mixer(std::size_t(depth), kKeepAttention);
  std::vector<bool> seen(std::size_t(depth), false);
  for (const auto& e : j["layers"]) {
    check(e.is_object() && e.contains("layer") && e["layer"].is_number_integer() && e.contains("mixer") &&
              e["mixer"].is_string(),
          where, ": expected {\"layer\": int, \"mixer\": string} entries, found ", e.dump().substr(0, 120));
    const auto l = e["layer"].get<long long>();
    check(l >= 0 && l < depth, where, ": layer ", l, " out of range (the model has ", depth, " layers)");
    check(!seen[std::size_t(l)], where, ": layer ", l, " appears twice");
    seen[std::size_t(l)] = true;
    const std::string m = e["mixer"];
    if (m != kKeepAttention && std::find(known.begin(), known.end(), m) == known.end()) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      fail(where, ": layer ", l, ": unknown mixer '", m, "' (expected '", kKeepAttention, "' or one of: ", names, ")");
    }
    mixer[std::size_t(l)] = m;
  }
  return mixer;
}

}  // namespace seqswap::distill
