// The study's report (examples/sparsity_to_simplicity): report.md with a verdict per claim of
// METHOD.md and summary.json, rendered from the study's records (every run's JSON as the
// stages wrote it, the profile, the kinds, the efficiency measurements) and the few numbers the
// driver measures on its models (FLOPs per image). The verdict rules are docs/method.md's
// ("Study statistics"); the statistics are analysis/stats.hpp's. The record helpers below
// (cells, drops, series) serve the driver's stages and tables too.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/analysis/stats.hpp"
#include "seqswap/analysis/study_config.hpp"
#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/progress.hpp"
#include "seqswap/model/vit.hpp"

namespace seqswap::analysis::study {

// "x" to `prec` decimals, "n/a" when not finite.
inline std::string fmt(double x, int prec = 4) {
  if (!std::isfinite(x)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, x);
  return b;
}
// "mean ± std (n)" of one arm's drops.
inline std::string arm(const std::vector<double>& v) {
  return fmt(mean(v)) + (v.size() > 1 ? " ± " + fmt(sample_std(v)) : std::string()) + " (" + std::to_string(v.size()) +
         ")";
}
inline double std_or_zero(const std::vector<double>& v) { return v.size() > 1 ? sample_std(v) : 0.0; }

// A halting teacher is compared with dense teachers whose accuracies bracket its own, or lie
// within this much of it.
inline constexpr double kMatchSlack = 0.005;

// The mixers of the single-layer sweep.
inline std::vector<std::string> sweep_mixers(const StudyConfig& c) {
  return c.sweep_mixers.empty() ? std::vector<std::string>{c.sweep_mixer} : c.sweep_mixers;
}
// The causal test's layers: the configured ones, else the sparsest, the median and the densest
// by S_ent (scores: one per layer).
inline std::vector<index_t> causal_layers(const StudyConfig& c, const std::vector<double>& scores) {
  if (!c.causal_layers.empty()) return c.causal_layers;
  std::vector<index_t> order(scores.size());
  std::iota(order.begin(), order.end(), index_t(0));
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return scores[a] > scores[b]; });
  return {order.front(), order[order.size() / 2], order.back()};
}
// drops[l] over the seeds of mixer m's single-layer runs (`key` of each run record).
inline std::vector<std::vector<double>> sweep_drops(const std::vector<json>& sweep, index_t depth, const std::string& m,
                                                    const char* key) {
  std::vector<std::vector<double>> d(static_cast<std::size_t>(depth));
  for (const auto& j : sweep)
    if (j["mixer"] == m) d[std::size_t(j["layers"][0].get<index_t>())].push_back(j.value(key, double(NAN)));
  return d;
}

// Stage-2 drops of one (mixer, g) cell over its seeds (random: over its draws).
struct GroupDrops {
  std::vector<double> sparsest, random, densest;
};
inline GroupDrops group_drops(const std::vector<json>& runs, const std::string& mixer, index_t g,
                              const char* key = "drop_stage2") {
  GroupDrops r;
  const std::string gs = std::to_string(g);
  for (const auto& j : runs) {
    if (j["mixer"] != mixer) continue;
    const std::string plan = j["plan"];
    if (plan == "sparsest:" + gs) r.sparsest.push_back(j[key]);
    else if (plan == "densest:" + gs) r.densest.push_back(j[key]);
    else if (plan.rfind("random:" + gs + ":", 0) == 0) r.random.push_back(j[key]);
  }
  return r;
}

// The guided runs of one mixer grouped by teacher (group-pipeline rows left out), sorted by
// teacher sparsity: its role, accuracy, keep ratio and the per-seed gaps, relative gaps,
// top-1 agreements and gaps under the student's own halting.
struct TeacherCell {
  std::string teacher, role;
  double accuracy = 0, keep = 1;
  std::vector<double> gaps, relative, agreement, gaps_own;
};
inline std::vector<TeacherCell> teacher_cells(const std::vector<json>& halting, const std::string& mixer) {
  std::vector<TeacherCell> cells;
  for (const auto& r : halting) {
    if (r["mixer"] != mixer || r.value("pipeline", "guided") != "guided") continue;
    const std::string t = r["teacher"];
    auto it = std::find_if(cells.begin(), cells.end(), [&](const TeacherCell& c) { return c.teacher == t; });
    if (it == cells.end()) {
      TeacherCell c;
      c.teacher = t;
      c.role = r.value("role", "halting");
      c.accuracy = r["teacher_accuracy"];
      c.keep = r["teacher_keep"];
      cells.push_back(std::move(c));
      it = cells.end() - 1;
    }
    it->gaps.push_back(r["gap"]);
    it->gaps_own.push_back(r["gap_own"]);
    if (r.contains("relative_gap")) it->relative.push_back(r["relative_gap"]);
    if (r.contains("agreement")) it->agreement.push_back(r["agreement"]);
  }
  std::stable_sort(cells.begin(), cells.end(), [](const TeacherCell& a, const TeacherCell& b) { return a.keep > b.keep; });
  return cells;
}
// (teacher sparsity, mean gap, mean gap with the student's own halting) for one mixer, by
// sparsity: the dense teacher (halting off) and the halting teachers; the accuracy-matched
// dense teachers are references, not points of this series.
inline std::vector<std::tuple<double, double, double>> gap_series(const std::vector<json>& halting,
                                                                  const std::string& mixer) {
  std::vector<std::tuple<double, double, double>> v;
  for (const auto& c : teacher_cells(halting, mixer))
    if (c.role != "dense_matched") v.emplace_back(1.0 - c.keep, mean(c.gaps), mean(c.gaps_own));
  std::sort(v.begin(), v.end());
  return v;
}

// The study's records: what its stages produced (in memory, as written under runs/ and the tables).
struct Records {
  StudyConfig config;
  model::VitConfig vit;               // the teacher's shape
  index_t test_images = 0;            // evaluated on
  double teacher_accuracy = 0;
  std::vector<double> scores;         // S_ent per layer (profile)
  json profile = json::object();      // profile.json
  json kinds = json::object();        // kinds.json
  json sweep_stats = json::object();  // sweep_stats.json
  double sweep_rho = 0;               // the first sweep mixer's Spearman ρ
  std::vector<json> sweep, groups, budget, causal, causal_teachers, halting, halting_teachers;
  json efficiency = json::object();   // runs/efficiency.json
};

// What the report shows beyond the records: measured by the driver on its models, and how this
// invocation ran.
struct ReportExtras {
  std::vector<std::string> modules;               // rows of the per-module table, in order
  double teacher_mflops = NAN;                    // forward MFLOP per image (analysis/cost.hpp)
  std::map<std::string, double> student_mflops;   // per mixer: the sparsest half replaced
  std::map<std::string, double> halting_mflops;   // per halting teacher, at its keep ratios
  double elapsed_seconds = 0;                     // wall time of this invocation
  bool report_only = false;                       // --report-only: halting and efficiency not run
  std::size_t missing = 0;                        // replacement runs not finished (report_only)
  std::string out_dir;                            // the study's folder (for the continue hint)
};

class Report {
 public:
  // The report owns its records (the names below are views into them).
  Report(Records r, ReportExtras x)
      : r_(std::move(r)), c_(r_.config), cfg_(r_.vit), test_images_(r_.test_images), teacher_acc_(r_.teacher_accuracy),
        scores_(r_.scores), profile_(r_.profile), kinds_(r_.kinds), sweep_stats_(r_.sweep_stats), rho_(r_.sweep_rho),
        sweep_(r_.sweep), groups_(r_.groups), budget_(r_.budget), causal_(r_.causal),
        causal_teachers_(r_.causal_teachers), halting_(r_.halting), halting_teachers_(r_.halting_teachers),
        eff_(r_.efficiency), x_(std::move(x)) {}
  Report(const Report&) = delete;  // the views would point into the other report
  Report& operator=(const Report&) = delete;

  // report.md's text; summary() then holds the verdicts.
  std::string markdown() {
    std::ostringstream md;
    const bool quick = c_.preset != "full" && c_.preset != "paper";
    md << "# From sparsity to simplicity: study report\n\n";
    if (quick)
      md << "> **" << c_.preset << " preset**: reduced budgets (" << c_.stage1_steps << " + " << c_.stage2_steps
         << " optimizer steps per run, batch " << c_.batch << ", " << test_images_
         << " test images). The verdicts below are indicative only; run `--preset full` for meaningful ones.\n\n";
    md << "Teacher: `" << c_.checkpoint << "` (depth " << cfg_.depth << ", width " << cfg_.width << ", " << cfg_.heads
       << " heads, " << cfg_.tokens() << " tokens), test accuracy " << fmt(teacher_acc_) << " on " << test_images_
       << " test images. Configuration: `config.json`. Every table has CSV/JSON beside it.\n\n";

    // Claim 1
    md << "## 1. Attention sparsity differs from layer to layer\n\n![profile](s_ent_by_layer.png)\n![heads](s_ent_heads.png)\n\n";
    md << "| layer | S_ent (mean over heads, queries, images) |\n|---|---|\n";
    double lo = 1e9, hi = -1e9;
    for (index_t l = 0; l < cfg_.depth; ++l) {
      const double s = scores_[std::size_t(l)];
      lo = std::min(lo, s);
      hi = std::max(hi, s);
      md << "| " << l << " | " << fmt(s) << " |\n";
    }
    const double ratio = hi / std::max(lo, 1e-12);
    md << "\n**Verdict: " << (ratio >= 1.5 ? "holds" : "does not hold") << "** (rule: the sparsest layer's S_ent is at least "
       << "1.5x the densest's). Sparsest " << fmt(hi) << ", densest " << fmt(lo) << ", ratio " << fmt(ratio, 2) << ".\n\n";

    // Claim 2
    md << "## 2. Replacing sparse layers costs less than replacing dense ones\n\n";
    md << "Stage 1: " << (c_.protocol == "free" ? "free-running (the student end to end)" : "teacher-forced")
       << ", loss " << fmt(c_.stage1_mse_weight, 2) << " × layer MSE"
       << (c_.stage1_ce_weight > 0 ? " + " + fmt(c_.stage1_ce_weight, 2) + " × CE" : std::string()) << "; then stage 2 "
       << "(CE, every parameter). The verdict rules are fixed in docs/method.md (\"Study statistics\").\n\n";
    md << "### Groups at a fixed budget\n\n![groups](groups.png)\n\n";
    md << "Stage-2 accuracy drop, mean ± std over training seeds (n); Δ = drop(sparsest) − drop(densest) with its "
          "bootstrap 95% interval (seeds resampled within each arm).\n\n";
    md << "| mixer | g | sparsest | densest | random draws | Δ | 95% interval of Δ |\n|---|---|---|---|---|---|---|\n";
    std::vector<Interval> cells;
    json cells_json = json::array();
    const auto delta_row = [&](const std::vector<json>& runs, const std::string& m, index_t g, std::uint64_t seed) {
      const auto s = group_drops(runs, m, g);
      Interval ci{NAN, NAN};
      if (s.sparsest.size() >= 2 && s.densest.size() >= 2)  // an interval needs replicates on both arms
        ci = bootstrap_mean_difference(s.sparsest, s.densest, 10000, 0.95, seed);
      const double d = mean(s.sparsest) - mean(s.densest);
      return std::make_tuple(s, d, ci);
    };
    for (const auto& m : c_.mixers)
      for (index_t g : c_.group_sizes) {
        const auto [s, d, ci] = delta_row(groups_, m, g, c_.seed + std::uint64_t(cells.size()));
        cells.push_back(ci);
        cells_json.push_back({{"mixer", m}, {"g", g}, {"sparsest", s.sparsest}, {"densest", s.densest}, {"random", s.random},
                              {"delta", d}, {"ci", {ci.lo, ci.hi}}});
        md << "| " << m << " | " << g << " | " << arm(s.sparsest) << " | " << arm(s.densest) << " | " << arm(s.random)
           << " | " << fmt(d) << " | [" << fmt(ci.lo) << ", " << fmt(ci.hi) << "] |\n";
      }
    const auto v2v = verdict_from_intervals(cells);
    int below = 0, above = 0;
    for (const auto& ci : cells) {
      below += ci.hi < 0;
      above += ci.lo > 0;
    }
    const std::string v2 = cells.empty() ? "not tested" : name(v2v);
    md << "\n**Verdict: " << v2 << "** (rule: holds when the interval of Δ lies below 0 in at least two thirds of the "
       << cells.size() << " cells, reversed when above 0 in at least two thirds): below 0 in " << below << ", above 0 in "
       << above << ".\n\n";
    if (!budget_.empty()) {
      md << "### The same cells at " << c_.long_budget_steps << " steps per stage\n\n| mixer | g | sparsest | densest | Δ | "
            "95% interval | Δ at " << c_.stage1_steps << " steps |\n|---|---|---|---|---|---|---|\n";
      for (const auto& m : c_.long_budget_mixers)
        for (index_t g : c_.group_sizes) {
          const auto [s, d, ci] = delta_row(budget_, m, g, c_.seed + 77);
          const auto [s0, d0, ci0] = delta_row(groups_, m, g, c_.seed + 78);
          md << "| " << m << " | " << g << " | " << arm(s.sparsest) << " | " << arm(s.densest) << " | " << fmt(d) << " | ["
             << fmt(ci.lo) << ", " << fmt(ci.hi) << "] | " << fmt(d0) << " |\n";
        }
      md << "\n";
    }
    md << "### Single-layer sweep\n\n![sweep](sweep.png)\n\n";
    const auto mixers = sweep_mixers(c_);
    md << "| layer | S_ent |";
    for (const auto& m : mixers) md << " " << m << " drop (mean ± std) | " << m << " normalised error, free |";
    md << "\n|---|---|";
    for (std::size_t i = 0; i < mixers.size(); ++i) md << "---|---|";
    md << "\n";
    for (index_t l = 0; l < cfg_.depth; ++l) {
      md << "| " << l << " | " << fmt(scores_[std::size_t(l)]) << " |";
      for (const auto& m : mixers) {
        const auto d = sweep_drops(sweep_, cfg_.depth, m, "drop_stage2")[std::size_t(l)];
        const auto e = sweep_drops(sweep_, cfg_.depth, m, "mean_nmse_free")[std::size_t(l)];
        md << " " << arm(d) << " | " << fmt(mean(e), 3) << " |";
      }
      md << "\n";
    }
    md << "\n";
    for (const auto& m : mixers) {
      const auto& st = sweep_stats_[m];
      md << "- " << m << ": Spearman ρ(layer S_ent, mean drop) = **" << fmt(st["spearman"].get<double>(), 3)
         << "**, 95% bootstrap interval [" << fmt(st["ci"][0].is_number() ? st["ci"][0].get<double>() : NAN, 2) << ", "
         << fmt(st["ci"][1].is_number() ? st["ci"][1].get<double>() : NAN, 2) << "], permutation p = "
         << fmt(st["p"].is_number() ? st["p"].get<double>() : NAN, 3) << " (negative = sparser layers cost less)\n";
    }
    md << "\n" << predictor_table() << causal_section();
    // Claim 3
    if (x_.report_only) {
      md << "## 3. A sparser (halting) teacher shrinks the student-teacher gap\n\nNot run in this report (--report-only: "
            "from the finished replacement runs only).\n\n";
      v3_ = "not run";
    } else {
    md << "## 3. A sparser (halting) teacher shrinks the student-teacher gap\n\n![gap](gap_vs_sparsity.png)\n"
          "![gap vs accuracy](gap_vs_accuracy.png)\n\n";
    md << "| teacher | role | test accuracy | mean keep ratio | keep per layer |\n|---|---|---|---|---|\n";
    for (const auto& t : halting_teachers_) {
      std::string per;
      if (t.contains("keep_per_layer"))
        for (const auto& k : t["keep_per_layer"]) per += (per.empty() ? "" : " ") + fmt(k.get<double>(), 2);
      md << "| " << t["teacher"].get<std::string>() << " | " << t.value("role", "halting") << " | " << fmt(t["accuracy"])
         << " | " << fmt(t["mean_keep"], 3) << " | " << (per.empty() ? "all tokens" : per) << " |\n";
    }
    md << "\nEvery run replaces the same layers (the dense teacher's sparsest) at the same budget; mean ± std over "
          "seeds (n). Gap = teacher accuracy − student accuracy on the teacher's kept tokens; relative gap = gap / "
          "teacher accuracy; agreement = the fraction of test images where student and teacher pick the same class.\n\n";
    md << "| mixer | teacher | role | teacher keep | teacher acc | gap | relative gap | top-1 agreement | gap (own halting) |\n"
          "|---|---|---|---|---|---|---|---|---|\n";
    int shrink = 0, grow = 0;
    std::string rhos;
    std::vector<Interval> matched;  // per (halting teacher, mixer): gap − dense gap at equal accuracy
    std::ostringstream mt;
    for (const auto& m : c_.halting_mixers) {
      for (const auto& r : halting_)
        if (r["mixer"] == m && r.value("pipeline", "guided") == "group")
          md << "| " << m << " | " << r["teacher"].get<std::string>() << " | group pipeline | 1 | " << fmt(r["teacher_accuracy"])
             << " | " << fmt(r["gap"]) << " | | | |\n";
      const auto cells = teacher_cells(halting_, m);
      for (const auto& c : cells)
        md << "| " << m << " | " << c.teacher << " | " << c.role << " | " << fmt(c.keep, 3) << " | " << fmt(c.accuracy) << " | "
           << arm(c.gaps) << " | " << (c.relative.empty() ? "n/a" : arm(c.relative)) << " | "
           << (c.agreement.empty() ? "n/a" : arm(c.agreement)) << " | " << arm(c.gaps_own) << " |\n";
      const auto series = gap_series(halting_, m);
      std::vector<double> sp, gap;
      bool dec = series.size() > 1, inc = series.size() > 1;
      for (std::size_t i = 0; i < series.size(); ++i) {
        sp.push_back(std::get<0>(series[i]));
        gap.push_back(std::get<1>(series[i]));
        if (i > 0) {
          dec = dec && gap[i] < gap[i - 1];
          inc = inc && gap[i] > gap[i - 1];
        }
      }
      shrink += dec;
      grow += inc;
      rhos += (rhos.empty() ? "" : ", ") + m + " " + fmt(spearman(sp, gap), 2);
      // The matched comparison: each halting teacher against the dense teachers (halting off,
      // the full one and the accuracy-matched ones) interpolated at its accuracy.
      std::vector<const TeacherCell*> dense;
      std::vector<double> dense_acc;
      for (const auto& c : cells)
        if (c.role != "halting") {
          dense.push_back(&c);
          dense_acc.push_back(c.accuracy);
        }
      for (const auto& c : cells) {
        if (c.role != "halting") continue;
        const auto b = bracket(dense_acc, c.accuracy, kMatchSlack);
        Interval iv = {NAN, NAN};
        double d = NAN;
        std::string ref = "no dense teacher within " + fmt(kMatchSlack, 3) + " of its accuracy";
        if (b) {
          const auto& lo = *dense[b->lo];
          const auto& hi = *dense[b->hi];
          d = mean(c.gaps) - (b->w * mean(lo.gaps) + (1 - b->w) * mean(hi.gaps));
          iv = bootstrap_mean_minus_interpolation(c.gaps, lo.gaps, hi.gaps, b->w, 10000, 0.95, c_.seed);
          ref = b->lo == b->hi ? lo.teacher : fmt(b->w, 2) + " × " + lo.teacher + " + " + fmt(1 - b->w, 2) + " × " + hi.teacher;
        }
        matched.push_back(iv);
        mt << "| " << m << " | " << c.teacher << " | " << fmt(c.accuracy) << " | " << fmt(1 - c.keep, 3) << " | " << ref
           << " | " << fmt(d) << " | [" << fmt(iv.lo) << ", " << fmt(iv.hi) << "] |\n";
      }
    }
    const int nm = int(c_.halting_mixers.size());
    v3_ = nm == 0 ? "not tested" : shrink == nm ? "holds" : grow == nm ? "does not hold" : "inconclusive";
    md << "\n**Verdict: " << v3_ << "** (raw series): the mean gap (on the teacher's kept tokens) shrinks monotonically with teacher "
       << "sparsity for " << shrink << " of " << nm << " mixers and grows monotonically for " << grow
       << "; Spearman rho between teacher sparsity and mean gap: " << rhos << " (negative = sparser teachers leave smaller "
       << "gaps). The halting teachers are also less accurate than the dense one, so this series alone cannot separate "
          "sparsity from accuracy.\n\n";
    if (!c_.dense_teachers.empty()) {
      const auto v = verdict_from_intervals(matched);
      v3_matched_ = name(v);
      md << "### Against dense teachers of the same accuracy\n\nΔ = mean gap of the halting teacher − the mean gap of the "
            "dense teachers (halting off) linearly interpolated at its accuracy, with its bootstrap 95% interval (seeds "
            "resampled within each teacher); a halting teacher more than " << fmt(kMatchSlack, 3)
         << " outside the dense teachers' accuracies has no interval.\n\n"
            "| mixer | halting teacher | its accuracy | its sparsity | dense reference | Δ | 95% interval |\n"
            "|---|---|---|---|---|---|---|\n" << mt.str();
      md << "\n**Verdict (matched): " << v3_matched_ << "** (rule, docs/method.md: holds when the interval of Δ lies below 0 "
            "in at least two thirds of the (halting teacher, mixer) cells: sparsity itself, not the lower accuracy, "
            "shrinks the gap; reversed when above 0 in two thirds).\n\n";
    }
    }
    // Claim 4
    if (x_.report_only) {
      md << "## 4. The replaced model is smaller and faster\n\nNot run in this report (--report-only).\n";
    } else {
    md << "## 4. The replaced model is smaller and faster\n\n![latency](latency.png)\n![params](params.png)\n\n";
    md << "| module | params at D=" << cfg_.width << " | ratio to attention |";
    for (index_t N : c_.latency_tokens) md << " fwd ms N=" << N << " |";
    md << "\n|---|---|---|";
    for (std::size_t i = 0; i < c_.latency_tokens.size(); ++i) md << "---|";
    md << "\n";
    const double attn = eff_["modules"]["softmax_attention"]["params"];
    for (const auto& n : x_.modules) {
      const auto& e = eff_["modules"][n];
      md << "| " << n << " | " << e["params"].get<std::size_t>() << " | " << fmt(e["params"].get<double>() / attn, 2) << "x |";
      for (index_t N : c_.latency_tokens) {
        const std::string k = std::to_string(N);
        md << " " << (e.contains("forward_ms") && e["forward_ms"].contains(k) ? fmt(e["forward_ms"][k], 3) : "n/a") << " |";
      }
      md << "\n";
    }
    const auto& ee = eff_["end_to_end"];
    md << "\nEnd to end (batch " << eff_["end_to_end_batch"] << ", forward, median of " << c_.latency_reps
       << "): teacher " << ee["teacher"]["params"] << " parameters, " << fmt(ee["teacher"]["forward_ms"], 2) << " ms.\n\n"
       << "| model | params | forward ms | MFLOP / image | smaller | faster |\n|---|---|---|---|---|---|\n";
    md << "| teacher | " << ee["teacher"]["params"] << " | " << fmt(ee["teacher"]["forward_ms"], 2) << " | "
       << fmt(x_.teacher_mflops, 2) << " | | |\n";
    int both = 0;
    for (const auto& n : c_.mixers) {
      const bool smaller = ee[n]["params"].get<double>() < ee["teacher"]["params"].get<double>();
      const bool faster = ee[n]["forward_ms"].get<double>() < ee["teacher"]["forward_ms"].get<double>();
      both += smaller && faster;
      const auto fl = x_.student_mflops.find(n);
      md << "| " << n << " (sparsest half replaced) | " << ee[n]["params"] << " | " << fmt(ee[n]["forward_ms"], 2) << " | "
         << fmt(fl == x_.student_mflops.end() ? NAN : fl->second, 2) << " | " << (smaller ? "yes" : "no") << " | " << (faster ? "yes" : "no") << " |\n";
    }
    int halted_faster = 0, halted_total = 0;
    for (const auto& t : halting_teachers_)
      if (t.contains("forward_ms_packed") && t.value("role", "") == "halting") {  // not the dense ones
        const double h = t["forward_ms_packed"], d = t["forward_ms_dense_teacher"];
        ++halted_total;
        halted_faster += h < d;
        md << "| " << t["teacher"].get<std::string>() << " (halting, packed, keep " << fmt(t["mean_keep"], 2)
           << ") | " << ee["teacher"]["params"] << " | " << fmt(h, 2) << " (dense teacher " << fmt(d, 2)
           << " ms in the same measurement: " << fmt(d / h, 2) << "x) | "
           << fmt(halting_mflops(t["teacher"].get<std::string>()), 2) << " | no | "
           << (h < d ? "yes" : "no") << " |\n";
      }
    md << "\nMFLOP / image is the sum of every layer's own forward count (`flops()`, 2 FLOPs per multiply-add): "
          "each weight once per token it applies to (each direction of a bidirectional mixer has its own), softmax "
          "attention 4·N·D per token more (QKᵀ and PV), linear attention 4·D·d_φ, the minGRU and selective-SSM scans "
          "their recurrences; layer norms count 2 per parameter per token, activations and additions nothing. A halting "
          "model's blocks cost what they cost on the tokens they see (its mean keep ratio per layer).\n";
    md << "\n**Verdict: "
       << (c_.mixers.empty() ? "not tested" : both == int(c_.mixers.size()) ? "holds" : both == 0 ? "does not hold" : "holds for some mixers")
       << "** (" << both << " of " << c_.mixers.size() << " students both smaller and faster at N = " << cfg_.tokens()
       << "; " << halted_faster << " of " << halted_total << " halting teachers faster than the dense one, packed, "
       << "with the same parameters).\n";
    }
    md << "\n---\nWall time of this invocation: " << io::Progress::hms(x_.elapsed_seconds) << " (finished runs are reused).\n";
    if (x_.report_only)
      md << "\n**Partial report** (--report-only): " << x_.missing << " replacement runs of this configuration are not finished "
            "and left out; the halting and efficiency stages were not run. Continue with `scripts/run_study.sh " << c_.preset
         << " " << x_.out_dir << " 2`.\n";
    summary_ = {{"teacher_accuracy", teacher_acc_}, {"layer_scores", scores_}, {"sweep_spearman", rho_},
                {"sweep", sweep_stats_}, {"group_cells", cells_json}, {"causal", causal_verdict_},
                {"claims", {{"1", ratio >= 1.5 ? "holds" : "does not hold"}, {"2", v2}, {"3", v3_}, {"3_matched", v3_matched_}}}};
    return md.str();
  }

  const json& summary() const { return summary_; }

  // report.md and summary.json into `dir`, each written to a temporary file and renamed.
  void write(const std::filesystem::path& dir) {
    const std::string md = markdown();
    io::write_file_atomic(dir / "report.md", md);
    io::write_file_atomic(dir / "summary.json", summary_.dump(2) + "\n");
  }

 private:
  // Per-layer predictors of the single-layer drop: the profile's metrics, the kinds, and each
  // sweep mixer's own normalised stage-1 error. Spearman ρ against the mean drop over seeds, with
  // a bootstrap interval (pairs of layers resampled) and the exact permutation p-value.
  std::string predictor_table() const {
    std::vector<std::pair<std::string, std::vector<double>>> preds;
    const auto profile_metric = [&](const char* rows, const char* metric) {
      std::vector<double> v;
      for (const auto& l : profile_["layer_stats"]) {
        const auto& x = l.contains("all_heads") ? l["all_heads"]["all_keys"][rows][metric]["mean"] : json();
        v.push_back(x.is_number() ? x.get<double>() : NAN);
      }
      return v;
    };
    preds.emplace_back("S_ent (1 − normalised entropy)", scores_);
    preds.emplace_back("S_ent of the CLS query", profile_metric("cls", "entropy_sparsity"));
    preds.emplace_back("Gini", profile_metric("all", "gini"));
    preds.emplace_back("mean attention distance (patches)", profile_metric("all", "distance"));
    for (const auto& kind : kinds_["kinds"]) {
      std::vector<double> v;
      for (const auto& l : kinds_["layers"]) {
        const auto& x = l["mean"][kind.get<std::string>()];
        v.push_back(x.is_number() ? x.get<double>() : NAN);
      }
      preds.emplace_back(kind.get<std::string>(), v);
    }
    std::ostringstream md;
    md << "### What predicts a layer's single-layer drop\n\nSpearman ρ between a per-layer quantity of the teacher (or "
          "the stage-1 error of the replacing mixer) and the layer's mean stage-2 drop over seeds; 95% bootstrap interval "
          "over layers; two-sided permutation p (exact over all orders of " << cfg_.depth << " layers when ≤ 8).\n\n";
    md << "| predictor |";
    const auto mixers = sweep_mixers(c_);
    for (const auto& m : mixers) md << " ρ vs " << m << " drop | interval | p |";
    md << "\n|---|";
    for (std::size_t i = 0; i < mixers.size(); ++i) md << "---|---|---|";
    md << "\n";
    const auto cells = [&](const std::vector<double>& x, const std::vector<double>& y) {
      std::vector<double> a, b;
      for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
        if (std::isfinite(x[i]) && std::isfinite(y[i])) {
          a.push_back(x[i]);
          b.push_back(y[i]);
        }
      const auto ci = bootstrap_spearman(a, b, 10000, 0.95, c_.seed);
      return " " + fmt(spearman(a, b), 2) + " | [" + fmt(ci.lo, 2) + ", " + fmt(ci.hi, 2) + "] | " +
             fmt(spearman_permutation_p(a, b, 10000, c_.seed), 3) + " |";
    };
    std::vector<std::vector<double>> drop;
    for (const auto& m : mixers) {
      std::vector<double> d;
      for (const auto& v : sweep_drops(sweep_, cfg_.depth, m, "drop_stage2")) d.push_back(mean(v));
      drop.push_back(d);
    }
    for (const auto& [name, x] : preds) {
      md << "| " << name << " |";
      for (std::size_t i = 0; i < mixers.size(); ++i) md << cells(x, drop[i]);
      md << "\n";
    }
    // With one replaced layer the two errors are one number (the layer's input is the
    // teacher's either way): one row then, two when a sweep's runs differ.
    bool same = true;
    for (const auto& m : mixers) same = same && sweep_drops(sweep_, cfg_.depth, m, "mean_nmse") == sweep_drops(sweep_, cfg_.depth, m, "mean_nmse_free");
    const std::vector<const char*> keys = same ? std::vector<const char*>{"mean_nmse"}
                                               : std::vector<const char*>{"mean_nmse", "mean_nmse_free"};
    for (const char* key : keys) {
      md << "| the mixer's own normalised stage-1 error, "
         << (same ? "teacher-forced = free-running (one layer)" : std::string(key) == "mean_nmse" ? "teacher-forced" : "free-running")
         << " |";
      for (std::size_t i = 0; i < mixers.size(); ++i) {
        std::vector<double> e;
        for (const auto& v : sweep_drops(sweep_, cfg_.depth, mixers[i], key)) e.push_back(mean(v));
        md << cells(e, drop[i]);
      }
      md << "\n";
    }
    md << "\nA positive ρ means: the larger the quantity, the larger the drop. The kinds are defined in docs/method.md "
          "(\"Kinds of sparse attention\"); `kinds.json` holds them per layer and head.\n\n";
    return md.str();
  }


  // The causal test's report section.
  std::string causal_section() {
    std::ostringstream md;
    if (c_.causal_mixers.empty()) return "";
    md << "### Causal test: the same layer, sharper or flatter\n\nLayer l's query weights and bias scaled by α (flat "
       << fmt(c_.causal_alpha_flat, 2) << ", base 1, sharp " << fmt(c_.causal_alpha_sharp, 2) << "), the rest fine-tuned "
       << c_.causal_finetune_steps << " steps with layer l's qkv frozen (every variant alike); a variant counts when its "
          "accuracy is within 0.5 points of the teacher's and its S_ent moved by ≥ 0.08 the intended way.\n\n"
          "| layer | variant | α | accuracy | S_ent of the layer (teacher " "→ variant) | counts |\n|---|---|---|---|---|---|\n";
    for (const auto& t : causal_teachers_) {
      const auto l = std::size_t(t["layer"].get<index_t>());
      md << "| " << l << " | " << t["variant"].get<std::string>() << " | " << fmt(t["alpha"], 2) << " | "
         << fmt(t["accuracy"]) << " | " << fmt(scores_[l], 3) << " → " << fmt(t["s_ent_layer"], 3) << " | "
         << (t["accepted"].get<bool>() ? "yes" : "no") << " |\n";
    }
    md << "\nDrop after stage 2 (against each variant's own accuracy), mean ± std over seeds (n); Δ = drop(sharp) − "
          "drop(flat) with its bootstrap 95% interval, over the layers whose sharp and flat variants both count.\n\n"
          "| layer | mixer | flat | base | sharp | sharp < base < flat | Δ | 95% interval |\n|---|---|---|---|---|---|---|---|\n";
    std::vector<Interval> cells;
    const auto accepted = [&](index_t l, const char* v) {
      for (const auto& t : causal_teachers_)
        if (t["layer"] == l && t["variant"] == v) return t["accepted"].get<bool>();
      return false;
    };
    for (index_t l : causal_layers(c_, scores_))
      for (const auto& m : c_.causal_mixers) {
        std::map<std::string, std::vector<double>> d;
        for (const auto& j : causal_)
          if (j["mixer"] == m && j["layers"][0] == l) d[j["variant"].get<std::string>()].push_back(j["drop_stage2"]);
        const double f = mean(d["flat"]), b = mean(d["base"]), s = mean(d["sharp"]);
        const bool counts = accepted(l, "flat") && accepted(l, "sharp");
        Interval ci{NAN, NAN};
        if (counts && d["sharp"].size() >= 2 && d["flat"].size() >= 2)
          ci = bootstrap_mean_difference(d["sharp"], d["flat"], 10000, 0.95, c_.seed + std::uint64_t(l));
        if (counts) cells.push_back(ci);
        md << "| " << l << " | " << m << " | " << arm(d["flat"]) << " | " << arm(d["base"]) << " | " << arm(d["sharp"])
           << " | " << (s < b && b < f ? "yes" : s > b && b > f ? "reversed" : "no") << " | " << fmt(s - f) << " | ["
           << fmt(ci.lo) << ", " << fmt(ci.hi) << "]" << (counts ? "" : " (variants do not count)") << " |\n";
      }
    causal_verdict_ = cells.empty() ? "not tested (no layer with both variants counting)"
                                    : name(verdict_from_intervals(cells));
    md << "\n**Causal verdict: " << causal_verdict_ << "** (rule: holds when the interval of drop(sharp) − drop(flat) lies "
          "below 0 in at least two thirds of the counting (layer, mixer) cells; reversed when above 0 in at least two "
          "thirds).\n\n";
    return md.str();
  }

  double halting_mflops(const std::string& teacher) const {
    const auto it = x_.halting_mflops.find(teacher);
    return it == x_.halting_mflops.end() ? NAN : it->second;
  }

  Records r_;
  const StudyConfig& c_;
  const model::VitConfig& cfg_;
  index_t test_images_;
  double teacher_acc_;
  const std::vector<double>& scores_;
  const json &profile_, &kinds_, &sweep_stats_;
  double rho_;
  const std::vector<json>&sweep_, &groups_, &budget_, &causal_, &causal_teachers_, &halting_, &halting_teachers_;
  const json& eff_;
  ReportExtras x_;
  std::string causal_verdict_ = "not run", v3_ = "not run", v3_matched_ = "not run";
  json summary_ = json::object();
};

}  // namespace seqswap::analysis::study
