// sparsity_to_simplicity: the paper's study end to end on a trained ViT teacher.
//
//   sparsity_to_simplicity --preset quick          (what `make experiment` runs, ≤ 10 min)
//   sparsity_to_simplicity --preset full --out results/full
//   sparsity_to_simplicity --config my_study.json --mixers min_gru,selective_ssm
//
// Stages, each leaving its result files in the output folder (default results/<preset>):
//   1. profile     attention sparsity per layer and head (profile.json/.csv, plots)
//   2. sweep       replace one layer at a time: accuracy drop vs that layer's sparsity (ρ)
//   3. groups      sparsest / densest / random groups per mixer, at one fixed budget
//   4. halting     A-ViT halting teachers (shipped checkpoints) and guided distillation:
//                  student-teacher gap vs teacher sparsity
//   5. efficiency  parameters and latency per module over N, and end to end
// then report.md with a verdict per claim of METHOD.md. Every finished run writes
// runs/<name>.json atomically; rerunning skips what exists (--force redoes it), so an
// interrupted study loses at most the run in flight.
//
// Across processes: `--shard K/N` (scripts/run_study.sh), or, built with MPI, `mpirun -np R
// sparsity_to_simplicity ...`: rank r runs shard r/R, and once every rank has finished, rank 0
// runs the unsharded pass (halting teachers, efficiency, report). A rank that fails fails the
// job, naming itself; every finished run stays in the folder, and the same command continues.
#include <CLI/CLI.hpp>
#include <array>
#include <set>
#include <span>

#include "flags.hpp"
#include "ranks.hpp"
#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>

#include "seqswap/analysis/attention_kinds.hpp"
#include "seqswap/analysis/cost.hpp"
#include "seqswap/analysis/profile.hpp"
#include "seqswap/analysis/stats.hpp"
#include "seqswap/analysis/study_report.hpp"
#include "seqswap/distill/stages.hpp"
#include "seqswap/zoo/student.hpp"
#include "seqswap/distill/guided.hpp"
#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/plot.hpp"
#include "zoo_instances.hpp"  // with SEQSWAP_ZOO_EXTERN: the mixers' code compiled once for all drivers

using namespace seqswap;
namespace fs = std::filesystem;
using nlohmann::json;
using analysis::study::StudyConfig;
using analysis::study::preset;
using analysis::study::arm;
using analysis::study::fmt;
using analysis::study::std_or_zero;

namespace {

// Progress: one line per stage and per run, with elapsed time and ETA over the runs.
struct Reporter {
  bool quiet;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
  void line(const std::string& s) const {
    if (!quiet) std::fprintf(stderr, "[%s] %s\n", io::Progress::hms(elapsed()).c_str(), s.c_str());
  }
};

// The keys every replacement run's file must hold (replace_run writes them).
// ... and every guided run's file (stage 4).
inline constexpr std::array<const char*, 6> kHaltingRunKeys{"teacher", "mixer", "teacher_accuracy", "student_accuracy",
                                                            "gap", "agreement"};
inline constexpr std::array<const char*, 10> kRunKeys{"mixer",       "plan",        "layers", "stage1_accuracy",
                                                      "stage2_accuracy", "drop_stage1", "drop_stage2",
                                                      "mean_layer_loss", "params",    "seconds"};

class Study {
 public:
  Study(StudyConfig c, fs::path dir, bool force, bool quiet, int shard = 0, int shards = 1)
      : c_(std::move(c)), dir_(std::move(dir)), force_(force), rep_{quiet}, shard_(shard), shards_(shards) {}

  int run() {
    // Every input is checked before the folder is touched: a typo fails here, and the
    // corrected rerun finds the folder as it was.
    teacher_ = model::load_vit<float, zoo::AnyMixer<float>>(c_.checkpoint, &cfg_);
    if (c_.group_sizes.empty()) c_.group_sizes = {std::max<index_t>(1, cfg_.depth / 4), std::max<index_t>(1, cfg_.depth / 2)};
    train_ = io::load_fashion_mnist(io::Split::train, c_.data_dir);
    test_ = io::load_fashion_mnist(io::Split::test, c_.data_dir);
    train_.norm = test_.norm = cfg_.norm;  // as the teacher was trained
    for (const auto& path : c_.halting_teachers) {
      check(fs::exists(path), "halting_teachers: ", path, " not found; make it with build/release/examples/avit_finetune "
            "(models/README.md lists the commands) or set halting_teachers in a --config file");
      check(model::read_halting_options(io::read_safetensors(path)).has_value(), "halting_teachers: ", path,
            " has no halting options (metadata 'halting'): not a halting teacher from avit_finetune");
    }
    // Dense teachers are needed by the unsharded pass only (shards never reach stage 4).
    if (!sharded())
      for (const auto& path : c_.dense_teachers) {
        check(fs::exists(path), "dense_teachers: ", path, " not found; make it with build/release/examples/train_teacher "
              "--keep-epochs (models/README.md) or set dense_teachers in a --config file");
        check(!model::read_halting_options(io::read_safetensors(path)).has_value(), "dense_teachers: ", path,
              " has halting options (metadata 'halting'): expected a dense teacher");
      }
    io::check_writable(dir_ / "config.json", "--out");
    fs::create_directories(dir_ / "runs");
    guard_config();
    if (c_.train_images > 0) train_ = train_.head(c_.train_images);
    if (c_.test_images > 0) test_ = test_.head(c_.test_images);
    rep_.line("study '" + c_.preset + "' on " + c_.checkpoint + " -> " + dir_.string());

    stage_profile();
    teacher_acc_ = cached("teacher", [&] { return json{{"accuracy", train::evaluate(*teacher_, test_).accuracy}}; })["accuracy"];
    // The decisive cells first: an interrupted study has every cell at fewer seeds rather than
    // some cells at all of them.
    stage_groups();
    stage_sweep();
    stage_causal();
    stage_budget();
    if (sharded()) stage_halting();  // its guided runs only (the unsharded pass evaluates and reports)
    if (sharded()) {  // a shard runs its share of the replacement runs; the unsharded pass reports
      rep_.line("shard " + std::to_string(shard_) + "/" + std::to_string(shards_) + " done; run the study without "
                "--shard on the same folder for the halting and efficiency stages and the report");
      return 0;
    }
    if (!report_only_) {
      stage_halting();
      stage_efficiency();
    }
    write_report();
    rep_.line("done: " + (dir_ / "report.md").string());
    return 0;
  }

 private:
  // The effective configuration is saved; results made under another one are never mixed in.
  void guard_config() {
    const json cur = c_;
    const fs::path p = dir_ / "config.json";
    if (fs::exists(p) && !force_) {
      json old;
      try {
        old = json::parse(std::ifstream(p));
      } catch (const json::exception& e) {
        fail(p.string(), ": not valid JSON (", e.what(), "); remove it or use --force");
      }
      // Keys newer than the folder's config are fine while they hold the preset's defaults.
      // Keys that did not exist when the folder was made take the value runs had then.
      const json defaults = preset(c_.preset), legacy = analysis::study::legacy_values();
      for (const auto& [k, v] : cur.items())
        if (!old.contains(k)) {
          if (legacy.contains(k)) old[k] = legacy[k];
          else if (defaults.contains(k) && v == defaults[k]) old[k] = v;
        }
      // Keys that only choose which runs exist (run files are named by mixer and teacher) may
      // change: finished runs stay valid. Any other difference would mix results.
      static const std::set<std::string> selection{"mixers",       "halting_teachers", "halting_mixers",
                                                   "seeds",        "random_seeds",     "sweep_mixers",
                                                   "sweep_seeds",  "long_budget_mixers", "long_budget_seeds",
                                                   "halting_seeds", "dense_teachers"};
      std::string changed;
      for (const auto& [k, v] : cur.items())
        if (!selection.count(k) && (!old.contains(k) || old[k] != v))
          changed += (changed.empty() ? "" : "; ") + k + ": " + (old.contains(k) ? old[k].dump() : "(absent)") +
                     " in the folder, " + v.dump() + " now";
      check(changed.empty(), "the results in ", dir_.string(), " were made with another configuration (", p.string(),
            "): ", changed, ". Use --force to redo them or --out for a new folder");
    }
    io::write_file_atomic(p, cur.dump(2) + "\n");
  }

  // runs/<name>.json if it exists (and not --force), else compute, store atomically, return.
  // A run file that does not parse, or lacks a key of the freshly computed kind's shape (the
  // keys of the run last computed under this name's prefix), is redone with a warning.
  template <class F>
  json cached(const std::string& name, F&& compute, std::span<const char* const> required = {}) {
    const fs::path p = dir_ / "runs" / (name + ".json");
    if (!force_ && fs::exists(p)) {
      try {
        json j = json::parse(std::ifstream(p));
        std::string missing;
        for (const char* k : required)
          if (!j.is_object() || !j.contains(k) || !(j[k].is_number() || j[k].is_string() || j[k].is_array()))
            missing += std::string(missing.empty() ? "" : ", ") + k;
        if (missing.empty()) return j;
        rep_.line("warning: " + p.string() + " lacks " + missing + "; redoing it");
      } catch (const json::exception& e) {
        rep_.line("warning: " + p.string() + " is unreadable (" + e.what() + "); redoing it");
      }
    }
    json j = compute();
    io::write_file_atomic(p, j.dump(2) + "\n");
    return j;
  }

  void stage_profile() {
    rep_.line("stage 1/5 profile: " + std::to_string(c_.profile_images) + " test images");
    const fs::path p = dir_ / "profile.json";
    json j;
    bool have = false;
    if (!force_ && fs::exists(p)) {
      try {
        j = json::parse(std::ifstream(p));
        have = j.contains("layer_scores") && j["layer_scores"].is_array() &&
               j["layer_scores"].size() == std::size_t(cfg_.depth);
      } catch (const json::exception& e) {
        rep_.line("warning: " + p.string() + " is unreadable (" + e.what() + "); redoing the profile");
      }
      if (!have) rep_.line("warning: " + p.string() + " has no layer_scores for " + std::to_string(cfg_.depth) +
                           " layers; redoing the profile");
    }
    if (!have) {
      const auto prof = analysis::profile_model(*teacher_, cfg_, test_.head(c_.profile_images), 250);
      j = prof;
      analysis::write_csv(dir_ / "profile.csv", prof);
      analysis::write_profile_plots(dir_, prof, "sparsity_to_simplicity");
      json scores = analysis::layer_scores(prof);
      j["layer_scores"] = scores;
      io::write_file_atomic(p, j.dump(2) + "\n");
    }
    scores_ = j["layer_scores"].get<std::vector<double>>();
    profile_ = j;
    // Kinds of sparse attention (self, grid neighbours, CLS, query-independent vs query-specific,
    // background patches): analysis/attention_kinds.hpp, on the same images.
    kinds_ = cached("kinds", [&] {
      analysis::KindAccumulator acc(cfg_.depth, cfg_.heads, cfg_.image_size / cfg_.patch);
      const auto data = test_.head(c_.profile_images);
      io::BatchLoader loader(data, 250, /*shuffle=*/false, 0);
      std::vector<float> x, raw(std::size_t(data.image_numel()));
      std::vector<std::int32_t> labels;
      std::vector<std::uint8_t> background;
      index_t done = 0;
      while (index_t n = loader.next(x, labels)) {
        background.clear();
        for (index_t b = 0; b < n; ++b) {  // raw pixels in [0, 1]: the threshold's scale
          const std::uint8_t* px = data.pixels.data() + std::size_t((done + b) * data.image_numel());
          for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = float(px[i]) / 255.0f;
          const auto f = analysis::background_tokens(raw.data(), cfg_.channels, cfg_.image_size, cfg_.patch);
          background.insert(background.end(), f.begin(), f.end());
        }
        teacher_->forward(x.data(), n, data.image_numel());
        acc.add_model(*teacher_, background.data());
        done += n;
      }
      return acc.to_json();
    });
  }

  // One replacement run: the plan's layers get `mixer`, stage 1 (the configured protocol) and
  // stage 2 at `steps` per stage (0 = the configured budgets), training seed k (k = 0 is the
  // study's seed; every k draws its own mixer initialisation and data order).
  // `teacher` (default: the study's) and its test accuracy `teacher_acc` (for the drops).
  json replace_run(const std::string& mixer, const std::string& plan_spec, int k = 0, long steps = 0,
                   zoo::StudentModel<float>* teacher = nullptr, double teacher_acc = NAN) {
    if (!teacher) {
      teacher = &*teacher_;
      teacher_acc = teacher_acc_;
    }
    const auto plan = distill::parse_plan(plan_spec, cfg_.depth, scores_);
    const std::uint64_t base = c_.seed + 1000 * std::uint64_t(k);
    auto student = *teacher;
    zoo::replace_layers(student, cfg_, plan, {.mixer = mixer, .seed = base});
    const distill::Stage1Options s1{.steps = steps ? steps : c_.stage1_steps, .batch = c_.batch, .lr = c_.lr1,
                                    .ce_weight = c_.stage1_ce_weight, .mse_weight = c_.stage1_mse_weight,
                                    .free_running = c_.protocol == "free", .seed = base + 1};
    const distill::Stage2Options s2{.steps = steps ? steps : c_.stage2_steps, .batch = c_.batch, .lr = c_.lr2,
                                    .seed = base + 2};
    const auto r1 = distill::stage1(*teacher, student, plan, train_, s1);
    const auto err = distill::layer_errors(*teacher, student, plan, test_.head(std::min<index_t>(test_.count, 500)), 250);
    const double acc1 = train::evaluate(student, test_).accuracy;
    const auto r2 = distill::stage2(*teacher, student, train_, s2);
    const double acc2 = train::evaluate(student, test_).accuracy;
    return json{{"mixer", mixer},        {"plan", plan_spec},
                {"layers", plan.layers}, {"seed", k}, {"protocol", c_.protocol}, {"steps_per_stage", s1.steps},
                {"stage1_accuracy", acc1},
                {"stage2_accuracy", acc2}, {"drop_stage1", teacher_acc - acc1},
                {"drop_stage2", teacher_acc - acc2}, {"teacher_accuracy", teacher_acc}, {"layer_loss", err.mse}, {"nmse", err.nmse},
                {"mse_free", err.mse_free}, {"nmse_free", err.nmse_free},
                {"mean_layer_loss", analysis::mean(err.mse)}, {"mean_nmse", analysis::mean(err.nmse)},
                {"mean_nmse_free", analysis::mean(err.nmse_free)}, {"params", student.param_count()},
                {"seconds", r1.seconds + r2.seconds}};
  }
  // A replacement run through the cache; in a shard, only every shards_-th run (by the order
  // of the calls, identical in every shard) is this shard's: the others give null.
  template <class F>
  json run(const std::string& name, F&& compute, std::span<const char* const> required = kRunKeys) {
    const std::size_t i = run_counter_++;
    if (sharded() && int(i % std::size_t(shards_)) != shard_) return json();
    if (report_only_ && !fs::exists(dir_ / "runs" / (name + ".json"))) {
      ++missing_;
      return json();
    }
    return cached(name, std::forward<F>(compute), required);
  }
  bool sharded() const { return shards_ > 1; }
  static std::string seed_suffix(int k) { return k ? "-s" + std::to_string(k) : ""; }
  std::vector<std::string> sweep_mixers() const { return analysis::study::sweep_mixers(c_); }


  // Stage 2: each sweep mixer in one layer at a time, sweep_seeds seeds per layer; ρ between
  // the layer's sparsity and its mean drop, with its permutation p-value.
  void stage_sweep() {
    const auto mixers = sweep_mixers();
    const std::size_t total = mixers.size() * std::size_t(c_.sweep_seeds * cfg_.depth);
    rep_.line("stage 2/5 sweep: " + zoo::detail::join(mixers) + " in one layer at a time, " + std::to_string(total) + " runs");
    sweep_.clear();
    stage_start_ = rep_.elapsed();
    std::size_t done = 0;
    for (int k = 0; k < c_.sweep_seeds; ++k)
      for (const auto& m : mixers)
        for (index_t l = 0; l < cfg_.depth; ++l) {
          const std::string name = "sweep-" + m + "-layer" + std::to_string(l) + seed_suffix(k);
          json j = run(name, [&] { return replace_run(m, "single:" + std::to_string(l), k); });
          ++done;
          if (j.is_null()) continue;
          rep_.line("  " + name + ": drop " + fmt(j["drop_stage2"].get<double>()) + " (" + eta(done, total) + ")");
          sweep_.push_back(std::move(j));
        }
    if (sharded()) return;
    write_table("sweep", sweep_);
    std::string dat = "# layer S_ent mean_drop_stage2 mean_drop_stage1, one block per mixer\n";
    std::string plot;
    sweep_stats_.clear();
    for (std::size_t i = 0; i < mixers.size(); ++i) {
      const auto d2 = sweep_drops(mixers[i], "drop_stage2"), d1 = sweep_drops(mixers[i], "drop_stage1");
      std::vector<double> s, m2;
      dat += "# " + mixers[i] + "\n";
      for (index_t l = 0; l < cfg_.depth; ++l) {
        s.push_back(scores_[std::size_t(l)]);
        m2.push_back(analysis::mean(d2[std::size_t(l)]));
        dat += std::to_string(l) + " " + io::plot_number(s.back()) + " " + io::plot_number(m2.back()) + " " +
               io::plot_number(analysis::mean(d1[std::size_t(l)])) + "\n";
      }
      dat += "\n\n";
      const double rho = analysis::spearman(s, m2);
      const auto ci = analysis::bootstrap_spearman(s, m2, 10000, 0.95, c_.seed);
      sweep_stats_[mixers[i]] = {{"spearman", rho}, {"p", analysis::spearman_permutation_p(s, m2, 10000, c_.seed)},
                                 {"ci", {ci.lo, ci.hi}}, {"mean_drop", m2}};
      if (i == 0) rho_ = rho;
      plot += std::string(i ? ", " : "") + "'sweep.dat' index " + std::to_string(i) + " using 2:3 with points pt " +
              std::to_string(7 + 2 * int(i)) + " ps 1.5 title '" + mixers[i] + " (rho " + fmt(rho, 2) +
              ")', '' index " + std::to_string(i) + " using 2:3:1 with labels offset 1,1 notitle";
    }
    io::write_file_atomic(dir_ / "sweep.dat", dat);
    io::write_file_atomic(dir_ / "sweep_stats.json", sweep_stats_.dump(2) + "\n");
    io::run_gnuplot(dir_, "sweep.gp", "set terminal pngcairo size 800,520 noenhanced\nset output 'sweep.png'\n"
                    "set title 'Single-layer replacement: mean drop after stage 2 vs layer sparsity'\n"
                    "set xlabel 'layer S_ent (teacher)'\nset ylabel 'accuracy drop (mean over seeds)'\nset key outside\nplot " +
                    plot + "\n", "sparsity_to_simplicity");
  }
  std::vector<std::vector<double>> sweep_drops(const std::string& m, const char* key) const {
    return analysis::study::sweep_drops(sweep_, cfg_.depth, m, key);
  }

  // Stage 3: per mixer and group size, the sparsest and densest g layers at `seeds` training
  // seeds, and random_seeds random draws of g layers.
  void stage_groups() {
    struct Run {
      std::string mixer, plan;
      int k;
    };
    std::vector<Run> runs;
    for (int k = 0; k < c_.seeds; ++k)
      for (const auto& m : c_.mixers)
        for (index_t g : c_.group_sizes) {
          runs.push_back({m, "sparsest:" + std::to_string(g), k});
          runs.push_back({m, "densest:" + std::to_string(g), k});
        }
    for (const auto& m : c_.mixers)
      for (index_t g : c_.group_sizes)
        for (int r = 0; r < c_.random_seeds; ++r)
          runs.push_back({m, "random:" + std::to_string(g) + ":" + std::to_string(int(c_.seed) + r + 1), 0});
    rep_.line("stage 3/5 groups: " + std::to_string(runs.size()) + " runs (" + c_.protocol + " stage 1)");
    groups_.clear();
    stage_start_ = rep_.elapsed();
    for (std::size_t i = 0; i < runs.size(); ++i) {
      std::string key = runs[i].plan;
      std::replace(key.begin(), key.end(), ':', '-');
      const std::string name = "group-" + runs[i].mixer + "-" + key + seed_suffix(runs[i].k);
      json j = run(name, [&] { return replace_run(runs[i].mixer, runs[i].plan, runs[i].k); });
      if (j.is_null()) continue;
      rep_.line("  " + name + ": drop " + fmt(j["drop_stage2"].get<double>()) + " (" + eta(i + 1, runs.size()) + ")");
      groups_.push_back(std::move(j));
    }
    if (sharded()) return;
    write_table("groups", groups_);
    // Bars: per (mixer, g): sparsest, random and densest, mean ± std over seeds (stage-2 drop).
    std::string dat = "# label sparsest_mean sparsest_std random_mean random_std densest_mean densest_std\n";
    for (const auto& m : c_.mixers)
      for (index_t g : c_.group_sizes) {
        const auto s = analysis::study::group_drops(groups_, m, g);
        dat += "\"" + m + " g=" + std::to_string(g) + "\" " + io::plot_number(analysis::mean(s.sparsest)) + " " +
               io::plot_number(std_or_zero(s.sparsest)) + " " + io::plot_number(analysis::mean(s.random)) + " " +
               io::plot_number(std_or_zero(s.random)) + " " + io::plot_number(analysis::mean(s.densest)) + " " +
               io::plot_number(std_or_zero(s.densest)) + "\n";
      }
    io::write_file_atomic(dir_ / "groups.dat", dat);
    io::run_gnuplot(dir_, "groups.gp", "set terminal pngcairo size 900,520 noenhanced\nset output 'groups.png'\n"
                    "set title 'Group replacement at a fixed budget: accuracy drop after stage 2 (mean, std over seeds)'\n"
                    "set style data histogram\nset style histogram errorbars gap 1 lw 1\nset style fill solid 0.6 border -1\n"
                    "set ylabel 'accuracy drop'\nset yrange [*<0:*]\nset xzeroaxis\nset key outside\nset xtics rotate by -20\n"
                    "plot 'groups.dat' using 2:3:xtic(1) title 'sparsest', '' using 4:5 title 'random', "
                    "'' using 6:7 title 'densest'\n", "sparsity_to_simplicity");
  }
  // Stage 3b: the sparsest/densest cells of long_budget_mixers at long_budget_steps per stage.
  void stage_budget() {
    budget_.clear();
    if (c_.long_budget_steps <= 0 || c_.long_budget_mixers.empty()) return;
    const std::string tag = "budget" + std::to_string(c_.long_budget_steps);
    std::vector<std::tuple<std::string, std::string, int>> runs;
    for (int k = 0; k < c_.long_budget_seeds; ++k)
      for (const auto& m : c_.long_budget_mixers)
        for (index_t g : c_.group_sizes)
          for (const char* p : {"sparsest:", "densest:"}) runs.emplace_back(m, p + std::to_string(g), k);
    rep_.line("stage 3b/5 budget: " + std::to_string(runs.size()) + " runs at " + std::to_string(c_.long_budget_steps) +
              " steps per stage");
    stage_start_ = rep_.elapsed();
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const auto& [m, plan, k] = runs[i];
      std::string key = plan;
      std::replace(key.begin(), key.end(), ':', '-');
      const std::string name = tag + "-" + m + "-" + key + seed_suffix(k);
      json j = run(name, [&, m = m, plan = plan, k = k] { return replace_run(m, plan, k, c_.long_budget_steps); });
      if (j.is_null()) continue;
      rep_.line("  " + name + ": drop " + fmt(j["drop_stage2"].get<double>()) + " (" + eta(i + 1, runs.size()) + ")");
      budget_.push_back(std::move(j));
    }
    if (!sharded()) write_table("budget", budget_);
  }

  // Stage 3c, the causal test: for each chosen layer l, three teachers differing only in how
  // sharply layer l attends (its query weights and bias scaled by α: flat, base = 1, sharp),
  // each fine-tuned alike with layer l's qkv frozen; then layer l of each replaced by every
  // causal mixer at causal_seeds seeds. Claim 2 predicts drop(sharp) < drop(base) < drop(flat).
  struct Variant {
    std::string name;
    double alpha;
  };
  std::vector<Variant> causal_variants() const {
    return {{"flat", c_.causal_alpha_flat}, {"base", 1.0}, {"sharp", c_.causal_alpha_sharp}};
  }
  std::vector<index_t> causal_layers() const { return analysis::study::causal_layers(c_, scores_); }
  // The variant teacher (layer l, v): its checkpoint in causal/ and its record in runs/, made
  // once (by whichever process needs it first: the result is the same) and kept in memory.
  struct VariantTeacher {
    std::optional<zoo::StudentModel<float>> model;
    json info;
  };
  VariantTeacher& variant_teacher(index_t l, const Variant& v) {
    const std::string name = "causal-teacher-l" + std::to_string(l) + "-" + v.name;
    auto& t = variant_teachers_[name];
    if (t.model) return t;
    const fs::path ckpt = dir_ / "causal" / (name + ".safetensors");
    if (!force_ && fs::exists(ckpt) && fs::exists(dir_ / "runs" / (name + ".json"))) {
      t.model = model::load_vit<float, zoo::AnyMixer<float>>(ckpt);
      t.info = json::parse(std::ifstream(dir_ / "runs" / (name + ".json")));
      return t;
    }
    t.model = *teacher_;
    auto& m = *t.model;
    const std::string qkv = "blocks." + std::to_string(l) + ".attn.qkv.";
    const index_t D = cfg_.width;
    float* w = m.param(qkv + "weight");  // [3D, D]: the query rows first
    float* b = m.param(qkv + "bias");
    for (index_t i = 0; i < D * D; ++i) w[i] *= float(v.alpha);
    for (index_t i = 0; i < D; ++i) b[i] *= float(v.alpha);
    std::vector<std::uint8_t> mask(m.param_count(), 1);
    for (const auto& i : m.params_info())
      if (i.name.rfind(qkv, 0) == 0) std::fill(mask.begin() + long(i.offset), mask.begin() + long(i.offset + i.count), 0);
    std::vector<float> dlogits;
    const auto step = [&](long, const float* images, const std::int32_t* labels, index_t n) {
      return train::classify_step(m, images, labels, n, train_.image_numel(), 0.1, dlogits).loss;
    };
    const long steps = c_.causal_finetune_steps;
    const auto r = train::run_loop(m, train_, {.steps = steps, .batch = c_.batch, .lr = c_.causal_lr, .min_lr = c_.causal_lr / 100,
                                               .warmup_steps = steps / 20, .seed = c_.seed + 7, .label = name, .quiet = true},
                                   step, {.mask = mask.data()});
    const double acc = train::evaluate(m, test_).accuracy;
    const auto prof = analysis::profile_model(m, cfg_, test_.head(c_.profile_images), 250);
    const auto s_ent = analysis::layer_scores(prof);
    const double moved = s_ent[std::size_t(l)] - scores_[std::size_t(l)];
    // Kept for the test: within 0.5 points of the teacher and S_ent moved ≥ 0.08 the intended way.
    const bool accepted = std::abs(acc - teacher_acc_) <= 0.005 &&
                          (v.alpha == 1.0 || (v.alpha > 1 ? moved >= 0.08 : moved <= -0.08));
    fs::create_directories(dir_ / "causal");
    io::save_checkpoint(ckpt, m, json(cfg_), {{"causal", json{{"layer", l}, {"alpha", v.alpha}}.dump()}});
    t.info = json{{"layer", l},         {"variant", v.name},  {"alpha", v.alpha},        {"accuracy", acc},
                  {"s_ent_layer", s_ent[std::size_t(l)]}, {"s_ent", s_ent}, {"s_ent_moved", moved},
                  {"accepted", accepted}, {"finetune_steps", steps}, {"seconds", r.seconds}};
    io::write_file_atomic(dir_ / "runs" / (name + ".json"), t.info.dump(2) + "\n");
    // Continue from the checkpoint, exactly as a resumed study does: the fine-tune's AdamW
    // moments (kept in the model) must not reach the students distilled from this teacher.
    t.model = model::load_vit<float, zoo::AnyMixer<float>>(ckpt);
    return t;
  }
  void stage_causal() {
    causal_.clear();
    if (c_.causal_mixers.empty()) return;
    const auto layers = causal_layers();
    for (index_t l : layers)
      check(l >= 0 && l < cfg_.depth, "causal_layers: expected layers in [0, ", cfg_.depth, "), found ", l);
    const auto variants = causal_variants();
    const std::size_t total = std::size_t(c_.causal_seeds) * layers.size() * variants.size() * c_.causal_mixers.size();
    rep_.line("stage 3c/5 causal: layers " + [&] {
      std::string t;
      for (index_t l : layers) t += (t.empty() ? "" : ", ") + std::to_string(l);
      return t;
    }() + ", " + std::to_string(total) + " runs on " + std::to_string(layers.size() * variants.size()) + " variant teachers");
    stage_start_ = rep_.elapsed();
    std::size_t done = 0;
    for (int k = 0; k < c_.causal_seeds; ++k)
      for (index_t l : layers)
        for (const auto& v : variants)
          for (const auto& m : c_.causal_mixers) {
            const std::string name = "causal-l" + std::to_string(l) + "-" + v.name + "-" + m + seed_suffix(k);
            json j = run(name, [&] {
              auto& t = variant_teacher(l, v);
              json r = replace_run(m, "single:" + std::to_string(l), k, 0, &*t.model, t.info["accuracy"].get<double>());
              r["variant"] = v.name;
              return r;
            });
            ++done;
            if (j.is_null()) continue;
            rep_.line("  " + name + ": drop " + fmt(j["drop_stage2"].get<double>()) + " (" + eta(done, total) + ")");
            causal_.push_back(std::move(j));
          }
    if (sharded()) return;
    causal_teachers_.clear();
    for (index_t l : layers)
      for (const auto& v : variants)
        if (!report_only_ || fs::exists(dir_ / "runs" / ("causal-teacher-l" + std::to_string(l) + "-" + v.name + ".json")))
          causal_teachers_.push_back(variant_teacher(l, v).info);
    write_table("causal", causal_);
  }
  // Stage 4: for the dense teacher and each halting teacher, the same layers replaced by each
  // halting mixer at the same budget, halting_seeds seeds each; the dense teacher and the
  // accuracy-matched dense teachers (dense_teachers) go through the same guided pipeline with
  // halting off. The group stage's sparsest-g runs are listed beside them.
  void stage_halting() {
    const index_t g = c_.halting_group > 0 ? c_.halting_group : std::max<index_t>(1, cfg_.depth / 2);
    const std::string plan_spec = "sparsest:" + std::to_string(g);
    const std::size_t teachers_n = c_.halting_teachers.size() + c_.dense_teachers.size() + 1;
    const std::size_t total = c_.halting_mixers.size() * (1 + teachers_n * std::size_t(c_.halting_seeds));
    rep_.line("stage 4/5 halting: " + std::to_string(c_.halting_teachers.size()) + " halting teachers, the dense one and " +
              std::to_string(c_.dense_teachers.size()) + " accuracy-matched dense ones, " + std::to_string(total) +
              " guided runs (" + plan_spec + ", " + std::to_string(c_.halting_seeds) + " seed(s))");
    halting_.clear();
    halting_teachers_.clear();
    stage_start_ = rep_.elapsed();
    std::size_t done = 0;
    for (const auto& m : sharded() ? std::vector<std::string>{} : c_.halting_mixers) {  // listed in the report only
      const std::string name = "group-" + m + "-sparsest-" + std::to_string(g);
      json r = cached(name, [&] { return replace_run(m, plan_spec); }, kRunKeys);
      halting_.push_back({{"teacher", "dense (group pipeline)"}, {"pipeline", "group"}, {"role", "group"}, {"mixer", m},
                          {"teacher_keep", 1.0}, {"teacher_accuracy", teacher_acc_},
                          {"student_accuracy", r["stage2_accuracy"]}, {"student_accuracy_own", r["stage2_accuracy"]},
                          {"student_keep_own", 1.0}, {"gap", r["drop_stage2"]}, {"gap_own", r["drop_stage2"]},
                          {"stage1_accuracy", r["stage1_accuracy"]}, {"seconds", r["seconds"]}});
      rep_.line("  dense teacher, " + m + ": gap " + fmt(r["drop_stage2"].get<double>()) + " (" + eta(++done, total) + ")");
    }
    // Dense teachers run with halting switched off (β so negative that no token ever halts): the
    // sparsity-0 point of the gap series, made exactly like the halting teachers' points, and
    // the accuracy-matched references (issue 15, claim 3 without the confounds).
    struct Teacher {
      std::string path, stem, role;  // role: dense, dense_matched, halting
      std::optional<halting::HaltingOptions> forced;
    };
    std::vector<Teacher> teachers;
    const halting::HaltingOptions off{.beta = 1e4};  // h = σ(γu − β) = 0: no token ever halts
    teachers.push_back({c_.checkpoint, "dense-no-halting", "dense", off});
    for (const auto& path : c_.dense_teachers)
      teachers.push_back({path, "dense-" + fs::path(path).stem().string(), "dense_matched", off});
    for (const auto& path : c_.halting_teachers) teachers.push_back({path, fs::path(path).stem().string(), "halting", {}});
    for (const auto& t : teachers) {
      const std::string& path = t.path;
      auto f = io::read_safetensors(path);
      const auto ho = t.forced ? t.forced : model::read_halting_options(f);
      check(ho.has_value(), "halting teacher ", path, ": no 'halting' metadata (not made by avit_finetune?)");
      model::VitConfig tcfg;
      auto teacher = model::load_vit<float, zoo::AnyMixer<float>>(path, &tcfg);
      check(tcfg.depth == cfg_.depth && tcfg.width == cfg_.width && tcfg.tokens() == cfg_.tokens(),
            "teacher ", path, ": expected the dense teacher's shape (depth ", cfg_.depth, ", width ", cfg_.width,
            "), found depth ", tcfg.depth, ", width ", tcfg.width);
      // The teacher's accuracy, keep ratios and latency (cached; a shard that needs only the
      // accuracy for its runs evaluates it without timing and leaves the file to the unsharded pass).
      const auto evaluate_teacher = [&](bool timed) {
        model::HaltingVit<float, zoo::AnyMixer<float>> hv(teacher, *ho);
        const auto e = train::evaluate_halting(hv, test_);
        // Latency side by side with the dense teacher on the same batch of 64 test images.
        const index_t B = std::min<index_t>(64, test_.count);
        io::BatchLoader loader(test_, B, false, 0);
        std::vector<float> images;
        std::vector<std::int32_t> labels;
        loader.next(images, labels);
        double dense_ms = 0, halted_ms = 0;
        for (int r = 0; timed && r < 2; ++r) {  // alternate twice, keep the second pair
          dense_ms = analysis::median_ms([&] { teacher_->forward(images.data(), B, test_.image_numel()); }, 1, c_.latency_reps);
          halted_ms = analysis::median_ms([&] { hv.forward(images.data(), B, test_.image_numel()); }, 1, c_.latency_reps);
        }
        return json{{"teacher", t.stem}, {"checkpoint", path}, {"halting", *ho}, {"accuracy", e.accuracy},
                    {"keep_per_layer", e.keep}, {"mean_keep", e.mean_keep}, {"ponder", e.ponder},
                    {"latency_batch", B}, {"forward_ms_packed", halted_ms}, {"forward_ms_dense_teacher", dense_ms}};
      };
      const std::string tname = "halting-teacher-" + t.stem;
      json tj;
      const auto teacher_json = [&]() -> const json& {
        if (tj.is_null())
          tj = sharded() && !fs::exists(dir_ / "runs" / (tname + ".json")) ? evaluate_teacher(false)
                                                                         : cached(tname, [&] { return evaluate_teacher(true); });
        return tj;
      };
      if (!sharded()) {
        tj = teacher_json();
        tj["role"] = t.role;
        halting_teachers_.push_back(tj);
      }
      for (const auto& m : c_.halting_mixers)
        for (int k = 0; k < c_.halting_seeds; ++k) {
          const std::uint64_t sd = c_.seed + 1000 * std::uint64_t(k);  // k = 0: the study's seed, as before
          const std::string name = "halting-" + t.stem + "-" + m + (k ? "-s" + std::to_string(k) : "");
          json r = run(name, [&] {
            const json& tinfo = teacher_json();
            const auto plan = distill::parse_plan(plan_spec, cfg_.depth, scores_);
            auto student = teacher;
            zoo::replace_layers(student, cfg_, plan, {.mixer = m, .seed = sd});
            const distill::Stage1Options s1{.steps = c_.stage1_steps, .batch = c_.batch, .lr = c_.lr1, .seed = sd + 1};
            const distill::Stage2Options s2{.steps = c_.stage2_steps, .batch = c_.batch, .lr = c_.lr2, .seed = sd + 2};
            const auto r1 = distill::guided_stage1(teacher, *ho, student, plan, train_, s1, {});
            const double acc1 = distill::evaluate_on_teacher_masks(teacher, *ho, student, test_);
            const auto r2 = distill::guided_stage2(teacher, *ho, student, train_, s2, {});
            const auto cmp = distill::compare_on_teacher_masks(teacher, *ho, student, test_);
            model::HaltingVit<float, zoo::AnyMixer<float>> own(student, *ho);
            const auto e = train::evaluate_halting(own, test_);
            const double tacc = tinfo["accuracy"];
            return json{{"teacher", t.stem}, {"mixer", m}, {"seed", k}, {"plan", plan_spec}, {"layers", plan.layers},
                        {"teacher_keep", tinfo["mean_keep"]}, {"teacher_accuracy", tacc},
                        {"stage1_accuracy", acc1}, {"student_accuracy", cmp.accuracy}, {"gap", tacc - cmp.accuracy},
                        {"relative_gap", (tacc - cmp.accuracy) / tacc}, {"agreement", cmp.agreement},
                        {"student_accuracy_own", e.accuracy}, {"student_keep_own", e.mean_keep},
                        {"gap_own", tacc - e.accuracy}, {"stage1_loss", r1.final_loss},
                        {"seconds", r1.seconds + r2.seconds}};
          }, kHaltingRunKeys);
          if (r.is_null()) continue;  // another shard's
          r["role"] = t.role;
          r["seed"] = k;
          halting_.push_back(r);
          rep_.line("  " + name + ": teacher keep " + fmt(r["teacher_keep"].get<double>(), 3) + ", gap " +
                    fmt(r["gap"].get<double>()) + ", agreement " + fmt(r["agreement"].get<double>()) + " (" +
                    eta(++done, total) + ")");
        }
    }
    if (sharded()) return;
    // Table and plots: gap vs teacher sparsity (1 - mean keep ratio), one line per mixer, means
    // over seeds; gap vs teacher accuracy, halting and dense teachers apart.
    std::ostringstream csv;
    csv << "teacher,role,mixer,seed,teacher_keep,teacher_accuracy,student_accuracy,gap,relative_gap,agreement,"
           "student_accuracy_own,student_keep_own,gap_own,seconds\n";
    for (const auto& r : halting_)
      csv << r["teacher"].get<std::string>() << ',' << r.value("role", "") << ',' << r["mixer"].get<std::string>() << ','
          << r.value("seed", 0) << ',' << r["teacher_keep"] << ',' << r["teacher_accuracy"] << ',' << r["student_accuracy"]
          << ',' << r["gap"] << ',' << r.value("relative_gap", json()) << ',' << r.value("agreement", json()) << ','
          << r["student_accuracy_own"] << ',' << r["student_keep_own"] << ',' << r["gap_own"] << ',' << r["seconds"] << '\n';
    io::write_file_atomic(dir_ / "halting.csv", csv.str());
    io::write_file_atomic(dir_ / "halting.json", json{{"teachers", halting_teachers_}, {"runs", halting_}}.dump(2) + "\n");
    std::string dat, plot = "set terminal pngcairo size 800,520 noenhanced\nset output 'gap_vs_sparsity.png'\n"
                            "set title 'Student-teacher gap vs teacher sparsity (" + plan_spec + ", same budget)'\n"
                            "set xlabel 'teacher sparsity: 1 - mean keep ratio'\nset ylabel 'teacher acc - student acc'\n"
                            "set key outside\nplot ";
    std::string adat, aplot = "set terminal pngcairo size 800,520 noenhanced\nset output 'gap_vs_accuracy.png'\n"
                              "set title 'Student-teacher gap vs teacher accuracy (" + plan_spec + ", same budget)'\n"
                              "set xlabel 'teacher test accuracy'\nset ylabel 'teacher acc - student acc (mean over seeds)'\n"
                              "set key outside\nplot ";
    for (std::size_t i = 0; i < c_.halting_mixers.size(); ++i) {
      const auto& m = c_.halting_mixers[i];
      dat += "# " + m + ": sparsity gap gap_own\n";
      for (const auto& [sp, gap, gap_own] : analysis::study::gap_series(halting_, m))
        dat += io::plot_number(sp) + " " + io::plot_number(gap) + " " + io::plot_number(gap_own) + "\n";
      dat += "\n\n";
      plot += std::string(i ? ", " : "") + "'gap.dat' index " + std::to_string(i) + " using 1:2 with linespoints pt 7 title '" +
              m + " (teacher tokens)', '' index " + std::to_string(i) + " using 1:3 with linespoints dt 2 title '" + m +
              " (own halting)'";
      for (const char* role : {"halting", "dense"}) {
        adat += std::string("# ") + m + " " + role + " teachers: accuracy gap\n";
        for (const auto& c : analysis::study::teacher_cells(halting_, m))
          if ((c.role == "halting") == (std::string(role) == "halting"))
            adat += io::plot_number(c.accuracy) + " " + io::plot_number(analysis::mean(c.gaps)) + "\n";
        adat += "\n\n";
      }
      aplot += std::string(i ? ", " : "") + "'gap_acc.dat' index " + std::to_string(2 * i) + " using 1:2 with points pt 7 title '" +
               m + ", halting teachers', '' index " + std::to_string(2 * i + 1) + " using 1:2 with linespoints pt 4 title '" +
               m + ", dense teachers'";
    }
    io::write_file_atomic(dir_ / "gap.dat", dat);
    io::run_gnuplot(dir_, "gap.gp", plot + "\n", "sparsity_to_simplicity");
    io::write_file_atomic(dir_ / "gap_acc.dat", adat);
    io::run_gnuplot(dir_, "gap_acc.gp", aplot + "\n", "sparsity_to_simplicity");
  }

  void stage_efficiency() {
    rep_.line("stage 5/5 efficiency: parameters and latency per module and end to end");
    eff_ = cached("efficiency", [&] {
      json j;
      std::vector<std::string> names = zoo::mixer_names();
      // Per module at the teacher's width: parameters and forward latency over N.
      std::string dat = "# N";
      for (const auto& n : names) dat += " " + n;
      dat += "\n";
      json modules = json::object();
      for (const auto& n : names) {
        zoo::AnyMixer<float> slot;
        zoo::seat_mixer(slot, n, cfg_);
        modules[n]["params"] = slot.param_count();
      }
      for (index_t N : c_.latency_tokens) {
        dat += std::to_string(N);
        for (const auto& n : names) {
          zoo::AnyMixer<float> slot;
          zoo::seat_mixer(slot, n, cfg_);
          const index_t G = static_cast<index_t>(std::llround(std::sqrt(double(N - 1))));
          if (n == "conv_mixer" && G * G != N - 1) {  // needs CLS + a square grid
            dat += " NaN";
            continue;
          }
          analysis::MixerRig rig(std::move(slot), c_.latency_batch, N, cfg_.width, 1);
          const double ms = rig.forward_ms(c_.latency_reps);
          modules[n]["forward_ms"][std::to_string(N)] = ms;
          dat += " " + io::plot_number(ms);
        }
        dat += "\n";
      }
      io::write_file_atomic(dir_ / "latency.dat", dat);
      j["modules"] = modules;
      j["latency_batch"] = c_.latency_batch;
      // End to end: the teacher vs students with half the layers replaced (untrained weights:
      // latency and size do not depend on them).
      const index_t B = 64;
      std::vector<float> images(std::size_t(B * test_.image_numel()));
      for (std::size_t i = 0; i < images.size(); ++i) images[i] = float(i % 17) * 0.05f;
      auto time_model = [&](auto& mdl) {
        return analysis::median_ms([&] { mdl.forward(images.data(), B, test_.image_numel()); }, 1, c_.latency_reps);
      };
      j["end_to_end"]["teacher"] = {{"params", teacher_->param_count()}, {"forward_ms", time_model(*teacher_)}};
      const auto half = distill::parse_plan("sparsest:" + std::to_string(std::max<index_t>(1, cfg_.depth / 2)), cfg_.depth, scores_);
      for (const auto& n : c_.mixers) {
        auto student = *teacher_;
        zoo::replace_layers(student, cfg_, half, {.mixer = n});
        j["end_to_end"][n] = {{"params", student.param_count()}, {"forward_ms", time_model(student)}, {"layers", half.layers}};
      }
      j["end_to_end_batch"] = B;
      return j;
    });
    std::string plot = "set terminal pngcairo size 900,560 noenhanced\nset output 'latency.png'\nset logscale xy\n"
                       "set title 'Forward latency per module (batch " + std::to_string(c_.latency_batch) + ", D " +
                       std::to_string(cfg_.width) + "), median'\nset xlabel 'tokens N'\nset ylabel 'ms'\nset key outside\nplot ";
    const auto& names = zoo::mixer_names();
    for (std::size_t i = 0; i < names.size(); ++i)
      plot += std::string(i ? ", " : "") + "'latency.dat' using 1:" + std::to_string(i + 2) + " with linespoints title '" + names[i] + "'";
    io::run_gnuplot(dir_, "latency.gp", plot + "\n", "sparsity_to_simplicity");
    std::string pdat = "# mixer params ratio_to_attention\n";
    const double attn = eff_["modules"]["softmax_attention"]["params"];
    for (const auto& n : names)
      pdat += n + " " + io::plot_number(eff_["modules"][n]["params"]) + " " +
              io::plot_number(eff_["modules"][n]["params"].get<double>() / attn) + "\n";
    io::write_file_atomic(dir_ / "params.dat", pdat);
    io::run_gnuplot(dir_, "params.gp", "set terminal pngcairo size 900,480 noenhanced\nset output 'params.png'\n"
                    "set title 'Parameters per module at D = " + std::to_string(cfg_.width) + " (softmax attention = 1)'\n"
                    "set style data histogram\nset style fill solid 0.6 border -1\nset xtics rotate by -30\nset ylabel 'params / attention params'\n"
                    "plot 'params.dat' using 3:xtic(1) notitle\n", "sparsity_to_simplicity");
  }

  // Forward FLOPs per image (every layer's own count, analysis/cost.hpp); keep[l] (halting)
  // scales block l's tokens.
  double model_flops(const zoo::StudentModel<float>& m, const std::vector<double>& keep = {}) const {
    return analysis::vit_flops_per_image(m.net(), cfg_, keep);
  }

  // "k/n, ETA h:mm:ss" over the runs of the stage in flight (started at stage_start_).
  std::string eta(std::size_t done, std::size_t total) const {
    const double el = rep_.elapsed() - stage_start_;
    const double left = done > 0 ? el / double(done) * double(total - done) : 0.0;
    return std::to_string(done) + "/" + std::to_string(total) + ", stage ETA " + io::Progress::hms(left);
  }

  void write_table(const std::string& name, const std::vector<json>& rows) {
    std::ostringstream csv;
    csv << "mixer,plan,layers,seed,stage1_accuracy,stage2_accuracy,drop_stage1,drop_stage2,mean_layer_loss,mean_nmse,"
           "mean_nmse_free,params,seconds\n";
    for (const auto& r : rows) {
      std::string layers;
      for (const auto& l : r["layers"]) layers += (layers.empty() ? "" : " ") + std::to_string(l.get<index_t>());
      const auto num = [&](const char* k) { return r.contains(k) ? r[k].dump() : std::string(); };
      csv << r["mixer"].get<std::string>() << ',' << r["plan"].get<std::string>() << ',' << layers << ','
          << r.value("seed", 0) << ',' << r["stage1_accuracy"] << ',' << r["stage2_accuracy"] << ',' << r["drop_stage1"] << ',' << r["drop_stage2"]
          << ',' << r["mean_layer_loss"] << ',' << num("mean_nmse") << ',' << num("mean_nmse_free") << ',' << r["params"] << ',' << r["seconds"] << '\n';
    }
    io::write_file_atomic(dir_ / (name + ".csv"), csv.str());
    io::write_file_atomic(dir_ / (name + ".json"), json(rows).dump(2) + "\n");
  }

  // report.md and summary.json (analysis/study_report.hpp), from the records in memory and the
  // FLOPs per image of the models this report describes.
  void write_report() {
    analysis::study::Records r{.config = c_, .vit = cfg_, .test_images = test_.count, .teacher_accuracy = teacher_acc_,
                               .scores = scores_, .profile = profile_, .kinds = kinds_, .sweep_stats = sweep_stats_,
                               .sweep_rho = rho_, .sweep = sweep_, .groups = groups_, .budget = budget_,
                               .causal = causal_, .causal_teachers = causal_teachers_, .halting = halting_,
                               .halting_teachers = halting_teachers_, .efficiency = eff_};
    analysis::study::ReportExtras x{.modules = zoo::mixer_names(), .teacher_mflops = model_flops(*teacher_) / 1e6,
                                    .elapsed_seconds = rep_.elapsed(), .report_only = report_only_,
                                    .missing = missing_, .out_dir = dir_.string()};
    if (!report_only_) {
      const auto half =
          distill::parse_plan("sparsest:" + std::to_string(std::max<index_t>(1, cfg_.depth / 2)), cfg_.depth, scores_);
      for (const auto& n : c_.mixers) {
        auto student = *teacher_;
        zoo::replace_layers(student, cfg_, half, {.mixer = n});
        x.student_mflops[n] = model_flops(student) / 1e6;
      }
      for (const auto& t : halting_teachers_)
        if (t.contains("keep_per_layer"))
          x.halting_mflops[t["teacher"].get<std::string>()] =
              model_flops(*teacher_, t["keep_per_layer"].get<std::vector<double>>()) / 1e6;
    }
    analysis::study::Report(std::move(r), std::move(x)).write(dir_);
  }

  StudyConfig c_;
  fs::path dir_;
  bool force_;
  Reporter rep_;
  int shard_ = 0, shards_ = 1;
  bool report_only_ = false;
  std::size_t missing_ = 0;

 public:
  void set_report_only(bool v) { report_only_ = v; }

 private:
  model::VitConfig cfg_;
  std::optional<zoo::StudentModel<float>> teacher_;
  io::ImageDataset train_, test_;
  std::vector<double> scores_;
  double teacher_acc_ = 0, rho_ = 0, stage_start_ = 0;
  std::vector<json> sweep_, groups_, budget_, causal_, causal_teachers_, halting_, halting_teachers_;
  std::map<std::string, VariantTeacher> variant_teachers_;
  json sweep_stats_ = json::object(), kinds_ = json::object(), profile_ = json::object();
  std::size_t run_counter_ = 0;
  json eff_;
};

// The study over R ranks: rank r runs shard r/R; when all have finished (an all-reduce of their
// exit codes, so that one rank's error never leaves the others waiting), rank 0 runs the
// unsharded pass. `force` applies to the shards' runs, not to the final pass (which would redo
// every run the shards just finished).
int study_on_ranks(train::Communicator& comm, const StudyConfig& c, const fs::path& out, bool force, bool quiet) {
  const int rank = comm.rank(), ranks = comm.size();
  double failed = 0;
  try {
    Study shard(c, out, force, quiet || rank != 0, rank, ranks);
    failed = shard.run() != 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sparsity_to_simplicity: rank %d of %d: error: %s\n", rank, ranks, e.what());
    failed = 1;
  }
  comm.allreduce_sum(&failed, 1);
  if (failed > 0) {
    if (rank == 0)
      std::fprintf(stderr, "sparsity_to_simplicity: %g of %d ranks failed (above); the finished runs stay in %s, "
                   "and the same command continues the study\n", failed, ranks, out.string().c_str());
    return 1;
  }
  if (rank != 0) return 0;
  Study final_pass(c, out, false, quiet);
  return final_pass.run();
}

}  // namespace

int main(int argc, char** argv) try {
  const Ranks launch(&argc, &argv);
  train::Communicator* comm = launch.comm();
  CLI::App app{"The sparsity-to-simplicity study end to end: profile, single-layer sweep, group replacement, "
               "efficiency, report"};
  std::string preset_name = "quick", config_file, out;
  bool force = false, quiet = false;
  StudyConfig flags;
  std::string mixers_csv;
  app.add_option("--preset", preset_name, "quick (make experiment, <= 10 min), full, or micro (smoke test)");
  app.add_option("--config", config_file, "JSON file whose keys override the preset (see config.json of a run)");
  app.add_option("--out", out, "output folder (default results/<preset>)");
  auto* o_ckpt = app.add_option("--checkpoint", flags.checkpoint, "teacher checkpoint");
  auto* o_mixers = app.add_option("--mixers", mixers_csv, "comma-separated mixers for the group stage");
  auto* o_sweep = app.add_option("--sweep-mixer", flags.sweep_mixer, "mixer of the single-layer sweep");
  auto* o_s1 = app.add_option("--stage1-steps", flags.stage1_steps, "stage-1 budget (steps)")->check(flags::FiniteNonNegative);
  auto* o_s2 = app.add_option("--stage2-steps", flags.stage2_steps, "stage-2 budget (steps)")->check(flags::FiniteNonNegative);
  auto* o_seeds = app.add_option("--random-seeds", flags.random_seeds, "random groups per size")->check(flags::FiniteNonNegative);
  auto* o_data = app.add_option("--data-dir", flags.data_dir, "Fashion-MNIST folder");
  std::string hteachers_csv, hmixers_csv;
  auto* o_hteachers = app.add_option("--halting-teachers", hteachers_csv, "comma-separated A-ViT teacher checkpoints (stage 4)");
  std::string dteachers_csv;
  auto* o_dteachers = app.add_option("--dense-teachers", dteachers_csv,
                                     "comma-separated dense checkpoints matched in accuracy to the halting teachers (stage 4)");
  auto* o_hmixers = app.add_option("--halting-mixers", hmixers_csv, "comma-separated mixers for stage 4");
  std::string shard_spec;
  bool report_only = false;
  app.add_flag("--report-only", report_only, "write the report from the finished runs only (nothing is trained; the "
               "halting and efficiency stages are left out): a partial report of a study in progress");
  app.add_option("--shard", shard_spec, "K/N: run only the K-th of every N replacement runs (0 <= K < N), for N "
                 "processes side by side on one folder; then run once without --shard for the rest and the report");
  app.add_flag("--force", force, "redo finished stages and runs");
  app.add_flag("--quiet", quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);

  StudyConfig c = preset(preset_name);
  if (!config_file.empty()) {
    check(fs::exists(config_file), "--config: file not found: ", config_file);
    check(fs::is_regular_file(config_file), "--config: expected a JSON file, found a directory or device: ", config_file);
    json j;
    try {
      j = json::parse(std::ifstream(config_file));
    } catch (const json::exception& e) {
      fail("--config ", config_file, ": not valid JSON (", e.what(), ")");
    }
    apply_json(c, j, "--config " + config_file);
  }
  if (o_ckpt->count()) c.checkpoint = flags.checkpoint;
  if (o_sweep->count()) c.sweep_mixer = flags.sweep_mixer;
  if (o_s1->count()) c.stage1_steps = flags.stage1_steps;
  if (o_s2->count()) c.stage2_steps = flags.stage2_steps;
  if (o_seeds->count()) c.random_seeds = flags.random_seeds;
  if (o_data->count()) c.data_dir = flags.data_dir;
  if (o_mixers->count()) {
    c.mixers.clear();
    std::stringstream ss(mixers_csv);
    for (std::string m; std::getline(ss, m, ',');) c.mixers.push_back(m);
  }
  auto split = [](const std::string& csv) {
    std::vector<std::string> v;
    std::stringstream ss(csv);
    for (std::string x; std::getline(ss, x, ',');) v.push_back(x);
    return v;
  };
  if (o_hteachers->count()) c.halting_teachers = split(hteachers_csv);
  if (o_dteachers->count()) c.dense_teachers = split(dteachers_csv);
  if (o_hmixers->count()) c.halting_mixers = split(hmixers_csv);
  const auto& known = zoo::mixer_names();
  for (const auto& m : c.halting_mixers)
    check(std::find(known.begin(), known.end(), m) != known.end(), "--halting-mixers: unknown mixer '", m, "'; known: ",
          zoo::detail::join(known));
  for (const auto& m : c.mixers)
    check(std::find(known.begin(), known.end(), m) != known.end(), "--mixers: unknown mixer '", m, "'; known: ",
          zoo::detail::join(known));
  check(std::find(known.begin(), known.end(), c.sweep_mixer) != known.end(), "--sweep-mixer: unknown mixer '",
        c.sweep_mixer, "'; known: ", zoo::detail::join(known));
  check(c.stage1_steps >= 0 && c.stage2_steps >= 0 && c.batch > 0 && c.random_seeds >= 1,
        "expected non-negative budgets, batch > 0 and random_seeds >= 1");
  check(c.seeds >= 1 && c.sweep_seeds >= 1 && c.long_budget_seeds >= 1 && c.long_budget_steps >= 0,
        "expected seeds, sweep_seeds and long_budget_seeds >= 1 and long_budget_steps >= 0, found ", c.seeds, ", ",
        c.sweep_seeds, ", ", c.long_budget_seeds, " and ", c.long_budget_steps);
  for (const auto* list : {&c.sweep_mixers, &c.long_budget_mixers})
    for (const auto& m : *list)
      check(std::find(known.begin(), known.end(), m) != known.end(), "sweep_mixers / long_budget_mixers: unknown mixer '",
            m, "'; known: ", zoo::detail::join(known));
  int shard = 0, shards = 1;
  if (!shard_spec.empty()) {
    char slash = 0;
    std::istringstream in(shard_spec);
    in >> shard >> slash >> shards;
    check(in && in.eof() && slash == '/' && shards >= 1 && shard >= 0 && shard < shards,
          "--shard: expected K/N with 0 <= K < N (e.g. 0/2), found '", shard_spec, "'");
  }
  if (out.empty()) out = "results/" + c.preset;
  check(!(report_only && (shards > 1 || force)), "--report-only: not with --shard or --force");
  if (comm && comm->size() > 1) {
    check(shard_spec.empty() && !report_only, "--shard and --report-only: not under mpirun (rank r of R runs shard "
          "r/R, then rank 0 the rest); found ", shard_spec.empty() ? "--report-only" : "--shard " + shard_spec);
    return study_on_ranks(*comm, c, out, force, quiet);
  }
  Study study(c, out, force, quiet, shard, shards);
  study.set_report_only(report_only);
  return study.run();
} catch (const std::exception& e) {
  std::fprintf(stderr, "sparsity_to_simplicity: error: %s\n", e.what());
  return 1;
}
