// The planner's drop model (analysis/drop_model.hpp): d(l, m) = s_m · e_l fitted to measured
// single-layer drops. Hand-computed cases (an exact table with a missing cell, the layer-feature
// line, no residual freedom), the held-out validations on exact and on noisy tables (the 95%
// interval's coverage near 95%), the probe-layer rule and the refusals.
#include "seqswap/analysis/drop_model.hpp"

#include <random>
#include <string>
#include <vector>

#include "test_util.hpp"

using namespace seqswap;
using namespace seqswap::analysis;


namespace {

// An exact rank-1 table: scales {a: 1.5, b: 0.5} (mean 1), effects e, every cell but (3, b).
const std::vector<double> kEffects{0.010, 0.030, 0.002, 0.005, 0.008};
std::vector<DropCell> exact_table() {
  std::vector<DropCell> cells;
  for (std::size_t l = 0; l < kEffects.size(); ++l) {
    cells.push_back({l, "a", 1.5 * kEffects[l], 3});
    if (l != 3) cells.push_back({l, "b", 0.5 * kEffects[l], 1});
  }
  return cells;
}

}  // namespace

TEST_CASE("drop model: an exact product table is recovered, the missing cell predicted", "[drop_model]") {
  const auto cells = exact_table();
  const auto m = DropModel::fit(kEffects.size(), cells);
  CHECK(m.scale("a") == Approx(1.5).epsilon(1e-9));
  CHECK(m.scale("b") == Approx(0.5).epsilon(1e-9));
  for (std::size_t l = 0; l < kEffects.size(); ++l) CHECK(m.layer_effect(l) == Approx(kEffects[l]).epsilon(1e-9));
  const auto p = m.predict(3, "b");
  CHECK(p.drop == Approx(0.0025).epsilon(1e-9));
  CHECK_FALSE(p.measured);
  CHECK(m.predict(3, "a").measured);
  // 9 cells, 2 scales + 5 effects - 1 (the common scale) = 6 parameters: 3 residual dof, σ = 0.
  CHECK(m.residual_dof() == 3);
  CHECK(m.sigma() == Approx(0.0).margin(1e-12));
}

TEST_CASE("drop model: three cells of a 2x2 table, hand computed, no residual freedom", "[drop_model]") {
  // (0, a) 0.01, (1, a) 0.02, (0, b) 0.005: b is half of a, so (1, b) = 0.01; 3 cells, 3 parameters.
  const std::vector<DropCell> cells{{0, "a", 0.01, 1}, {1, "a", 0.02, 1}, {0, "b", 0.005, 1}};
  const auto m = DropModel::fit(2, cells);
  CHECK(m.predict(1, "b").drop == Approx(0.01).epsilon(1e-9));
  CHECK(m.scale("a") / m.scale("b") == Approx(2.0).epsilon(1e-9));
  CHECK((m.scale("a") + m.scale("b")) / 2 == Approx(1.0).epsilon(1e-12));
  CHECK(m.residual_dof() == 0);
  CHECK(std::isnan(m.sigma()));
  CHECK(std::isnan(m.predict(1, "b").se));
}

TEST_CASE("drop model: weights are seeds; the fit is the weighted least-squares one", "[drop_model]") {
  // One mixer in one layer measured twice as two cells (means 0.01 over 3 seeds, 0.02 over 1):
  // the effect is the weighted mean (3·0.01 + 0.02) / 4 = 0.0125.
  const std::vector<DropCell> cells{{0, "a", 0.01, 3}, {0, "a", 0.02, 1}};
  const auto m = DropModel::fit(1, cells);
  CHECK(m.predict(0, "a").drop == Approx(0.0125).epsilon(1e-9));
  // Residuals -0.0025 and +0.0075, 2 cells - 1 parameter: σ² = (0.0025² + 0.0075²) / 1.
  CHECK(m.sigma() == Approx(std::sqrt(0.0025 * 0.0025 + 0.0075 * 0.0075)).epsilon(1e-9));
}

TEST_CASE("drop model: a layer nobody measured gets its effect from the layer feature", "[drop_model]") {
  // Effects on the line e = 0.001 + 0.1·z over layers 0..4; layer 5 (z = 0.2) is not measured.
  const std::vector<double> z{0.05, 0.25, 0.01, 0.04, 0.07, 0.2};
  std::vector<DropCell> cells;
  for (std::size_t l = 0; l < 5; ++l) {
    cells.push_back({l, "a", 1.2 * (0.001 + 0.1 * z[l]), 1});
    cells.push_back({l, "b", 0.8 * (0.001 + 0.1 * z[l]), 1});
  }
  const auto m = DropModel::fit(6, cells, z);
  REQUIRE(m.knows_layer(5));
  CHECK_FALSE(m.layer_measured(5));
  CHECK(m.predict(5, "a").drop == Approx(1.2 * (0.001 + 0.1 * 0.2)).epsilon(1e-9));
  CHECK(m.predict(5, "b").drop == Approx(0.8 * (0.001 + 0.1 * 0.2)).epsilon(1e-9));
  // Without the feature that layer cannot be predicted, and the error says why.
  const auto bare = DropModel::fit(6, cells);
  CHECK_FALSE(bare.knows_layer(5));
  CHECK_THROWS_WITH(bare.predict(5, "a"), Catch::Contains("layer 5 was not measured"));
  // Leave-one-layer-out on the exact line: every held-out layer predicted exactly.
  const auto v = validate_leave_one_layer_out(6, cells, z);
  CHECK(v.cases.size() == 10);
  CHECK(v.mae == Approx(0.0).margin(1e-12));
  CHECK(v.baseline_mae > 0.001);
}

TEST_CASE("drop model: held-out validations on an exact table are exact, the baselines are not", "[drop_model]") {
  const auto cells = exact_table();
  const auto loo = validate_leave_one_cell_out(kEffects.size(), cells);
  CHECK(loo.cases.size() == 8);  // (3, a) cannot be held out: no other cell of layer 3
  CHECK(loo.mae == Approx(0.0).margin(1e-12));
  CHECK(loo.baseline_mae > 0.002);
  CHECK(loo.spearman > 0.99);  // two measured cells tie at 0.015; their predictions differ in the last bits
  const auto held = validate_held_out_mixer(kEffects.size(), cells, 2);
  CHECK(held.mae == Approx(0.0).margin(1e-12));
  CHECK(held.cases.size() == 5);  // a: layers 0, 2 (3 unknown without a); b: 1, 2, 4
}

TEST_CASE("drop model: on a noisy table the intervals cover about 95% of held-out cells", "[drop_model]") {
  std::mt19937_64 g(7);
  std::normal_distribution<double> noise(0.0, 0.001);
  std::uniform_real_distribution<double> eff(0.002, 0.03);
  const std::vector<double> s{1.3, 1.0, 0.7, 1.0};
  std::vector<DropCell> cells;
  std::vector<double> e(12);
  for (auto& x : e) x = eff(g);
  for (std::size_t l = 0; l < e.size(); ++l)
    for (std::size_t k = 0; k < s.size(); ++k) cells.push_back({l, "m" + std::to_string(k), s[k] * e[l] + noise(g), 1});
  const auto m = DropModel::fit(e.size(), cells);
  CHECK(m.sigma() > 0.0007);
  CHECK(m.sigma() < 0.0013);
  const auto loo = validate_leave_one_cell_out(e.size(), cells);
  CHECK(loo.cases.size() == cells.size());
  CHECK(loo.coverage95 > 0.85);
  CHECK(loo.mae < loo.baseline_mae / 2);
}

TEST_CASE("drop model: probe layers spread over the effects", "[drop_model]") {
  // Effects in order of size: layer 2 (0.002), 3, 4, 0, 1 (0.030). Two probes: the quantiles 0.25
  // and 0.75 of five layers sit at sorted positions 1 and 3: layers 3 and 0.
  const auto m = DropModel::fit(kEffects.size(), exact_table());
  CHECK(probe_layers(m, 2) == std::vector<std::size_t>{0, 3});
  CHECK(probe_layers(m, 1) == std::vector<std::size_t>{4});
  CHECK(probe_layers(m, 5).size() == 5);
  CHECK_THROWS_WITH(probe_layers(m, 6), Catch::Contains("between 1 and 5 probes, found 6"));
}

TEST_CASE("drop model: refusals name what was expected", "[drop_model]") {
  CHECK_THROWS_WITH(DropModel::fit(3, std::vector<DropCell>{}), Catch::Contains("at least one measured"));
  const std::vector<DropCell> one{{0, "a", 0.01, 1}};
  CHECK_THROWS_WITH(DropModel::fit(3, one, std::vector<double>{1.0}), Catch::Contains("one feature per layer (3), found 1"));
  const std::vector<DropCell> far{{5, "a", 0.01, 1}};
  CHECK_THROWS_WITH(DropModel::fit(3, far), Catch::Contains("measurement of layer 5 in a model of 3 layers"));
  const std::vector<DropCell> bad{{0, "a", std::nan(""), 1}};
  CHECK_THROWS_WITH(DropModel::fit(3, bad), Catch::Contains("finite drop"));
  CHECK_THROWS_WITH(DropModel::fit(3, one).predict(0, "zz"), Catch::Contains("no measurement of mixer 'zz'"));
}
