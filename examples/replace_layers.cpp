// replace_layers: replaces attention layers of a trained ViT with a sequential mixer by
// layer-wise distillation, and reports what it cost.
//
//   replace_layers --checkpoint models/vit-fmnist.safetensors --mixer min_gru --plan sparsest:2 \
//                  --stage1-steps 300 --stage2-steps 300 --out results/replace/min_gru-sparsest2
//
// Writes <out>/result.json (everything below), <out>/layers.csv (one row per replaced layer)
// and <out>/student.safetensors. The plan's ranking comes from the teacher's sparsity profile
// (S_ent, on --profile-images test images) unless the plan names layers itself.
//
// Data parallel under mpirun/srun (built with MPI): both stages run each global batch
// (--batch) split over the ranks with all-reduced gradients; rank 0 alone prints and writes.
//
// --device cuda distils on the GPU: the binary replace_layers_cuda (this file compiled with
// SEQSWAP_DEVICE_DRIVER and linked with the device ops that nvcc compiles; built when nvcc is found). The teacher and the student go to the device once; both stages,
// the stage-1 layer losses and the evaluations run there (each batch uploaded; only logits,
// per-row losses and the logits' gradient cross back); the student comes back for its files.
// The sparsity profile that ranks the layers stays on the host.
#include <CLI/CLI.hpp>

#include "data.hpp"
#include "flags.hpp"
#include "ranks.hpp"
#include <cstdio>
#include <fstream>
#include <sstream>

#include "seqswap/analysis/profile.hpp"
#include "seqswap/distill/stages.hpp"
#include "seqswap/zoo/student.hpp"
#include "zoo_instances.hpp"  // with SEQSWAP_ZOO_EXTERN: the mixers' code compiled once for all drivers
#include "seqswap/io/atomic_file.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  const Ranks launch(&argc, &argv);
  const bool writer = !launch.comm() || launch.comm()->rank() == 0;
  CLI::App app{"Replace attention layers of a ViT with a sequential mixer (layer-wise distillation)"};
  std::string checkpoint, out_dir, plan_spec = "sparsest:2", mixer_options = "{}";
  DataFlags data;
  zoo::ReplaceOptions rep;
  distill::Stage1Options s1;
  distill::Stage2Options s2;
  index_t profile_images = 500, test_limit = 0, train_limit = 0, batch = 64;
  std::uint64_t seed = 0;
  bool quiet = false;
  flags::DeviceFlags dev;
  app.add_option("--checkpoint", checkpoint, "teacher checkpoint (safetensors)")->required();
  app.add_option("--mixer", rep.mixer, "replacement mixer: " + zoo::detail::join(zoo::mixer_names()));
  app.add_option("--mixer-options", mixer_options, "mixer options as a JSON object, e.g. '{\"expand\": 2}'");
  app.add_option("--plan", plan_spec, "sparsest:g | densest:g | random:g:seed | layers:i,j | single:l | "
                 "file:PLAN.json (a mixer per layer, as the planner writes it; --mixer is then unused)");
  app.add_option("--stage1-steps", s1.steps, "stage-1 optimizer steps (the budget)")->check(flags::FiniteNonNegative);
  app.add_option("--stage2-steps", s2.steps, "stage-2 optimizer steps (the budget)")->check(flags::FiniteNonNegative);
  app.add_option("--batch", batch, "batch size of both stages")->check(flags::FinitePositive);
  app.add_option("--lr1", s1.lr, "stage-1 peak learning rate")->check(flags::FinitePositive);
  app.add_option("--lr2", s2.lr, "stage-2 peak learning rate")->check(flags::FinitePositive);
  app.add_option("--kl", s2.kl_weight, "stage-2 weight of KL(teacher || student) on logits")->check(flags::FiniteNonNegative);
  app.add_option("--temperature", s2.temperature, "stage-2 KL temperature")->check(flags::FinitePositive);
  app.add_option("--stage1-ce", s1.ce_weight, "stage-1 weight of CE on the student's logits")->check(flags::FiniteNonNegative);
  app.add_flag("--cosine", [&](std::int64_t) { s1.loss = distill::MatchLoss::cosine; },
               "stage 1 matches with 1 - cosine instead of MSE");
  app.add_flag("--after-projection", s1.after_projection, "stage 1 matches after the output projection");
  app.add_flag("--fresh-projection", [&](std::int64_t) { rep.reuse_projection = false; },
               "initialise the new mixers' output projection instead of reusing the teacher's");
  app.add_option("--profile-images", profile_images, "test images for the sparsity ranking")->check(flags::FiniteNonNegative);
  app.add_option("--train-limit", train_limit, "use only the first N training images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--test-limit", test_limit, "evaluate on the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  data.add(app);
  app.add_option("--seed", seed, "seed of the new mixers, shuffling and random plans");
  app.add_option("--out", out_dir, "output folder")->required();
  app.add_flag("--quiet", quiet, "no progress lines");
  dev.add(app, "replace_layers", "distil");
  CLI11_PARSE(app, argc, argv);
  dev.validate("replace_layers", launch.comm() ? launch.comm()->size() : 1);
#if defined(SEQSWAP_DEVICE_DRIVER)
  // The CUDA build distils on the device only: compiling the host stages as well would double
  // its (nvcc) compile time for what the CPU build already does.
  check(dev.device == "cuda", "--device cpu: replace_layers_cuda distils on the GPU only; pass --device cuda, or run "
        "the CPU build replace_layers");
#endif
  if (!writer) quiet = true;
  // Every output is checked before the stages run, not after both.
  for (const char* f : {"result.json", "layers.csv", "student.safetensors"})
    io::check_writable(std::filesystem::path(out_dir) / f, "--out");
  try {
    rep.mixer_options = nlohmann::json::parse(mixer_options);
  } catch (const nlohmann::json::exception& e) {
    fail("--mixer-options: expected a JSON object, found '", mixer_options, "' (", e.what(), ")");
  }
  rep.seed = seed;
  s1.batch = s2.batch = batch;
  s1.seed = seed + 1;
  s2.seed = seed + 2;
  s1.comm = s2.comm = launch.comm();

  model::VitConfig cfg;
  auto teacher = model::load_vit<float, zoo::AnyMixer<float>>(checkpoint, &cfg);
  auto train_set = data.load(io::Split::train, cfg);
  auto test_set = data.load(io::Split::test, cfg);
  check_classes(train_set, cfg);
  if (train_limit > 0) train_set = train_set.head(train_limit);
  if (test_limit > 0) test_set = test_set.head(test_limit);

  // Sparsity ranking (only plans that rank need it).
  std::vector<double> scores;
  const bool ranked = plan_spec.rfind("sparsest", 0) == 0 || plan_spec.rfind("densest", 0) == 0;
  if (ranked) {
    const auto profile = analysis::profile_model(teacher, cfg, test_set.head(profile_images), 250);
    scores = analysis::layer_scores(profile);
  }
  // A plan file names a mixer per layer; every other plan one mixer (--mixer) for its layers.
  std::vector<std::string> per_layer(std::size_t(cfg.depth), rep.mixer);
  const bool from_file = plan_spec.rfind("file:", 0) == 0;
  if (from_file) {
    const std::string path = plan_spec.substr(5);
    check(std::filesystem::is_regular_file(path), "--plan ", plan_spec, ": expected a plan file, found none at '",
          path, "'");
    nlohmann::json pj;
    try {
      pj = nlohmann::json::parse(std::ifstream(path));
    } catch (const nlohmann::json::exception& e) {
      fail("--plan ", plan_spec, ": expected a JSON plan file, found invalid JSON (", e.what(), ")");
    }
    per_layer = distill::read_plan_json(pj, cfg.depth, zoo::mixer_names(), path);
  }
  auto student = teacher;
  const auto plan = from_file ? zoo::replace_layers(student, cfg, per_layer, rep, plan_spec)
                              : distill::parse_plan(plan_spec, cfg.depth, scores);
  std::ostringstream layers_str;
  for (index_t l : plan.layers)
    layers_str << (layers_str.tellp() ? "," : "") << l << (from_file ? ":" + per_layer[std::size_t(l)] : "");
  if (writer) std::fprintf(stderr, "plan %s -> layers %s%s\n", plan_spec.c_str(), layers_str.str().c_str(),
               from_file ? "" : (", mixer " + rep.mixer).c_str());

  if (!from_file) zoo::replace_layers(student, cfg, plan, rep);
  io::Progress p1("stage1", s1.steps, 10.0, quiet), p2("stage2", s2.steps, 10.0, quiet);
  const auto layer_test = test_set.head(std::min<index_t>(test_set.count, 1000));
  // The teacher's accuracy, both stages, the layer losses after stage 1 and the evaluations, on
  // the host models (the CPU build) or on their device copies (the CUDA build).
  train::EvalResult teacher_eval, eval1, eval2;
  distill::StageResult r1, r2;
  std::vector<double> mse;
  const auto run = [&](auto& t, auto& st) {
    // Each rank evaluates a share of the test batches (the whole set on one process).
    teacher_eval = train::evaluate_split(t, test_set, launch.comm());
    r1 = distill::stage1(t, st, plan, train_set, s1, &p1);
    mse = distill::layer_losses(t, st, plan, layer_test, 250, s1);
    eval1 = train::evaluate_split(st, test_set, launch.comm());
    r2 = distill::stage2(t, st, train_set, s2, &p2);
    eval2 = train::evaluate_split(st, test_set, launch.comm());
  };
#if !defined(SEQSWAP_DEVICE_DRIVER)
  run(teacher, student);
#else
  {
    // Both models go to the device once (weights and AdamW moments); the student comes back.
    using DevBuf = Buffer<float, backend::Cuda>;
    model::Model<decltype(teacher)::NetType, backend::Cuda> dteacher(teacher.net()), dstudent(student.net());
    for (auto [h, d] : {std::pair{&teacher, &dteacher}, std::pair{&student, &dstudent}}) {
      DevBuf::upload_to(h->params().data, d->params().data, h->param_count());
      DevBuf::upload_to(h->adam_m().data(), d->adam_m().data(), h->param_count());
      DevBuf::upload_to(h->adam_v().data(), d->adam_v().data(), h->param_count());
    }
    ops::device::set_tf32(dev.tf32);
    if (writer)
      std::fprintf(stderr, "distilling on the CUDA device%s\n", dev.tf32 ? " (linear maps on TF32 tensor cores)" : "");
    run(dteacher, dstudent);
    DevBuf::download_from(dstudent.params().data, student.params().data, student.param_count());
  }
#endif

  nlohmann::json j;
  j["checkpoint"] = checkpoint;
  j["mixer"] = from_file ? "per-layer" : rep.mixer;
  if (from_file) j["mixer_per_layer"] = per_layer;
  j["mixer_options"] = rep.mixer_options;
  j["plan"] = plan_spec;
  j["layers"] = plan.layers;
  j["scores"] = scores;
  j["test_images"] = teacher_eval.count;
  j["teacher_accuracy"] = teacher_eval.accuracy;
  j["stage1"] = {{"steps", r1.steps}, {"seconds", r1.seconds}, {"accuracy", eval1.accuracy},
                 {"final_loss", r1.final_loss}, {"layer_loss", mse}};
  j["stage2"] = {{"steps", r2.steps}, {"seconds", r2.seconds}, {"accuracy", eval2.accuracy},
                 {"final_loss", r2.final_loss}};
  j["drop_stage1"] = teacher_eval.accuracy - eval1.accuracy;
  j["drop_stage2"] = teacher_eval.accuracy - eval2.accuracy;
  j["params_teacher"] = teacher.param_count();
  j["params_student"] = student.param_count();
  j["options"] = {{"batch", batch}, {"lr1", s1.lr}, {"lr2", s2.lr}, {"kl", s2.kl_weight},
                  {"seed", seed}, {"train_images", train_set.count}};
  if (!writer) return 0;
  const std::filesystem::path dir(out_dir);
  io::write_file_atomic(dir / "result.json", j.dump(2) + "\n");
  std::ostringstream csv;
  csv << "layer,mixer,score,layer_loss,params_teacher_layer,params_student_layer\n";
  for (std::size_t k = 0; k < plan.layers.size(); ++k) {
    const index_t l = plan.layers[k];
    csv << l << ',' << per_layer[std::size_t(l)] << ',' << (scores.empty() ? 0.0 : scores[std::size_t(l)]) << ',' << mse[k] << ','
        << distill::mixer_params(teacher, l) << ',' << distill::mixer_params(student, l) << '\n';
  }
  io::write_file_atomic(dir / "layers.csv", csv.str());
  std::vector<std::string> described(std::size_t(cfg.depth), distill::kKeepAttention);  // evaluate rebuilds it from this
  for (index_t l : plan.layers) described[std::size_t(l)] = per_layer[std::size_t(l)];
  io::save_checkpoint(dir / "student.safetensors", student, cfg, zoo::student_metadata(described, rep.mixer_options));
  std::printf("teacher %.4f  stage1 %.4f  stage2 %.4f  drop %.4f  params %zu -> %zu\n", teacher_eval.accuracy,
              eval1.accuracy, eval2.accuracy, teacher_eval.accuracy - eval2.accuracy, teacher.param_count(),
              student.param_count());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "replace_layers: error: %s\n", e.what());
  return 1;
}
