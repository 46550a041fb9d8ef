// The study's report (analysis/study_report.hpp) from hand-made records: the record helpers
// (group arms, teacher cells, the gap series, the causal layers) and the verdicts the report
// and summary.json state for claims 1 and 2, in both directions; and the study's configuration
// (analysis/study_config.hpp) read strictly.
#include "seqswap/analysis/study_report.hpp"

#include "seqswap/analysis/study_config.hpp"

#include <string>
#include <vector>

#include "test_util.hpp"

using namespace seqswap;
using namespace seqswap::analysis::study;

namespace {

json run(const std::string& mixer, const std::string& plan, double drop) {
  return json{{"mixer", mixer}, {"plan", plan}, {"layers", {0}}, {"drop_stage2", drop}};
}
json sweep_run(index_t layer, double drop) {
  return json{{"mixer", "min_gru"}, {"plan", "single:" + std::to_string(layer)}, {"layers", {layer}},
              {"drop_stage2", drop}, {"mean_nmse", 0.1 * double(layer)}, {"mean_nmse_free", 0.1 * double(layer)}};
}

// Four layers, one mixer, g = 2; sparsest-arm drops `sparse`, densest-arm drops `dense`.
Records records(const std::vector<double>& sparse, const std::vector<double>& dense) {
  Records r;
  r.config = preset("micro");
  r.config.mixers = {"min_gru"};
  r.config.group_sizes = {2};
  r.config.causal_mixers = {};
  r.config.causal_layers = {};
  r.vit.depth = 4;
  r.test_images = 100;
  r.teacher_accuracy = 0.9;
  r.scores = {0.10, 0.40, 0.20, 0.30};  // sparsest 0.40, densest 0.10: ratio 4 (claim 1 holds)
  json layers = json::array();
  for (double s : r.scores)
    layers.push_back({{"all_heads",
                       {{"all_keys",
                         {{"cls", {{"entropy_sparsity", {{"mean", s}}}}},
                          {"all", {{"gini", {{"mean", s}}}, {"distance", {{"mean", 3.0 - s}}}}}}}}}});
  r.profile = {{"layer_stats", layers}};
  r.kinds = {{"kinds", json::array()}, {"layers", json::array()}};
  r.sweep_stats = {{"min_gru", {{"spearman", 0.8}, {"ci", {0.1, 1.0}}, {"p", 0.25}}}};
  for (index_t l = 0; l < 4; ++l) r.sweep.push_back(sweep_run(l, 0.01 * double(l + 1)));
  for (double d : sparse) r.groups.push_back(run("min_gru", "sparsest:2", d));
  for (double d : dense) r.groups.push_back(run("min_gru", "densest:2", d));
  r.groups.push_back(run("min_gru", "random:2:7", 0.03));
  return r;
}

}  // namespace

TEST_CASE("study report: record helpers", "[analysis][report]") {
  const auto r = records({0.01, 0.02}, {0.05, 0.06});
  const auto g = group_drops(r.groups, "min_gru", 2);
  CHECK(g.sparsest == std::vector<double>{0.01, 0.02});
  CHECK(g.densest == std::vector<double>{0.05, 0.06});
  CHECK(g.random == std::vector<double>{0.03});
  CHECK(group_drops(r.groups, "min_gru", 3).sparsest.empty());
  CHECK(sweep_drops(r.sweep, 4, "min_gru", "drop_stage2")[2] == std::vector<double>{0.03});
  CHECK(sweep_mixers(r.config) == std::vector<std::string>{"min_gru"});
  // By S_ent, sparsest first: layers 1, 3, 2, 0; the first, the middle (index 4 / 2) and the last.
  CHECK(causal_layers(r.config, r.scores) == std::vector<index_t>{1, 2, 0});
  CHECK(arm({0.5, 0.7}) == "0.6000 ± 0.1414 (2)");
  CHECK(fmt(NAN) == "n/a");

  // Guided runs: grouped by teacher, ordered by keep ratio (densest first); the matched dense
  // teacher is a reference, not a point of the gap series.
  std::vector<json> halting;
  const auto guided = [&](const char* teacher, const char* role, double keep, double gap) {
    halting.push_back({{"mixer", "min_gru"}, {"teacher", teacher}, {"role", role}, {"teacher_accuracy", 0.9},
                       {"teacher_keep", keep}, {"gap", gap}, {"gap_own", gap + 1}});
  };
  guided("halting-a", "halting", 0.6, 0.02);
  guided("dense", "dense", 1.0, 0.05);
  guided("halting-a", "halting", 0.6, 0.04);
  guided("matched", "dense_matched", 1.0, 0.07);
  halting.push_back({{"mixer", "min_gru"}, {"teacher", "x"}, {"pipeline", "group"}});  // left out
  const auto cells = teacher_cells(halting, "min_gru");
  REQUIRE(cells.size() == 3);
  CHECK(cells[0].teacher == "dense");
  CHECK(cells[2].teacher == "halting-a");
  CHECK(cells[2].gaps == std::vector<double>{0.02, 0.04});
  const auto series = gap_series(halting, "min_gru");
  REQUIRE(series.size() == 2);  // dense (sparsity 0) and halting-a (0.4)
  CHECK(std::get<0>(series[1]) == Approx(0.4));
  CHECK(std::get<1>(series[1]) == Approx(0.03));
}

TEST_CASE("study report: claims 1 and 2 decided by the records", "[analysis][report]") {
  ReportExtras x{.report_only = true, .missing = 2, .out_dir = "results/x"};
  SECTION("sparser layers cost less: claim 2 holds") {
    const auto r = records({0.010, 0.012, 0.011, 0.013}, {0.050, 0.052, 0.049, 0.051});
    Report rep(r, x);
    const std::string md = rep.markdown();
    CHECK(rep.summary()["claims"]["1"] == "holds");
    CHECK(rep.summary()["claims"]["2"] == "holds");
    CHECK(rep.summary()["claims"]["3"] == "not run");  // --report-only leaves section 3 out
    CHECK(md.find("| min_gru | 2 | 0.0115 ± 0.0013 (4) | 0.0505 ± 0.0013 (4) | 0.0300 (1) | -0.0390 |") !=
          std::string::npos);
    CHECK(md.find("**Partial report** (--report-only): 2 replacement runs") != std::string::npos);
    CHECK(md.find("scripts/run_study.sh micro results/x 2") != std::string::npos);
  }
  SECTION("sparser layers cost more: claim 2 reversed") {
    Report rep(records({0.050, 0.052, 0.049, 0.051}, {0.010, 0.012, 0.011, 0.013}), x);
    rep.markdown();
    CHECK(rep.summary()["claims"]["2"] == "reversed");
  }
  SECTION("one seed per arm: no interval, so inconclusive") {
    Report rep(records({0.01}, {0.05}), x);
    const std::string md = rep.markdown();
    CHECK(rep.summary()["claims"]["2"] == "inconclusive");
    CHECK(md.find("[n/a, n/a]") != std::string::npos);
  }
}

TEST_CASE("study config: presets and strict JSON", "[analysis][report]") {
  StudyConfig c = preset("micro");
  CHECK(c.mixers == std::vector<std::string>{"min_gru"});
  CHECK(c.stage1_steps == 3);
  apply_json(c, json{{"mixers", {"linear_attention"}}, {"sweep_seeds", 2}}, "test.json");
  CHECK(c.mixers == std::vector<std::string>{"linear_attention"});
  CHECK(c.sweep_seeds == 2);
  CHECK_THROWS_WITH(apply_json(c, json{{"mixerz", {"min_gru"}}}, "test.json"), Catch::Contains("mixerz"));
  CHECK_THROWS_WITH(apply_json(c, json{{"sweep_seeds", 1.5}}, "test.json"), Catch::Contains("sweep_seeds"));
  CHECK_THROWS_WITH(preset("huge"), Catch::Contains("expected quick, full, paper or micro, found 'huge'"));
}
