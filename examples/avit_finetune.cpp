// Fine-tune a ViT teacher into an A-ViT halting teacher (METHOD.md, "A-ViT token halting").
//   avit_finetune --checkpoint models/vit-fmnist.safetensors --out models/avit-b12.safetensors \
//       --beta 12 --ponder 5e-3 --steps 1500
// The halting options are stored in the checkpoint's metadata ("halting"), so evaluation and
// guided distillation run the teacher exactly as it was trained. Prints (and writes next to
// the checkpoint as JSON) the test accuracy, the keep ratio per layer and the forward time per
// image, packed, beside the dense teacher's.
//
// Data parallel under mpirun/srun (built with MPI): each rank takes its slice of every global
// batch (--batch), gradients are all-reduced, and rank 0 alone prints and writes. The halting
// losses are means over the slice, so their share-weighted sum is the global batch's mean.
//
// --device cuda fine-tunes on the GPU: the binary avit_finetune_cuda (this file compiled with
// SEQSWAP_DEVICE_DRIVER and linked with the device ops that nvcc compiles; built when nvcc is found). The model, its gradients, AdamW state and the halting blocks
// run on the device (the Halter's arithmetic on the host); the weights come back at the end,
// where evaluation and the files are done on the host as on the CPU.
#include <CLI/CLI.hpp>

#include "data.hpp"
#include "flags.hpp"
#include "ranks.hpp"
#include <cstdio>
#include <fstream>

#include "seqswap/model/halting_vit.hpp"
#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/checkpoint.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  const Ranks launch(&argc, &argv);
  const bool writer = !launch.comm() || launch.comm()->rank() == 0;
  CLI::App app{"Fine-tune a ViT into an A-ViT halting teacher"};
  std::string checkpoint = "models/vit-fmnist.safetensors", out;
  DataFlags data;
  halting::HaltingOptions ho;
  long steps = 1500;
  index_t batch = 64, test_limit = 0;
  double lr = 2e-4, min_lr = 1e-5, wd = 0.05;
  std::uint64_t seed = 0;
  bool quiet = false;
  flags::DeviceFlags dev;
  train::StepOptions step;
  io::Augment aug{.crop_padding = 2, .hflip = true};
  app.add_option("--checkpoint", checkpoint, "the dense teacher to start from")->check(CLI::ExistingFile);
  app.add_option("--out", out, "halting teacher checkpoint (safetensors)")->required();
  app.add_option("--gamma", ho.gamma, "γ: h = σ(γ t_0 - β)")->check(flags::FinitePositive);
  app.add_option("--beta", ho.beta, "β: h = σ(γ t_0 - β); smaller halts earlier")->check(flags::Finite);
  app.add_option("--eps", ho.eps, "ε: a token halts once its cumulative score reaches 1 - ε");
  app.add_option("--ponder", ho.ponder_weight, "α_p, weight of the ponder loss")->check(flags::FiniteNonNegative);
  app.add_option("--prior-weight", ho.prior_weight, "α_d, weight of the distribution prior")->check(flags::FiniteNonNegative);
  app.add_option("--prior-mean", ho.prior_mean, "target halting layer (0-based; < 0: 2/3 of depth)")->check(flags::Finite);
  app.add_option("--prior-std", ho.prior_std, "σ of the prior, in layers")->check(flags::FinitePositive);
  app.add_flag("--public-prior-bug", ho.public_prior_bug, "reproduce the public A-ViT code's prior (batch-index bug)");
  app.add_option("--steps", steps, "optimizer steps")->check(flags::FiniteNonNegative);
  app.add_option("--batch", batch, "batch size")->check(flags::FinitePositive);
  app.add_option("--lr", lr, "peak learning rate (AdamW, cosine, 5% warm-up)")->check(flags::FinitePositive);
  app.add_option("--seed", seed, "seed for shuffling and augmentation");
  app.add_option("--test-limit", test_limit, "use only the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  data.add(app);
  app.add_flag("--quiet", quiet, "no progress lines");
  dev.add(app, "avit_finetune", "fine-tune");
  CLI11_PARSE(app, argc, argv);
  dev.validate("avit_finetune", launch.comm() ? launch.comm()->size() : 1);
  if (!writer) quiet = true;
  ho.validate();
  io::check_writable(out, "--out");  // before the fine-tune, not after it
  io::check_writable(std::filesystem::path(out).replace_extension(".json"), "--out (its .json)");

  model::VitConfig cfg;
  auto m = model::load_vit<float>(checkpoint, &cfg);
  if (ho.prior_mean < 0) ho.prior_mean = 2.0 * double(cfg.depth) / 3.0;
  auto train_set = data.load(io::Split::train, cfg);
  auto test_set = data.load(io::Split::test, cfg);
  check_classes(train_set, cfg);
  if (test_limit > 0) test_set = test_set.head(test_limit);
  check(train_set.image_numel() == cfg.channels * cfg.image_size * cfg.image_size,
        "avit_finetune: the checkpoint expects ", cfg.channels, "x", cfg.image_size, "x", cfg.image_size,
        " images, the data has ", train_set.image_numel(), " values per image");

  model::HaltingVit<float> hv(m, ho);
  const auto before = train::evaluate_halting(hv, test_set);
  const auto dense = train::evaluate(m, test_set);
  if (writer) std::fprintf(stderr, "start: dense accuracy %.4f; with halting (γ %.3g, β %.3g) accuracy %.4f, mean keep %.3f\n",
               dense.accuracy, ho.gamma, ho.beta, before.accuracy, before.mean_keep);

  const train::LoopOptions loop{.steps = steps, .batch = batch, .lr = lr, .min_lr = min_lr,
                                .warmup_steps = std::max(1L, steps / 20), .weight_decay = wd,
                                .clip_norm = step.clip_norm, .seed = seed + 1, .augment = aug, .label = "avit",
                                .quiet = quiet};
  std::vector<float> dlogits;
  double ponder_sum = 0, keep_sum = 0;
  long window = 0;
  const halting::Halter* halter = &hv.halter();  // the one the training runs (host or device model)
  const auto tally = [&](const train::StepResult& r) {
    if (window >= 100) ponder_sum = keep_sum = 0, window = 0;  // means over the last <= 100 steps
    ponder_sum += halter->ponder();
    keep_sum += halter->mean_keep_ratio();
    ++window;
    return r.loss;
  };
  const auto step_fn = [&](long, const float* images, const std::int32_t* labels, index_t n) {
    return tally(train::classify_step(hv, images, labels, n, train_set.image_numel(), step.label_smoothing, dlogits));
  };
  const auto note = [&] {
    char extra[96];
    std::snprintf(extra, sizeof extra, "ponder %.3f keep %.3f prior %.4f", ponder_sum / double(window),
                  keep_sum / double(window), halter->prior());
    return std::string(extra);
  };
  train::LoopResult trained;
  if (dev.device == "cpu") {
    trained = train::run_loop(hv, train_set, loop, step_fn, {.note = note, .comm = launch.comm()});
  } else {
#if defined(SEQSWAP_DEVICE_DRIVER)
    // The teacher goes to the device once and comes back after the last step.
    model::Model<typename decltype(m)::NetType, backend::Cuda> dm(m.net());
    const std::size_t n = m.param_count();
    using DevBuf = Buffer<float, backend::Cuda>;
    DevBuf::upload_to(m.params().data, dm.params().data, n);
    model::HaltingVit hvd(dm, ho);
    halter = &hvd.halter();
    train::DeviceStepScratch<float> scratch;
    const auto device_step = [&](long, const float* images, const std::int32_t* labels, index_t k) {
      return tally(
          train::classify_step_device(hvd, images, labels, k, train_set.image_numel(), step.label_smoothing, scratch));
    };
    ops::device::set_tf32(dev.tf32);
    if (writer)
      std::fprintf(stderr, "fine-tuning on the CUDA device%s (evaluation on the host afterwards)\n",
                   dev.tf32 ? " (linear maps on TF32 tensor cores)" : "");
    trained = train::run_loop(hvd, train_set, loop, device_step, {.note = note});
    DevBuf::download_from(dm.params().data, m.params().data, n);
    halter = &hv.halter();
#endif
  }

  const auto after = train::evaluate_halting(hv, test_set);
  // Forward time per image: dense teacher vs this teacher packed (same batches, same run).
  halting::HaltingOptions masked = ho;
  masked.packed = false;
  model::HaltingVit<float> hv_masked(m, masked);
  const auto after_masked = train::evaluate_halting(hv_masked, test_set);
  const double dense_ms = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    train::evaluate(m, test_set);
    return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
           double(test_set.count);
  }();

  nlohmann::json ho_json = ho;
  nlohmann::json result = {{"checkpoint", out},
                           {"from", checkpoint},
                           {"halting", ho_json},
                           {"steps", steps},
                           {"batch", batch},
                           {"lr", lr},
                           {"seed", seed},
                           {"test_images", after.count},
                           {"dense_accuracy", dense.accuracy},
                           {"accuracy", after.accuracy},
                           {"accuracy_masked_path", after_masked.accuracy},
                           {"keep_per_layer", after.keep},
                           {"mean_keep", after.mean_keep},
                           {"ponder", after.ponder},
                           {"ms_per_image_packed", after.ms_per_image},
                           {"ms_per_image_masked", after_masked.ms_per_image},
                           {"ms_per_image_dense", dense_ms},
                           {"threads", host::max_threads()},
                           {"seconds", trained.seconds}};
  if (!writer) return 0;
  io::save_checkpoint(out, m, cfg, {{"halting", ho_json.dump()}, {"training", result.dump()}});
  const auto json_path = std::filesystem::path(out).replace_extension(".json");
  io::write_file_atomic(json_path, result.dump(2) + "\n");
  std::printf("checkpoint: %s\naccuracy: %.4f (dense teacher %.4f)\nmean keep ratio: %.3f\nkeep per layer:",
              out.c_str(), after.accuracy, dense.accuracy, after.mean_keep);
  for (double k : after.keep) std::printf(" %.3f", k);
  std::printf("\nforward ms/image: packed %.3f, masked %.3f, dense %.3f\n", after.ms_per_image,
              after_masked.ms_per_image, dense_ms);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "avit_finetune: error: %s\n", e.what());
  return 1;
}
