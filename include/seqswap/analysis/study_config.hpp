// The study's configuration (examples/sparsity_to_simplicity, analysis/study_report.hpp):
// presets, JSON in and out, read strictly (unknown keys, wrong types, fractions for integers and
// bad array entries are errors naming the key). Its own header so that the fuzz harness for
// configs reads it too.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/io/dataset.hpp"

namespace seqswap::analysis::study {

using nlohmann::json;

struct StudyConfig {
  std::string preset = "quick";
  std::string checkpoint = "models/vit-fmnist.safetensors";
  std::string data_dir = seqswap::io::default_fashion_mnist_dir;
  std::string sweep_mixer = "min_gru";
  std::vector<std::string> mixers{"min_gru", "linear_attention", "selective_ssm"};
  std::vector<index_t> group_sizes{};  // empty = a quarter and a half of the depth
  int random_seeds = 3;
  long stage1_steps = 40, stage2_steps = 40;
  index_t batch = 32;
  double lr1 = 1e-3, lr2 = 2e-4;
  index_t profile_images = 1000, train_images = 0, test_images = 1000;
  std::vector<index_t> latency_tokens{50, 197, 1024};
  index_t latency_batch = 8;
  int latency_reps = 5;
  std::uint64_t seed = 0;
  // Stage-1 protocol (docs/method.md): "free" = free-running, w_mse · layer MSE + w_ce · CE (FAR's
  // code); "forced" = teacher-forced layer MSE (+ w_ce · CE when > 0).
  std::string protocol = "free";
  double stage1_mse_weight = 1.0, stage1_ce_weight = 1.0;
  // Training seeds (data order and mixer initialisation) per sparsest/densest group cell; the
  // single-layer sweep per mixer of sweep_mixers (empty = sweep_mixer) with sweep_seeds each.
  int seeds = 1;
  std::vector<std::string> sweep_mixers{};
  int sweep_seeds = 1;
  // > 0: the sparsest/densest cells of long_budget_mixers again at this many steps per stage,
  // long_budget_seeds seeds each (does the ordering change with the budget?).
  long long_budget_steps = 0;
  std::vector<std::string> long_budget_mixers{};
  int long_budget_seeds = 3;
  // The causal test (docs/method.md): layer l's query weights scaled by α (sharper: α > 1,
  // flatter: α < 1, base: 1), the rest fine-tuned briefly with that qkv frozen, then layer l
  // replaced by each causal mixer, causal_seeds seeds each. Off while causal_mixers is empty;
  // causal_layers empty = the sparsest, the middle and the densest layer by S_ent.
  std::vector<std::string> causal_mixers{};
  std::vector<index_t> causal_layers{};
  int causal_seeds = 3;
  double causal_alpha_sharp = 3.0, causal_alpha_flat = 0.3;
  long causal_finetune_steps = 300;
  double causal_lr = 1e-4;
  // Stage 4: A-ViT teachers (made by avit_finetune; see models/README.md) and the mixers
  // distilled from each with sparsity guidance; halting_group layers (the dense teacher's
  // sparsest) are replaced, 0 = half the depth.
  std::vector<std::string> halting_teachers{"models/avit-b30.safetensors", "models/avit-b10.safetensors",
                                            "models/avit-b0-mild.safetensors", "models/avit-b0.safetensors"};
  std::vector<std::string> halting_mixers{"min_gru", "selective_ssm"};
  index_t halting_group = 0;
  // Seeds per guided run (teacher, mixer), and dense checkpoints (no halting) matched in
  // accuracy to the halting teachers: they go through the same guided pipeline with halting
  // off, so that "sparser" and "less accurate" separate (claim 3, docs/method.md).
  int halting_seeds = 1;
  std::vector<std::string> dense_teachers{};
};

// JSON in and out, one field list (every key of StudyConfig).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(
    StudyConfig, preset, checkpoint, data_dir, sweep_mixer, mixers, group_sizes, random_seeds, stage1_steps,
    stage2_steps, batch, lr1, lr2, profile_images, train_images, test_images, latency_tokens, latency_batch,
    latency_reps, seed, halting_teachers, halting_mixers, halting_group, protocol, stage1_mse_weight,
    stage1_ce_weight, seeds, sweep_mixers, sweep_seeds, long_budget_steps, long_budget_mixers,
    long_budget_seeds, causal_mixers, causal_layers, causal_seeds, causal_alpha_sharp, causal_alpha_flat,
    causal_finetune_steps, causal_lr, halting_seeds, dense_teachers)

// Reads the keys of `j` into c; an unknown key or a wrong type is an error.
inline void apply_json(StudyConfig& c, const json& j, const std::string& where) {
  check(j.is_object(), where, ": expected a JSON object, found ", j.dump());
  json cur = c;
  for (const auto& [k, v] : j.items()) {
    check(cur.contains(k), where, ": unknown key '", k, "'; known: ", [&] {
      std::string s;
      for (const auto& [kk, _] : cur.items()) s += (s.empty() ? "" : ", ") + kk;
      return s;
    }());
    check(v.type() == cur[k].type() || (v.is_number() && cur[k].is_number()), where, ": key '", k,
          "' expects ", cur[k].type_name(), ", found ", v.type_name(), " (", v.dump(), ")");
    // Integers stay integers (no silent 2.9 -> 2, no undefined 1e40 -> long).
    // Whole and within int's range (every integer key is an int or a size).
    const auto whole = [](const json& x) {
      if (x.is_number_unsigned()) return x.get<std::uint64_t>() <= 2147483647u;
      if (x.is_number_integer()) return std::abs(x.get<std::int64_t>()) <= 2147483647;
      return x.is_number_float() && std::isfinite(x.get<double>()) && x.get<double>() == std::floor(x.get<double>()) &&
             std::abs(x.get<double>()) <= 2147483647.0;
    };
    if (cur[k].is_number_integer())
      check(whole(v), where, ": key '", k, "' expects a whole number, found ", v.dump());
    if (cur[k].is_array()) {
      const bool strings = k == "mixers" || k == "halting_teachers" || k == "halting_mixers" || k == "sweep_mixers" ||
                           k == "long_budget_mixers" || k == "causal_mixers" || k == "dense_teachers";
      for (const auto& e : v)
        check(strings ? e.is_string() : whole(e), where, ": key '", k, "' expects an array of ",
              strings ? "strings" : "whole numbers", ", found ", e.dump(), " in ", v.dump());
    }
    cur[k] = v;
  }
  c = cur.get<StudyConfig>();
  check(c.protocol == "free" || c.protocol == "forced", where, ": key 'protocol' expects \"free\" or \"forced\", found \"",
        c.protocol, "\"");
  check(std::isfinite(c.causal_alpha_sharp) && std::isfinite(c.causal_alpha_flat) && c.causal_alpha_flat > 0 &&
            c.causal_alpha_flat < 1 && c.causal_alpha_sharp > 1,
        where, ": expected 0 < causal_alpha_flat < 1 < causal_alpha_sharp, found ", c.causal_alpha_flat, " and ",
        c.causal_alpha_sharp);
  check(std::isfinite(c.causal_lr) && c.causal_lr > 0, where, ": expected causal_lr > 0, found ", c.causal_lr);
  check(c.halting_seeds >= 1, where, ": expected halting_seeds >= 1, found ", c.halting_seeds);
}

// What a folder made before a key existed was run with (absent keys take these values when a
// folder's config is compared with the current one).
inline json legacy_values() { return json{{"protocol", "forced"}, {"stage1_ce_weight", 0.0}}; }

inline StudyConfig preset(const std::string& name) {
  StudyConfig c;
  c.preset = name;
  if (name == "quick") {  // make experiment: every stage in <= 10 minutes on 2 cores
    c.random_seeds = 1;
    c.halting_mixers = {"min_gru"};
    return c;
  }
  if (name == "micro") {  // the smoke test: every stage, every file, in seconds
    c.mixers = {"min_gru"};
    c.halting_mixers = {"min_gru"};
    c.halting_teachers = {"models/avit-b0.safetensors"};
    c.random_seeds = 1;
    c.seeds = 2;  // exercises the intervals
    c.causal_mixers = {"min_gru"};
    c.causal_layers = {6};
    c.causal_seeds = 1;
    c.causal_finetune_steps = 3;
    c.halting_seeds = 2;  // exercises the matched comparison's intervals (with --dense-teachers)
    c.stage1_steps = c.stage2_steps = 3;
    c.batch = 16;
    c.profile_images = 64;
    c.train_images = 256;
    c.test_images = 128;
    c.latency_tokens = {50, 197};
    c.latency_batch = 2;
    c.latency_reps = 2;
    return c;
  }
  if (name == "full") {
    c.stage1_steps = c.stage2_steps = 300;
    c.batch = 32;
    c.lr1 = 1e-3;
    c.lr2 = 1e-4;
    c.profile_images = 2000;
    c.test_images = 0;
    c.latency_reps = 9;
    return c;
  }
  if (name == "paper") {  // issue 15's protocol: seeds, four mixers, two sweeps, a longer budget
    c = preset("full");
    c.preset = name;
    c.mixers = {"multi_head_lstm", "min_gru", "selective_ssm", "linear_attention"};
    c.seeds = 5;
    c.random_seeds = 5;
    c.sweep_mixers = {"min_gru", "multi_head_lstm"};
    c.sweep_seeds = 3;
    c.long_budget_steps = 1500;
    c.long_budget_mixers = {"min_gru"};
    c.long_budget_seeds = 3;
    c.causal_mixers = {"min_gru", "multi_head_lstm"};
    // Claim 3: three seeds per guided run, and dense teachers near the halting teachers'
    // accuracies: epochs 6, 9 and 13 of the seed-1 teacher run (models/README.md).
    c.halting_seeds = 3;
    c.dense_teachers = {"models/training/vit-fmnist-s1-phase1-epoch6.safetensors",
                        "models/training/vit-fmnist-s1-phase1-epoch9.safetensors",
                        "models/training/vit-fmnist-s1-phase1-epoch13.safetensors"};
    return c;
  }
  fail("--preset: expected quick, full, paper or micro, found '", name, "'");
}

}  // namespace seqswap::analysis::study
