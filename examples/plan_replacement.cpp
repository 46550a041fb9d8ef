// plan_replacement: the cheapest student of a teacher within an accuracy budget, planned and
// verified (issue 18; docs/planner.md).
//
//   plan_replacement --checkpoint models/vit-fmnist.safetensors --study docs/results/paper \
//                    --budget 0.01 --objective latency --tokens 1024 --out results/plan
//
// Predictions: every (layer, mixer)'s single-layer drop measured by a study's sweep (its
// runs/sweep-*.json: the mean over seeds and its standard error; --study repeated pools the
// sweeps of studies with the same protocol), and where the sweep has no measurement, the drop
// model d(l, m) = s_m · e_l fitted to the sweep (analysis/drop_model.hpp): a mixer the sweep never
// ran is first distilled alone in --probe-layers layers to fit its scale; a layer no mixer was
// measured in gets its effect from the study's per-layer attention statistic (--layer-feature).
// The model is validated on the sweep's cells held out in turn (predictor.json, report.md;
// --validate-only stops there, before any data is loaded). A halting teacher (A-ViT checkpoint)
// scales each layer's costs to the tokens it keeps and distils its students with guided
// distillation (distill/guided.hpp), measured with their own halting. Costs: the mixer's parameters, forward FLOPs per
// sequence at --tokens (default: the teacher's), or forward latency measured here on 8
// sequences of --tokens (analysis::MixerRig, median of --latency-reps; cached in
// <out>/latency.json for this machine and thread count), against attention's. The
// plan minimises the summed cost subject to the summed predicted drop <= budget (exact DP,
// distill::solve); then each plan is distilled with the study's protocol and budget (its
// config.json) and measured on the test set, and the predictions are corrected until a student
// meets the budget or --max-runs is spent (distill::back_off). Resumable: every measured plan is
// kept in <out>/runs/ and reused. Writes <out>/plan.json (the last plan; replace_layers --plan
// file:<out>/plan.json distils it again), <out>/student.safetensors (its student; `evaluate`
// rebuilds it from its metadata), <out>/result.json and <out>/report.md: every distilled plan
// and the study's fixed plans side by side with their parameters and end-to-end forward
// latency (measured in this run) and which of them lie on the Pareto front.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "data.hpp"
#include "flags.hpp"
#include "seqswap/analysis/cost.hpp"
#include "seqswap/analysis/drop_model.hpp"
#include "seqswap/analysis/stats.hpp"
#include "seqswap/analysis/study_config.hpp"
#include "seqswap/distill/guided.hpp"
#include "seqswap/distill/planner.hpp"
#include "seqswap/distill/stages.hpp"
#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/checkpoint.hpp"
#include "seqswap/io/progress.hpp"
#include "seqswap/zoo/student.hpp"
#include "zoo_instances.hpp"  // with SEQSWAP_ZOO_EXTERN: the mixers' code compiled once for all drivers

using namespace seqswap;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& p, const std::string& what) {
  check(fs::is_regular_file(p), what, ": expected ", p.string(), ", found no such file");
  try {
    return json::parse(std::ifstream(p));
  } catch (const json::exception& e) {
    fail(what, ": ", p.string(), " is not valid JSON (", e.what(), ")");
  }
}

zoo::AnyMixer<float> seated(const std::string& mixer, const model::VitConfig& cfg) {
  zoo::AnyMixer<float> slot;  // the registry seats attention as the teacher has it
  zoo::seat_mixer(slot, mixer == distill::kKeepAttention ? "softmax_attention" : mixer, cfg, json::object());
  return slot;
}

// Forward latency (ms) of a mixer (or attention) at the teacher's width on kLatencyBatch
// sequences of `tokens`, measured here when first asked for, or read from <out>/latency.json
// when it was measured on this machine with these threads, tokens and width before.
constexpr index_t kLatencyBatch = 8;
class LatencyCache {
 public:
  LatencyCache(const model::VitConfig& cfg, index_t tokens, int reps, fs::path file,
               std::function<void(const std::string&)> say)
      : cfg_(cfg), tokens_(tokens), reps_(reps), file_(std::move(file)), say_(std::move(say)),
        key_{{"machine", analysis::machine_name()}, {"tokens", tokens}, {"width", cfg.width},
             {"heads", cfg.heads}, {"batch", kLatencyBatch}} {
    if (fs::is_regular_file(file_)) {
      try {
        cached_ = json::parse(std::ifstream(file_));
      } catch (const json::exception&) {
        say_("ignoring " + file_.string() + ": not valid JSON (measuring again)");
      }
    }
    if (!cached_.is_object() || cached_.value("key", json()) != key_)
      cached_ = json{{"key", key_}, {"forward_ms", json::object()}};
  }
  double operator()(const std::string& m) {
    if (cached_["forward_ms"].contains(m)) return cached_["forward_ms"][m];
    analysis::MixerRig rig(seated(m, cfg_), kLatencyBatch, tokens_, cfg_.width, 1);
    const double ms = rig.forward_ms(reps_);
    cached_["forward_ms"][m] = ms;
    io::write_file_atomic(file_, cached_.dump(2) + "\n");
    say_("latency of " + m + " at " + std::to_string(tokens_) + " tokens: " + std::to_string(ms) + " ms per " +
         std::to_string(kLatencyBatch) + " sequences (" + key_["machine"].get<std::string>() + ")");
    return ms;
  }

 private:
  model::VitConfig cfg_;
  index_t tokens_;
  int reps_;
  fs::path file_;
  std::function<void(const std::string&)> say_;
  json key_, cached_;
};

// One mixer's cost of one layer under the objective.
double mixer_cost(const std::string& mixer, const model::VitConfig& cfg, const std::string& objective, index_t tokens,
                  LatencyCache& latency) {
  if (objective == "latency") return latency(mixer);
  const auto slot = seated(mixer, cfg);
  if (objective == "params") return double(slot.param_count());
  return slot.flops(Layout::dense(1, tokens, cfg.width));  // "flops": one sequence of `tokens`
}

// A student's end-to-end forward: median ms over `reps` batches of kE2eBatch images (the weights
// do not matter for the time, so the plan is seated on a copy of the teacher without training).
constexpr index_t kE2eBatch = 64;
double student_forward_ms(const zoo::StudentModel<float>& teacher, const model::VitConfig& cfg,
                          const std::vector<std::string>& per_layer, int reps) {
  auto student = teacher;
  zoo::replace_layers(student, cfg, per_layer, {});
  const index_t numel = cfg.channels * cfg.image_size * cfg.image_size;
  std::vector<float> images(std::size_t(kE2eBatch * numel));
  for (std::size_t i = 0; i < images.size(); ++i) images[i] = float(i % 17) * 0.05f;
  return analysis::median_ms([&] { student.forward(images.data(), kE2eBatch, numel); }, 1, reps);
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App app{"Plan and verify the cheapest student within an accuracy budget"};
  std::string checkpoint, out_dir, objective = "flops", mixers_csv, predictions = "sweep", layer_feature = "local_mass";
  std::vector<std::string> study_dirs;
  double budget = 0.01;
  index_t tokens = 0, train_limit = 0, test_limit = 0;
  int max_runs = 4, latency_reps = 21, probes_per_mixer = 2, replicate_seeds = 0, seeds_per_run = 1;
  bool quiet = false, validate_only = false, stop_at_first = false;
  DataFlags data;
  app.add_option("--checkpoint", checkpoint, "teacher checkpoint (safetensors)")->required()->check(CLI::ExistingFile);
  app.add_option("--study", study_dirs, "a finished study's folder (its sweep predicts each layer's drop); repeat it to "
                 "pool the sweeps of studies run with the same protocol (the first one's protocol is used)")
      ->required();
  app.add_option("--budget", budget, "accuracy drop allowed, a fraction (0.01 = one point)")->check(CLI::Range(0.0, 0.999));
  app.add_option("--objective", objective, "what to minimise: latency (measured here at --tokens), flops (per "
                 "sequence at --tokens) or params")
      ->check(CLI::IsMember({"latency", "flops", "params"}));
  app.add_option("--mixers", mixers_csv, "comma-separated mixers to consider (default: every mixer the sweep measured); "
                 "a mixer the sweep did not measure is probed in --probe-layers layers");
  app.add_option("--predictions", predictions, "a layer's predicted drop: sweep (the sweep's mean where it measured "
                 "the (layer, mixer) cell, the fitted model d = s_mixer * e_layer elsewhere) or model (the model "
                 "everywhere)")->check(CLI::IsMember({"sweep", "model"}));
  app.add_option("--probe-layers", probes_per_mixer, "single-layer students distilled per mixer the sweep did not "
                 "measure, to fit its scale")->check(CLI::Range(1, 64));
  app.add_option("--layer-feature", layer_feature, "the per-layer attention statistic (the study's runs/kinds.json) "
                 "that predicts the effect of a layer no mixer was measured in, or none")
      ->check(CLI::IsMember({"self_mass", "local_mass", "cls_mass", "marginal_entropy", "mutual_information",
                             "background_mass", "none"}));
  app.add_option("--tokens", tokens, "sequence length for the latency and FLOPs objectives (0 = the teacher's)")
      ->check(flags::FiniteNonNegative);
  app.add_option("--latency-reps", latency_reps, "timed repetitions per latency (median; also for the report's "
                 "end-to-end latencies)")->check(CLI::Range(1, 1000));
  app.add_option("--max-runs", max_runs, "students distilled and measured at most")->check(CLI::Range(1, 100));
  app.add_option("--train-limit", train_limit, "use only the first N training images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--test-limit", test_limit, "measure on the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--out", out_dir, "output folder")->required();
  app.add_flag("--stop-at-first", stop_at_first, "stop at the first plan that meets the budget (default: when it "
               "meets it with room to spare, scale the predictions down and try the cheaper plan they allow, within "
               "--max-runs; the answer is the cheapest plan that met the budget)");
  app.add_option("--replicate-seeds", replicate_seeds, "distil the chosen plan again with this many more training "
                 "seeds (the study's seed + 1000 k: the new mixers' initialisation and the data order) and report "
                 "the drops' mean, standard deviation and how many meet the budget")->check(CLI::Range(0, 20));
  app.add_option("--seeds-per-run", seeds_per_run, "training seeds per measured plan: the correction loop judges a "
                 "plan by its mean drop over these seeds (the study's seed + 1000 k), so that meeting the budget "
                 "does not hang on one seed's luck (each run costs this many distillations)")->check(CLI::Range(1, 10));
  app.add_flag("--quiet", quiet, "no progress lines");
  app.add_flag("--validate-only", validate_only, "fit the drop model to the sweep, validate it on held-out cells, "
               "write <out>/predictor.json and stop (no training, no data needed)");
  data.add(app);
  CLI11_PARSE(app, argc, argv);
  const fs::path out(out_dir), study(study_dirs.front());
  std::string study_dir;
  for (const auto& d : study_dirs) study_dir += (study_dir.empty() ? "" : "`, `") + d;
  for (const char* f : {"plan.json", "result.json", "report.md", "student.safetensors", "latency.json", "predictor.json"})
    io::check_writable(out / f, "--out");
  fs::create_directories(out / "runs");

  // The study's protocol and its single-layer measurements.
  analysis::study::StudyConfig sc = analysis::study::preset("full");
  analysis::study::apply_json(sc, read_json(study / "config.json", "--study"), (study / "config.json").string());
  std::map<std::pair<std::string, index_t>, std::vector<double>> sweep;
  for (const auto& dir : study_dirs) {
    if (dir != study_dirs.front()) {  // pooled predictions must come from the same protocol
      analysis::study::StudyConfig other = analysis::study::preset("full");
      const fs::path cf = fs::path(dir) / "config.json";
      analysis::study::apply_json(other, read_json(cf, "--study"), cf.string());
      check(other.checkpoint == sc.checkpoint && other.protocol == sc.protocol && other.stage1_steps == sc.stage1_steps &&
                other.stage2_steps == sc.stage2_steps && other.batch == sc.batch && other.lr1 == sc.lr1 &&
                other.lr2 == sc.lr2 && other.stage1_ce_weight == sc.stage1_ce_weight,
            "--study: ", dir, " ran another protocol or teacher than ", study_dirs.front(),
            " (checkpoint, protocol, steps, batch, learning rates and CE weight must agree to pool their sweeps)");
    }
    const fs::path runs = fs::path(dir) / "runs";
    check(fs::is_directory(runs), "--study: expected a study folder with runs/, found none at ", dir);
    std::size_t found = 0;
    for (const auto& e : fs::directory_iterator(runs)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("sweep-", 0) != 0 || e.path().extension() != ".json") continue;
      const json r = read_json(e.path(), "--study");
      sweep[{r.at("mixer").get<std::string>(), r.at("layers").at(0).get<index_t>()}].push_back(r.at("drop_stage2"));
      ++found;
    }
    check(found > 0, "--study: expected single-layer runs (runs/sweep-*.json) in ", dir, ", found none");
  }

  model::VitConfig cfg;
  auto teacher = model::load_vit<float, zoo::AnyMixer<float>>(checkpoint, &cfg);
  if (tokens == 0) tokens = cfg.tokens();
  std::vector<std::string> mixers;
  if (!mixers_csv.empty()) {
    std::stringstream ss(mixers_csv);
    for (std::string m; std::getline(ss, m, ',');) {
      check(std::find(zoo::mixer_names().begin(), zoo::mixer_names().end(), m) != zoo::mixer_names().end(),
            "--mixers: unknown mixer '", m, "'; known: ", zoo::detail::join(zoo::mixer_names()));
      if (std::find(mixers.begin(), mixers.end(), m) == mixers.end()) mixers.push_back(m);
    }
  } else {
    for (const auto& [key, v] : sweep)
      if (std::find(mixers.begin(), mixers.end(), key.first) == mixers.end()) mixers.push_back(key.first);
  }
  for (const auto& [key, v] : sweep)
    check(key.second < cfg.depth, "--study: a single-layer run of layer ", key.second, " for a teacher of depth ",
          cfg.depth, " (", checkpoint, ")");

  const auto say = [&](const std::string& s) {
    if (!quiet) std::fprintf(stderr, "plan_replacement: %s\n", s.c_str());
  };

  // The sweep's cells for the drop model, and the layer feature from the study's attention kinds.
  std::vector<analysis::DropCell> cells;
  for (const auto& [key, d] : sweep) cells.push_back({std::size_t(key.second), key.first, analysis::mean(d), d.size()});
  std::vector<double> feature;
  if (layer_feature != "none") {
    const fs::path kf = study / "runs" / "kinds.json";
    if (fs::is_regular_file(kf)) {
      const json k = read_json(kf, "--study");
      for (const auto& layer : k.at("layers")) feature.push_back(layer.at("mean").at(layer_feature).get<double>());
      check(feature.size() == std::size_t(cfg.depth), "--study: ", kf.string(), " describes ", feature.size(),
            " layers, the teacher has ", cfg.depth);
    } else {
      say("no " + kf.string() + ": layers no mixer was measured in cannot be predicted");
    }
  }
  const std::size_t depth = std::size_t(cfg.depth);
  const auto sweep_model = analysis::DropModel::fit(depth, cells, feature);
  for (std::size_t l = 0; l < depth; ++l)
    check(sweep_model.knows_layer(l), "--study: no mixer was measured in layer ", l, " and no layer feature (",
          layer_feature, " in runs/kinds.json) predicts it");

  // The predictors' validation on the sweep's own cells (each refit without what it predicts).
  const auto v_cell = analysis::validate_leave_one_cell_out(depth, cells);
  const auto v_mixer = analysis::validate_held_out_mixer(depth, cells, std::size_t(probes_per_mixer));
  const auto v_layer = feature.empty() ? analysis::DropValidation{} : analysis::validate_leave_one_layer_out(depth, cells, feature);
  json predictor{{"predictions", predictions}, {"layer_feature", layer_feature}, {"model", sweep_model.to_json()},
                 {"probes", json::array()}, {"validation", json::array()}};
  for (const auto* v : {&v_cell, &v_mixer, &v_layer})
    if (!v->cases.empty()) {
      predictor["validation"].push_back(v->to_json());
      char line[320];
      std::snprintf(line, sizeof line, "predictor, %s: MAE %.5f vs %.5f (%s), 95%% interval covers %.0f%% of %zu",
                    v->scheme.c_str(), v->mae, v->baseline_mae, v->baseline.c_str(), 100 * v->coverage95, v->cases.size());
      std::printf("%s\n", line);
    }
  if (validate_only) {
    io::write_file_atomic(out / "predictor.json", predictor.dump(2) + "\n");
    std::printf("predictor: d(l, m) = s_m * e_l over %zu cells, residual sigma %.5f; wrote %s\n", cells.size(),
                sweep_model.sigma(), (out / "predictor.json").string().c_str());
    return 0;
  }

  auto train_set = data.load(io::Split::train, cfg);
  auto test_set = data.load(io::Split::test, cfg);
  if (train_limit > 0) train_set = train_set.head(train_limit);
  if (test_limit > 0) test_set = test_set.head(test_limit);
  // A halting teacher (A-ViT, metadata 'halting'): its accuracy with halting, and the fraction of
  // tokens each layer keeps, which scales that layer's costs.
  const auto halting_opts = model::read_halting_options(io::read_safetensors(checkpoint));
  std::vector<double> keep(depth, 1.0);
  double teacher_acc = 0;
  if (halting_opts) {
    model::HaltingVit<float, zoo::AnyMixer<float>> hv(teacher, *halting_opts);
    const auto e = train::evaluate_halting(hv, test_set);
    teacher_acc = e.accuracy;
    keep = e.keep;
    std::string k;
    for (double v : keep) k += (k.empty() ? "" : " ") + std::to_string(v).substr(0, 5);
    say("halting teacher: keeps " + k + " of the tokens per layer; costs at those token counts, students distilled "
        "with guided distillation (distill/guided.hpp)");
  } else {
    teacher_acc = train::evaluate(teacher, test_set).accuracy;
  }
  const bool study_of_this_teacher = fs::path(sc.checkpoint).lexically_normal() == fs::path(checkpoint).lexically_normal();
  if (!study_of_this_teacher)
    say("the study distilled students of " + sc.checkpoint + ", not of " + checkpoint +
        ": its drops predict this teacher's only as far as the correction loop confirms them");
  say("teacher " + std::to_string(teacher_acc) + " on " + std::to_string(test_set.count) + " test images; " +
      std::to_string(mixers.size()) + " mixers x " + std::to_string(cfg.depth) + " layers; budget " +
      std::to_string(budget) + ", objective " + objective + " at " + std::to_string(tokens) + " tokens");

  // Distil one student with the study's protocol and measure its drop; the record `rec` keeps
  // the measurement (reused when it holds the same plan, unless `force`). Used by the probes and
  // by the correction loop's oracle.
  std::optional<zoo::StudentModel<float>> last_student;
  const auto started = std::chrono::steady_clock::now();
  double distill_seconds = 0;  // over the students distilled so far (for the estimate of what is left)
  int distilled = 0;
  const auto distil = [&](const std::vector<std::string>& per_layer, const fs::path& rec, const std::string& what,
                          int left_after, bool force, const json& extra, std::uint64_t seed) -> double {
    auto student = teacher;
    const auto plan = zoo::replace_layers(student, cfg, per_layer, {.seed = seed}, "planner");
    if (!force && fs::exists(rec)) {
      const json r = read_json(rec, "resume");
      if (r.value("plan", json()) == json(per_layer)) {
        say(what + ": measured before (" + rec.filename().string() + "), drop " + std::to_string(r["drop"].get<double>()));
        last_student.reset();
        return r["drop"].get<double>();
      }
    }
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    say(what + ": distilling " + std::to_string(plan.layers.size()) + " replaced layer(s), elapsed " + io::Progress::hms(el) +
        (distilled > 0 ? ", about " + io::Progress::hms(distill_seconds / distilled) + " per student" : std::string()) +
        (distilled > 0 && left_after >= 0
             ? ", at most " + io::Progress::hms(distill_seconds / distilled * (left_after + 1)) + " left"
             : std::string()));
    const auto run_start = std::chrono::steady_clock::now();
    io::Progress p1(what + " stage1", sc.stage1_steps, 10.0, quiet), p2(what + " stage2", sc.stage2_steps, 10.0, quiet);
    const distill::Stage1Options s1{.steps = sc.stage1_steps, .batch = sc.batch, .lr = sc.lr1,
                                    .ce_weight = sc.stage1_ce_weight, .mse_weight = sc.stage1_mse_weight,
                                    .free_running = sc.protocol == "free", .seed = seed + 1};
    const distill::Stage2Options s2{.steps = sc.stage2_steps, .batch = sc.batch, .lr = sc.lr2, .seed = seed + 2};
    double acc = 0;
    if (halting_opts) {  // the student keeps the teacher's halting; stage 1 on the tokens the teacher keeps
      const distill::Stage1Options s1h{.steps = sc.stage1_steps, .batch = sc.batch, .lr = sc.lr1, .seed = seed + 1};
      if (!plan.layers.empty()) {
        distill::guided_stage1(teacher, *halting_opts, student, plan, train_set, s1h, {}, &p1);
        distill::guided_stage2(teacher, *halting_opts, student, train_set, s2, {}, &p2);
      }
      model::HaltingVit<float, zoo::AnyMixer<float>> own(student, *halting_opts);
      acc = train::evaluate_halting(own, test_set).accuracy;
    } else {
      if (!plan.layers.empty()) {
        distill::stage1(teacher, student, plan, train_set, s1, &p1);
        distill::stage2(teacher, student, train_set, s2, &p2);
      }
      acc = train::evaluate(student, test_set).accuracy;
    }
    distill_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    ++distilled;
    json r{{"plan", per_layer}, {"accuracy", acc}, {"drop", teacher_acc - acc}, {"params", student.param_count()}};
    r.update(extra);
    io::write_file_atomic(rec, r.dump(2) + "\n");
    last_student = std::move(student);
    say(what + ": accuracy " + std::to_string(acc) + ", drop " + std::to_string(teacher_acc - acc));
    return teacher_acc - acc;
  };

  // Probes: a mixer the sweep did not measure is distilled alone in a few layers spread over the
  // layers' effects; those drops fit its scale s_m.
  std::vector<analysis::DropCell> probe_cells;
  std::vector<std::pair<std::string, std::size_t>> probes_todo;
  for (const auto& m : mixers)
    if (!sweep_model.knows_mixer(m))
      for (std::size_t l : analysis::probe_layers(sweep_model, std::size_t(std::min<int>(probes_per_mixer, cfg.depth))))
        probes_todo.push_back({m, l});
  if (!probes_todo.empty()) fs::create_directories(out / "probes");
  if (!probes_todo.empty())
    say(std::to_string(probes_todo.size()) + " probe student(s) for the mixers the sweep did not measure");
  for (std::size_t i = 0; i < probes_todo.size(); ++i) {
    const auto& [m, l] = probes_todo[i];
    std::vector<std::string> per_layer(depth, distill::kKeepAttention);
    per_layer[l] = m;
    const double d = distil(per_layer, out / "probes" / ("probe-" + m + "-l" + std::to_string(l) + ".json"),
                            "probe " + std::to_string(i + 1) + "/" + std::to_string(probes_todo.size()) + " (" + m +
                                " in layer " + std::to_string(l) + ")",
                            int(probes_todo.size() - i - 1), false, json{{"probe", {{"mixer", m}, {"layer", l}}}}, sc.seed);
    probe_cells.push_back({l, m, d, 1});
  }
  std::vector<analysis::DropCell> all_cells = cells;
  all_cells.insert(all_cells.end(), probe_cells.begin(), probe_cells.end());
  const auto drop_model = analysis::DropModel::fit(depth, all_cells, feature);

  predictor["model"] = drop_model.to_json();
  for (const auto& c : probe_cells) predictor["probes"].push_back({{"mixer", c.mixer}, {"layer", c.layer}, {"drop", c.drop}});
  io::write_file_atomic(out / "predictor.json", predictor.dump(2) + "\n");

  // Costs per (layer, option): at --tokens, or for a halting teacher at the tokens that layer
  // keeps, round(keep_l · tokens) (latencies cached per token count: latency.json at --tokens,
  // latency-<N>.json at others).
  std::vector<index_t> layer_tokens(depth);
  for (std::size_t l = 0; l < depth; ++l)
    layer_tokens[l] = std::max<index_t>(1, index_t(std::lround(keep[l] * double(tokens))));
  std::map<index_t, LatencyCache> latency_caches;
  std::map<std::pair<std::string, std::size_t>, double> cost_memo;
  const auto layer_cost = [&](std::size_t l, const std::string& m) {
    const auto key = std::make_pair(m, l);
    if (const auto it = cost_memo.find(key); it != cost_memo.end()) return it->second;
    const index_t t = layer_tokens[l];
    auto it = latency_caches.find(t);
    if (it == latency_caches.end())
      it = latency_caches.try_emplace(t, cfg, t, latency_reps,
                                      out / (t == tokens ? std::string("latency.json")
                                                         : "latency-" + std::to_string(t) + ".json"), say).first;
    return cost_memo[key] = mixer_cost(m, cfg, objective, t, it->second);
  };

  // The problem: per layer, attention and every mixer with its predicted drop and cost.
  distill::PlanProblem problem;
  problem.budget = budget;
  std::map<std::pair<std::string, std::size_t>, std::string> predicted_by;  // "sweep" or "model"
  double all_attention = 0;
  for (std::size_t l = 0; l < depth; ++l) all_attention += layer_cost(l, distill::kKeepAttention);
  for (std::size_t l = 0; l < depth; ++l) {
    std::vector<distill::LayerOption> opts{{distill::kKeepAttention, layer_cost(l, distill::kKeepAttention), 0.0, 0.0}};
    for (const auto& m : mixers) {
      const double cost = layer_cost(l, m);
      const auto it = sweep.find({m, index_t(l)});
      if (predictions == "sweep" && it != sweep.end()) {
        const auto& d = it->second;
        const double se = d.size() > 1 ? analysis::sample_std(d) / std::sqrt(double(d.size())) : 0.0;
        opts.push_back({m, cost, analysis::mean(d), se});
        predicted_by[{m, l}] = "sweep";
      } else {
        const auto p = drop_model.predict(l, m);
        opts.push_back({m, cost, p.drop, std::isfinite(p.se) ? p.se : 0.0});
        predicted_by[{m, l}] = "model";
      }
    }
    problem.layers.push_back(std::move(opts));
  }

  // The oracle: distil the plan's student with the study's protocol, measure its drop. Reused
  // from <out>/runs/ when this plan was measured before (same plan, same protocol).
  int run = 0;
  bool force = false;  // distil even when the plan was measured before (the final student)
  // A plan's record name: FNV-1a of its mixers, the same on every machine and build.
  const auto plan_key = [](const std::vector<std::string>& per_layer) {
    std::string key;
    for (const auto& m : per_layer) key += (key.empty() ? "" : "_") + m;
    std::uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : key) h = (h ^ ch) * 1099511628211ull;
    return std::to_string(h % 1000000007);
  };
  // The record of a plan distilled with another seed than the study's (the loop's extra seeds
  // and the replicates share it).
  const auto seed_record = [&](const std::string& key, std::uint64_t seed) {
    return out / "runs" / ("plan-" + key + "-seed" + std::to_string(seed) + ".json");
  };
  const auto measure = [&](const distill::Choice& c) {
    std::vector<std::string> per_layer;
    for (std::size_t l = 0; l < c.option.size(); ++l) per_layer.push_back(problem.layers[l][c.option[l]].mixer);
    if (!force) ++run;
    const std::string key = plan_key(per_layer);
    const std::string what = force ? std::string("final student")
                                   : "run " + std::to_string(run) + " of at most " + std::to_string(max_runs) +
                                         " (predicted drop " + std::to_string(c.drop) + ")";
    const json extra{{"predicted_drop", c.drop}, {"cost", c.cost}};
    // The other seeds first (never forced: their records serve the final student's rerun too),
    // the study's seed last, so that last_student is that seed's student.
    double sum = 0;
    for (int k = 1; k < seeds_per_run; ++k) {
      const std::uint64_t seed = sc.seed + 1000u * std::uint64_t(k);
      sum += distil(per_layer, seed_record(key, seed), what + ", seed " + std::to_string(seed), -1, false, extra, seed);
    }
    sum += distil(per_layer, out / "runs" / ("plan-" + key + ".json"), what, force ? -1 : (max_runs - run) * seeds_per_run, force, extra,
                  sc.seed);
    return sum / seeds_per_run;
  };
  const auto result = distill::back_off(problem, measure, max_runs, !stop_at_first);
  const auto& final_plan = result.answer().choice;

  // The student of the final plan (distilled again when its measurement was reused).
  std::vector<std::string> final_mixers;
  for (std::size_t l = 0; l < final_plan.option.size(); ++l) final_mixers.push_back(problem.layers[l][final_plan.option[l]].mixer);
  if (!last_student || result.chosen + 1 != result.attempts.size()) {
    say("distilling the final plan's student again (its measurement was reused)");
    force = true;
    measure(final_plan);
  }
  io::write_file_atomic(out / "plan.json", distill::plan_json(problem, final_plan, objective).dump(2) + "\n");
  io::save_checkpoint(out / "student.safetensors", *last_student, cfg, zoo::student_metadata(final_mixers));

  // Seed replicates of the chosen plan: the same plan distilled with other training seeds.
  std::vector<double> replicate_drops{read_json(out / "runs" / ("plan-" + plan_key(final_mixers) + ".json"), "the final "
                                                "plan's record")["drop"].get<double>()};
  for (int k = 1; k <= replicate_seeds; ++k) {
    const std::uint64_t seed = sc.seed + 1000u * std::uint64_t(k);
    replicate_drops.push_back(distil(final_mixers, seed_record(plan_key(final_mixers), seed),
                                     "seed replicate " + std::to_string(k) + "/" + std::to_string(replicate_seeds) +
                                         " of the chosen plan (seed " + std::to_string(seed) + ")",
                                     replicate_seeds - k, false, json{{"seed", seed}}, seed));
  }

  // Every student of the report: the planner's measured plans and the study's fixed plans, each
  // with its parameters and end-to-end forward latency measured here side by side.
  struct Point {
    std::string source, plan;  // "planner run k" / "study", human-readable plan
    std::vector<std::string> per_layer;
    double drop = 0;           // measured (one seed) or mean over the study's seeds
    std::size_t n = 1;
    double cost_ratio = 0;     // objective cost / all-attention cost (mixer part)
    std::size_t params = 0;
    double forward_ms = 0;
    bool pareto = false;
  };
  std::vector<Point> points;
  const auto describe = [&](const std::vector<std::string>& per_layer) {
    std::string p;
    for (std::size_t l = 0; l < per_layer.size(); ++l)
      if (per_layer[l] != distill::kKeepAttention) p += (p.empty() ? "" : ", ") + std::to_string(l) + ": " + per_layer[l];
    return p.empty() ? std::string("(all attention)") : p;
  };
  const auto student_params = [&](const std::vector<std::string>& per_layer) {
    auto s = teacher;
    zoo::replace_layers(s, cfg, per_layer, {});
    return s.param_count();
  };
  for (std::size_t k = 0; k < result.attempts.size(); ++k) {
    const auto& a = result.attempts[k];
    Point pt{.source = "planner run " + std::to_string(k + 1), .drop = a.measured, .cost_ratio = a.choice.cost / all_attention};
    for (std::size_t l = 0; l < a.choice.option.size(); ++l) pt.per_layer.push_back(problem.layers[l][a.choice.option[l]].mixer);
    pt.plan = describe(pt.per_layer);
    points.push_back(pt);
  }
  // The study's fixed plans (one mixer in the sparsest / densest / random g layers): their mean
  // measured drop over the study's seeds and their cost under the same objective; only when the
  // study distilled them from this teacher the way the planner does (dense).
  std::map<std::pair<std::string, std::string>, std::vector<double>> fixed;
  std::map<std::pair<std::string, std::string>, std::vector<index_t>> fixed_layers;
  const bool fixed_comparable = study_of_this_teacher && !halting_opts;
  for (const auto& dir : fixed_comparable ? study_dirs : std::vector<std::string>{})
    for (const auto& e : fs::directory_iterator(fs::path(dir) / "runs")) {
      const std::string name = e.path().filename().string();
      if (name.rfind("group-", 0) != 0 || e.path().extension() != ".json") continue;
      const json r = read_json(e.path(), "--study");
      std::string plan = r.at("plan");
      if (plan.rfind("random:", 0) == 0) plan = plan.substr(0, plan.rfind(':'));  // random draws pooled per g
      const std::pair<std::string, std::string> key{r.at("mixer").get<std::string>(), plan};
      fixed[key].push_back(r.at("drop_stage2"));
      fixed_layers.emplace(key, r.at("layers").get<std::vector<index_t>>());  // a random group: its first draw's layers
    }
  const std::size_t first_fixed = points.size();
  for (const auto& [key, drops] : fixed) {
    const auto& layers = fixed_layers[key];
    Point pt{.source = "study " + key.first + " " + key.second, .drop = analysis::mean(drops), .n = drops.size()};
    pt.per_layer.assign(std::size_t(cfg.depth), distill::kKeepAttention);
    for (index_t l : layers) pt.per_layer[std::size_t(l)] = key.first;
    for (std::size_t l = 0; l < depth; ++l) pt.cost_ratio += layer_cost(l, pt.per_layer[l]) / all_attention;
    pt.plan = describe(pt.per_layer);
    points.push_back(pt);
  }
  // Interleaved rounds (teacher, every student, again ...) so that drift on a shared machine
  // falls on all of them; each figure is the median of its rounds' medians.
  constexpr int kRounds = 3;
  const int per_round = std::max(1, latency_reps / kRounds);
  say("timing " + std::to_string(points.size() + 1) + " students end to end (batch " + std::to_string(kE2eBatch) +
      ", " + std::to_string(kRounds) + " interleaved rounds of " + std::to_string(per_round) + ")");
  const std::vector<std::string> all_attention_plan(std::size_t(cfg.depth), distill::kKeepAttention);
  std::vector<std::vector<double>> rounds(points.size() + 1);
  for (int r = 0; r < kRounds; ++r) {
    rounds[0].push_back(student_forward_ms(teacher, cfg, all_attention_plan, per_round));
    for (std::size_t k = 0; k < points.size(); ++k)
      rounds[k + 1].push_back(student_forward_ms(teacher, cfg, points[k].per_layer, per_round));
  }
  const double teacher_ms = analysis::percentile(rounds[0], 0.5);
  for (std::size_t k = 0; k < points.size(); ++k) {
    points[k].params = student_params(points[k].per_layer);
    points[k].forward_ms = analysis::percentile(rounds[k + 1], 0.5);
  }
  // Pareto front over (drop, forward latency, parameters): no other student is at least as good
  // in all three and better in one.
  for (auto& p : points) {
    p.pareto = std::none_of(points.begin(), points.end(), [&](const Point& q) {
      return q.drop <= p.drop && q.forward_ms <= p.forward_ms && q.params <= p.params &&
             (q.drop < p.drop || q.forward_ms < p.forward_ms || q.params < p.params);
    });
  }

  json attempts = json::array(), fixed_json = json::array();
  std::ostringstream md;
  md << "# Replacement plan\n\nTeacher `" << checkpoint << "`, accuracy " << teacher_acc << " on " << test_set.count
     << " test images. Budget " << budget << " (drop), objective " << objective
     << (objective == "params" ? std::string() : " per sequence of " + std::to_string(tokens) + " tokens")
     << (objective == "latency" ? " (forward, " + std::to_string(kLatencyBatch) + " sequences, measured on " +
                                      analysis::machine_name() + ")"
                                : std::string())
     << ". Protocol and budget per stage: the study's (" << sc.stage1_steps << " + " << sc.stage2_steps
     << " steps, batch " << sc.batch << ").\n\n";
  if (halting_opts) {
    md << "**Halting teacher**: it keeps";
    for (std::size_t l = 0; l < depth; ++l) md << " " << keep[l];
    md << " of the tokens per layer (on the test images); each layer's costs are taken at round(keep · " << tokens
       << ") tokens (";
    for (std::size_t l = 0; l < depth; ++l) md << (l ? ", " : "") << layer_tokens[l];
    md << "). Students are distilled with guided distillation (stage 1 on the tokens the teacher keeps, MSE; stage 2 "
          "with the halting distillation loss) and measured with their own halting. The end-to-end forward below is "
          "the dense pipeline (halting off): untrained mixers would halt differently from the distilled ones.\n\n";
  }
  if (!fixed_comparable)
    md << "The study's fixed plans are not listed: " << (study_of_this_teacher ? "they were distilled without halting"
                                                                               : "they are students of " + sc.checkpoint)
       << ".\n\n";
  {
    std::size_t from_sweep = 0;
    for (const auto& [key, by] : predicted_by) from_sweep += by == "sweep";
    md << "### Predictions\n\nSingle-layer drops measured by `" << study_dir << "` (" << cells.size()
       << " (layer, mixer) cells, mean over seeds)" << (probe_cells.empty() ? "" : " and the probes below")
       << ", fitted by d(l, m) = s_m · e_l (predictor.json). " << from_sweep << " of " << predicted_by.size()
       << " predictions are the sweep's means, the rest the model's (`--predictions " << predictions
       << "`). Residual σ " << drop_model.sigma() << " over " << drop_model.cells() << " cells. Mixer scales:";
    for (const auto& m : mixers) md << " " << m << " " << drop_model.scale(m) << ";";
    md << " layer effects:";
    for (std::size_t l = 0; l < depth; ++l) md << " " << drop_model.layer_effect(l) << (drop_model.layer_measured(l) ? "" : "*");
    md << " (* from the layer feature " << layer_feature << ").\n\n";
    if (!probe_cells.empty()) {
      md << "Probes (single-layer students of mixers the sweep did not measure):";
      for (const auto& c : probe_cells) md << " " << c.mixer << " in layer " << c.layer << ": " << c.drop << ";";
      md << "\n\n";
    }
    md << "Validation on the sweep's cells (each refit without what it predicts):\n\n"
       << "| held out | cases | MAE | baseline MAE (baseline) | Spearman ρ (baseline's) | 95% interval coverage |\n"
       << "|---|---|---|---|---|---|\n";
    for (const auto* v : {&v_cell, &v_mixer, &v_layer})
      if (!v->cases.empty())
        md << "| " << v->scheme << " | " << v->cases.size() << " | " << v->mae << " | " << v->baseline_mae << " ("
           << v->baseline << ") | " << v->spearman << " (" << v->baseline_spearman << ") | " << v->coverage95 << " |\n";
    md << "\n";
  }
  md << "| run | plan (layer: mixer) | predicted drop (scale) | measured drop"
     << (seeds_per_run > 1 ? " (mean of " + std::to_string(seeds_per_run) + " seeds)" : std::string())
     << " | cost / all-attention cost |\n|---|---|---|---|---|\n";
  for (std::size_t k = 0; k < result.attempts.size(); ++k) {
    const auto& a = result.attempts[k];
    const auto& pt = points[k];
    md << "| " << k + 1 << " | " << pt.plan << " | " << a.choice.drop << " (" << a.scale << ") | " << a.measured
       << " | " << pt.cost_ratio << " |\n";
    attempts.push_back({{"plan", pt.plan}, {"mixer_per_layer", pt.per_layer}, {"predicted_drop", a.choice.drop},
                        {"scale", a.scale}, {"measured_drop", a.measured}, {"cost", a.choice.cost},
                        {"cost_ratio", pt.cost_ratio}, {"params", pt.params}, {"forward_ms", pt.forward_ms},
                        {"pareto", pt.pareto}});
  }
  md << "\n**" << (result.met ? "Met" : "Not met") << "**: the chosen plan (run " << result.chosen + 1
     << (result.met ? ", the cheapest that met the budget" : ", the last") << ") measured a drop of "
     << result.answer().measured << (result.met ? ", within" : ", over") << " the budget " << budget << "; "
     << result.attempts.size() << " measured run(s)" << (stop_at_first ? " (--stop-at-first)" : "") << ".\n";
  json replicates = json::array();
  if (replicate_seeds > 0) {
    const double n = double(replicate_drops.size());
    double mean = 0, ss = 0;
    int within = 0;
    for (double d : replicate_drops) {
      mean += d / n;
      within += distill::within_budget(d, budget);
    }
    for (double d : replicate_drops) ss += (d - mean) * (d - mean);
    const double sd = std::sqrt(ss / (n - 1));
    md << "\n### Seed replicates of the chosen plan\n\nThe chosen plan distilled with " << replicate_drops.size()
       << " training seeds (the study's seed " << sc.seed << ", then + 1000 k; the new mixers' initialisation and the "
       << "data order): drops";
    for (std::size_t k = 0; k < replicate_drops.size(); ++k) {
      md << (k ? ", " : " ") << replicate_drops[k];
      replicates.push_back({{"seed", sc.seed + 1000u * std::uint64_t(k)}, {"drop", replicate_drops[k]}});
    }
    md << "; mean " << mean << ", standard deviation " << sd << "; within the budget in " << within << " of "
       << replicate_drops.size() << ".\n";
  }

  double best_fixed = NAN, best_fixed_ms = NAN;
  std::string best_fixed_name;
  for (std::size_t k = first_fixed; k < points.size(); ++k) {
    const auto& pt = points[k];
    const bool within = distill::within_budget(pt.drop, budget);
    if (within && !(pt.cost_ratio >= best_fixed)) {
      best_fixed = pt.cost_ratio;
      best_fixed_ms = pt.forward_ms;
      best_fixed_name = pt.source.substr(6);
    }
    fixed_json.push_back({{"plan", pt.source.substr(6)}, {"layers", pt.plan}, {"mean_drop", pt.drop}, {"n", pt.n},
                          {"cost_ratio", pt.cost_ratio}, {"params", pt.params}, {"forward_ms", pt.forward_ms},
                          {"pareto", pt.pareto}});
  }
  md << "\n### Every student side by side\n\nThe planner's runs (one seed each) and the study's fixed plans (mean "
        "stage-2 drop over the study's seeds, n). Parameters of the whole student; forward: end-to-end latency of "
     << kE2eBatch << " images at " << cfg.tokens() << " tokens on " << analysis::machine_name() << ", measured in this run in "
     << kRounds << " interleaved rounds (teacher, every student, again), the median of the rounds' medians of "
     << per_round << " (the teacher: " << teacher_ms
     << " ms); Pareto: on the front of (drop, forward latency, parameters).\n\n"
     << "| student | plan (layer: mixer) | drop (n) | within budget | cost / all-attention | params | forward ms | Pareto |\n"
     << "|---|---|---|---|---|---|---|---|\n";
  for (const auto& pt : points)
    md << "| " << pt.source << " | " << pt.plan << " | " << pt.drop << " (" << pt.n << ") | "
       << (distill::within_budget(pt.drop, budget) ? "yes" : "no") << " | " << pt.cost_ratio << " | " << pt.params << " | " << pt.forward_ms
       << " | " << (pt.pareto ? "yes" : "") << " |\n";
  const auto& mine = points[result.chosen];
  if (first_fixed < points.size())
    md << "\nCheapest fixed plan within the budget: "
       << (best_fixed_name.empty() ? std::string("none")
                                   : best_fixed_name + ", cost " + std::to_string(best_fixed) + ", forward " +
                                         std::to_string(best_fixed_ms) + " ms")
       << "; the planner's " << (result.met ? "" : "(not met) ") << "plan: cost " << mine.cost_ratio << ", forward "
       << mine.forward_ms << " ms.\n";
  io::write_file_atomic(out / "report.md", md.str());
  io::write_file_atomic(out / "result.json", json{{"teacher_accuracy", teacher_acc}, {"budget", budget},
                                                  {"objective", objective}, {"tokens", tokens}, {"met", result.met},
                                                  {"chosen_run", result.chosen + 1},
                                                  {"machine", analysis::machine_name()}, {"teacher_forward_ms", teacher_ms},
                                                  {"attempts", attempts}, {"mixers", final_mixers},
                                                  {"fixed_plans", fixed_json}, {"best_fixed_cost_ratio", best_fixed},
                                                  {"predictor", predictor}, {"halting", bool(halting_opts)},
                                                  {"keep_per_layer", keep}, {"layer_tokens", layer_tokens},
                                                  {"replicates", replicates}, {"seeds_per_run", seeds_per_run}}
                                                .dump(2) + "\n");
  std::printf("%s: %zu run(s), chosen run %zu: drop %.4f (budget %.4f), cost %.3f of all-attention\n",
              result.met ? "met" : "not met", result.attempts.size(), result.chosen + 1, result.answer().measured, budget,
              final_plan.cost / all_attention);
  return result.met ? 0 : 3;
} catch (const std::exception& e) {
  std::fprintf(stderr, "plan_replacement: error: %s\n", e.what());
  return 1;
}
