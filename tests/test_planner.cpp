// The replacement planner's core (distill/planner.hpp): the DP against brute force on small
// random instances, the conservative rounding, pinned layers, the correction loop on fake
// oracles (a uniformly optimistic model, an interaction the additive model misses, an
// unreachable budget), the plan JSON round trip and the errors for bad budgets and names.
#include "seqswap/distill/planner.hpp"

#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace seqswap;
using namespace seqswap::distill;

namespace {

// L layers, each with attention (cost 10, drop 0) and K - 1 mixers with random costs below it and
// drops that are whole units (so the rounding is exact and brute force sees the same problem).
PlanProblem random_problem(std::mt19937& g, std::size_t L, std::size_t K, double budget) {
  std::uniform_real_distribution<double> cost(1.0, 9.5);
  std::uniform_int_distribution<int> units(0, 60);
  PlanProblem p;
  p.budget = budget;
  for (std::size_t l = 0; l < L; ++l) {
    std::vector<LayerOption> o{{kKeepAttention, 10.0, 0.0, 0.0}};
    for (std::size_t k = 1; k < K; ++k) o.push_back({"m" + std::to_string(k), cost(g), units(g) * p.unit, 0.0});
    p.layers.push_back(o);
  }
  return p;
}

double brute_force(const PlanProblem& p) {
  const std::size_t L = p.layers.size();
  std::vector<std::size_t> idx(L, 0);
  double best = 1e300;
  while (true) {
    long u = 0;
    double c = 0;
    for (std::size_t l = 0; l < L; ++l) {
      u += p.units(p.layers[l][idx[l]].drop);
      c += p.layers[l][idx[l]].cost;
    }
    if (u <= std::lround(p.budget / p.unit)) best = std::min(best, c);
    std::size_t l = 0;
    while (l < L && ++idx[l] == p.layers[l].size()) idx[l++] = 0;
    if (l == L) return best;
  }
}

}  // namespace

TEST_CASE("planner: the DP finds the brute-force optimum", "[planner]") {
  std::mt19937 g(11);
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t L = 1 + trial % 6, K = 2 + trial % 3;
    const double budget = (trial % 5) * 0.004;  // 0 .. 0.016: from "nothing may change" to loose
    const auto p = random_problem(g, L, K, budget);
    const Choice c = solve(p);
    INFO("trial " << trial << ", L " << L << ", K " << K << ", budget " << budget);
    REQUIRE(c.drop <= budget + 1e-12);
    REQUIRE(c.cost == Approx(brute_force(p)).epsilon(1e-12));
  }
}

TEST_CASE("planner: rounding up is conservative; pinned layers keep attention", "[planner]") {
  PlanProblem p;
  p.budget = 0.0003;
  for (int l = 0; l < 2; ++l) p.layers.push_back({{kKeepAttention, 10, 0, 0}, {"min_gru", 4, 0.00015, 0}});
  // 0.00015 rounds up to 2 units of 1e-4: only one of the two layers fits 3 units, although
  // both together (0.0003) would fit unrounded.
  Choice c = solve(p);
  CHECK(c.cost == Approx(14));
  CHECK(c.drop == Approx(0.00015));
  p.unit = 5e-5;  // a finer unit sees the exact sum
  CHECK(solve(p).cost == Approx(8));
  // A negative prediction counts as zero, never as room for another layer.
  p.layers[0][1].drop = -0.01;
  CHECK(solve(p).drop == Approx(0.00015));
  // Pinned: layer 1 keeps attention whatever it would save.
  c = solve(p, {false, true});
  CHECK(c.option == std::vector<std::size_t>{1, 0});
}

TEST_CASE("planner: bad problems are refused with the reason", "[planner]") {
  PlanProblem p;
  p.layers.push_back({{kKeepAttention, 10, 0, 0}, {"min_gru", 4, 0.001, 0}});
  p.budget = -0.01;
  CHECK_THROWS_WITH(solve(p), Catch::Contains("expected a budget in [0, 1)") && Catch::Contains("-0.01"));
  p.budget = 1.5;
  CHECK_THROWS_WITH(solve(p), Catch::Contains("budget in [0, 1)"));
  p.budget = 0.01;
  p.layers[0][1].cost = NAN;
  CHECK_THROWS_WITH(solve(p), Catch::Contains("option 'min_gru'") && Catch::Contains("finite"));
  p.layers[0] = {{"min_gru", 4, 0.001, 0}};
  CHECK_THROWS_WITH(solve(p), Catch::Contains("no 'attention' option"));
  p.layers.clear();
  CHECK_THROWS_WITH(solve(p), Catch::Contains("at least one layer"));
}

TEST_CASE("planner: the correction loop on fake oracles", "[planner]") {
  std::mt19937 g(5);
  auto p = random_problem(g, 8, 4, 0.01);
  const auto true_drop = [&](const Choice& c, double factor, double interaction) {
    double d = 0;
    int replaced = 0;
    for (std::size_t l = 0; l < c.option.size(); ++l) {
      d += factor * std::max(0.0, p.layers[l][c.option[l]].drop);
      replaced += p.layers[l][c.option[l]].mixer != kKeepAttention;
    }
    return d + (replaced >= 3 ? interaction : 0.0);
  };
  SECTION("the model is right: the first plan is kept") {
    const auto r = back_off(p, [&](const Choice& c) { return true_drop(c, 1.0, 0.0); }, 5);
    REQUIRE(r.met);
    CHECK(r.attempts.size() == 1);
    CHECK(r.last().choice == solve(p));
  }
  SECTION("the model is optimistic by 1.6x: calibrated, then met") {
    const auto r = back_off(p, [&](const Choice& c) { return true_drop(c, 1.6, 0.0); }, 5);
    REQUIRE(r.met);
    CHECK(r.attempts.size() >= 2);
    CHECK(r.last().measured <= p.budget);
    CHECK(r.last().scale == Approx(r.attempts[0].measured / r.attempts[0].choice.drop));
    // Still better than keeping every layer.
    CHECK(r.last().choice.cost < 10.0 * 8);
  }
  SECTION("an interaction the additive model misses: layers are pinned until it is met") {
    const auto r = back_off(p, [&](const Choice& c) { return true_drop(c, 1.0, 0.02); }, 12);
    REQUIRE(r.met);
    int replaced = 0;
    for (std::size_t l = 0; l < 8; ++l) replaced += p.layers[l][r.last().choice.option[l]].mixer != kKeepAttention;
    CHECK(replaced <= 2);
  }
  SECTION("a pessimistic model: without slack the first plan is kept, with slack a cheaper one is found") {
    const auto truth = [&](const Choice& c) { return true_drop(c, 0.4, 0.0); };
    const auto first = back_off(p, truth, 6);
    REQUIRE(first.met);
    CHECK(first.attempts.size() == 1);
    CHECK(first.chosen == 0);
    const auto slack = back_off(p, truth, 6, true);
    REQUIRE(slack.met);
    CHECK(slack.attempts.size() >= 2);
    CHECK(slack.attempts.size() <= 6);
    CHECK(slack.attempts[0].choice == first.answer().choice);
    CHECK(slack.answer().choice.cost < first.answer().choice.cost);
    CHECK(within_budget(slack.answer().measured, p.budget));
    // The answer is the cheapest attempt that met the budget, and no plan was measured twice.
    for (std::size_t i = 0; i < slack.attempts.size(); ++i) {
      const auto& a = slack.attempts[i];
      if (within_budget(a.measured, p.budget)) CHECK(a.choice.cost >= slack.answer().choice.cost);
      for (std::size_t j = 0; j < i; ++j) CHECK_FALSE(slack.attempts[j].choice == a.choice);
    }
  }
  SECTION("with slack, an exact model stops after one run") {
    const auto r = back_off(p, [&](const Choice& c) { return true_drop(c, 1.0, 0.0); }, 5, true);
    REQUIRE(r.met);
    CHECK(r.attempts.size() == 1);
  }
  SECTION("with slack, a cheaper plan that fails leaves the met one as the answer") {
    // Pessimistic alone, but replacing three or more layers costs 0.05 more: the cheaper plans fail.
    const auto r = back_off(p, [&](const Choice& c) { return true_drop(c, 0.4, 0.05); }, 12, true);
    REQUIRE(r.met);
    CHECK(within_budget(r.answer().measured, p.budget));
    for (const auto& a : r.attempts)
      if (within_budget(a.measured, p.budget)) CHECK(a.choice.cost >= r.answer().choice.cost);
  }
  SECTION("a drop equal to the budget, up to the rounding of a difference of accuracies, meets it") {
    const double drop = 0.8965 - 0.8865;  // 100 of 10,000 images: 0.010000000000000009 in double
    REQUIRE(drop > 0.01);
    CHECK(within_budget(drop, 0.01));
    CHECK_FALSE(within_budget(0.0101, 0.01));
    const auto r = back_off(p, [&](const Choice&) { return drop; }, 4);
    CHECK(r.met);
    CHECK(r.attempts.size() == 1);
  }
  SECTION("an unreachable budget: the run budget ends the loop, not met") {
    const auto r = back_off(p, [&](const Choice&) { return 0.5; }, 4);
    CHECK_FALSE(r.met);
    CHECK(r.attempts.size() <= 4);
  }
  CHECK_THROWS_WITH(back_off(p, [](const Choice&) { return 0.0; }, 0), Catch::Contains("at least one correction run"));
}

TEST_CASE("planner: the plan JSON round-trips and bad plans are refused", "[planner]") {
  PlanProblem p;
  p.budget = 0.01;
  for (int l = 0; l < 3; ++l)
    p.layers.push_back({{kKeepAttention, 10, 0, 0}, {"min_gru", 4, 0.004, 0}, {"selective_ssm", 5, 0.002, 0}});
  const Choice c = solve(p);
  const auto j = plan_json(p, c, "latency");
  CHECK(j["objective"] == "latency");
  const std::vector<std::string> known{"min_gru", "selective_ssm"};
  const auto back = read_plan_json(nlohmann::json::parse(j.dump()), 3, known, "plan.json");
  for (std::size_t l = 0; l < 3; ++l) CHECK(back[l] == p.layers[l][c.option[l]].mixer);
  // Layers not listed keep attention.
  CHECK(read_plan_json(nlohmann::json::parse(R"({"layers": [{"layer": 2, "mixer": "min_gru"}]})"), 3, known, "p") ==
        std::vector<std::string>{"attention", "attention", "min_gru"});
  const auto bad = [&](const char* text) { return read_plan_json(nlohmann::json::parse(text), 3, known, "plan.json"); };
  CHECK_THROWS_WITH(bad(R"({"layers": [{"layer": 1, "mixer": "transformer_xl"}]})"),
                    Catch::Contains("unknown mixer 'transformer_xl'"));
  CHECK_THROWS_WITH(bad(R"({"layers": [{"layer": 3, "mixer": "min_gru"}]})"), Catch::Contains("layer 3 out of range"));
  CHECK_THROWS_WITH(bad(R"({"layers": [{"layer": 1, "mixer": "min_gru"}, {"layer": 1, "mixer": "min_gru"}]})"),
                    Catch::Contains("appears twice"));
  CHECK_THROWS_WITH(bad(R"({"mixers": []})"), Catch::Contains("\"layers\" array"));
}
