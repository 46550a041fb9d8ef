// hybrid_vit: a hybrid student declared as a type — attention in blocks 0-3, minGRU in 4-5, a
// selective SSM in 6-7 — distilled from the shipped teacher, evaluated and costed beside it.
//   hybrid_vit [--checkpoint models/vit-fmnist.safetensors] [--stage1-steps 300] [--stage2-steps 300]
// No mixer is chosen by a string: the student's type says which mixer sits where.
#include <CLI/CLI.hpp>

#include "flags.hpp"
#include <cstdio>

#include "seqswap/analysis/cost.hpp"
#include "seqswap/distill/stages.hpp"
#include "seqswap/mixers/min_gru.hpp"
#include "seqswap/mixers/ssm_selective.hpp"
#include "seqswap/model/vit_checkpoint.hpp"

using namespace seqswap;
using model::Layers;

using Attention = attention::SoftmaxAttention<float>;
using Student = model::VitOf<float, Layers<Attention, 4>, Layers<mixers::MinGru<float>, 2>,
                             Layers<mixers::SelectiveSsm<float>, 2>>;

int main(int argc, char** argv) try {
  CLI::App app{"Distil a hybrid student, declared as a type, from a ViT teacher"};
  std::string checkpoint = "models/vit-fmnist.safetensors", data_dir = io::default_fashion_mnist_dir;
  distill::Stage1Options s1{.steps = 300, .ce_weight = 1.0, .free_running = true};  // FAR's protocol
  distill::Stage2Options s2{.steps = 300, .kl_weight = 1.0};
  index_t train_limit = 0, test_limit = 0;
  app.add_option("--checkpoint", checkpoint, "the teacher (depth 8)")->check(CLI::ExistingFile);
  app.add_option("--stage1-steps", s1.steps, "stage-1 optimizer steps")->check(flags::FiniteNonNegative);
  app.add_option("--stage2-steps", s2.steps, "stage-2 optimizer steps")->check(flags::FiniteNonNegative);
  app.add_option("--train-limit", train_limit, "use only the first N training images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--test-limit", test_limit, "evaluate on the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_flag("--free-running,!--teacher-forced", s1.free_running, "stage 1 protocol (default: free-running, MSE + CE)");
  app.add_option("--data-dir", data_dir, "folder with Fashion-MNIST's *-ubyte.gz files");
  CLI11_PARSE(app, argc, argv);

  model::VitConfig cfg;
  auto teacher = model::load_vit<float>(checkpoint, &cfg);
  model::Model<Student> student(model::make_vit<float, Layers<Attention, 4>, Layers<mixers::MinGru<float>, 2>,
                                                Layers<mixers::SelectiveSsm<float>, 2>>(cfg));
  student.init(1);
  const std::size_t inherited = model::inherit_params(student, teacher);  // blocks 0-3 and every attn.proj
  std::fprintf(stderr, "student: %zu of %zu tensors from the teacher\n", inherited, student.params_info().size());

  auto train_set = io::load_fashion_mnist(io::Split::train, data_dir);
  auto test_set = io::load_fashion_mnist(io::Split::test, data_dir);
  train_set.norm = test_set.norm = cfg.norm;  // as the teacher was trained
  if (train_limit > 0) train_set = train_set.head(train_limit);
  if (test_limit > 0) test_set = test_set.head(test_limit);
  const distill::Plan plan{.layers = {4, 5, 6, 7}};
  const auto r1 = distill::stage1(teacher, student, plan, train_set, s1);
  const auto err = distill::layer_errors(teacher, student, plan, test_set.head(500), 250);
  const auto r2 = distill::stage2(teacher, student, train_set, s2);
  std::fprintf(stderr, "stage 1: loss %.5f (%.0f s); stage 2: loss %.4f (%.0f s)\n", r1.final_loss, r1.seconds,
               r2.final_loss, r2.seconds);
  for (std::size_t k = 0; k < plan.layers.size(); ++k)
    std::fprintf(stderr, "block %d after stage 1: normalised error %.3f teacher-forced, %.3f free-running\n",
                 int(plan.layers[k]), err.nmse[k], err.nmse_free[k]);

  // Accuracy, parameters, FLOPs and forward latency (batch 64, median of 5) side by side.
  std::vector<float> images(std::size_t(64 * test_set.image_numel()), 0.1f);
  auto row = [&](const char* name, auto& m) {
    const double acc = train::evaluate(m, test_set).accuracy;
    const double ms = analysis::median_ms([&] { m.forward(images.data(), 64, test_set.image_numel()); }, 1, 5);
    std::printf("%-8s accuracy %.4f  params %7zu  MFLOP/image %6.2f  forward %.2f ms/batch of 64\n", name, acc,
                m.param_count(), analysis::vit_flops_per_image(m.net(), cfg) / 1e6, ms);
  };
  row("teacher", teacher);
  row("student", student);
  for (std::size_t l = 0; l < student.net().depth(); ++l)
    student.net().visit_mixer(l, [&](const auto& mixer, std::size_t) {
      std::printf("  block %zu: %s (%zu params)\n", l, mixer.kind_name(), mixer.param_count());
    });
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "hybrid_vit: error: %s\n", e.what());
  return 1;
}
