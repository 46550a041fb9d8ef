// train_teacher: trains a ViT on Fashion-MNIST from scratch and writes a checkpoint.
//
//   train_teacher --epochs 30 --out models/vit-fmnist.safetensors --csv models/vit-fmnist.csv
//
// Per epoch: a CSV row (train loss/accuracy, test loss/accuracy, lr, seconds); the checkpoint
// is rewritten atomically after every epoch, so an interrupted run keeps the last one.
#include <CLI/CLI.hpp>

#include "flags.hpp"
#include <cstdio>
#include <fstream>
#include <sstream>

#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/checkpoint.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  CLI::App app{"Train a ViT teacher on Fashion-MNIST"};
  model::VitConfig cfg;
  int epochs = 30;
  index_t batch = 128;
  double lr = 1e-3, min_lr = 1e-5, warmup_epochs = 2, wd = 0.05;
  train::StepOptions step;
  io::Augment aug{.crop_padding = 2, .hflip = true};
  std::uint64_t seed = 0;
  index_t train_limit = 0, test_limit = 0;
  std::string out = "models/vit-fmnist.safetensors", csv, init, data_dir = io::default_fashion_mnist_dir;
  bool quiet = false;
  app.add_option("--epochs", epochs, "training epochs")->check(flags::FinitePositive);
  app.add_option("--batch", batch, "batch size")->check(flags::FinitePositive);
  app.add_option("--lr", lr, "peak learning rate (AdamW)")->check(flags::FinitePositive);
  app.add_option("--min-lr", min_lr, "final learning rate of the cosine schedule")->check(flags::FiniteNonNegative);
  app.add_option("--warmup-epochs", warmup_epochs, "linear warm-up length in epochs")->check(flags::FiniteNonNegative);
  app.add_option("--wd", wd, "AdamW weight decay (matrices only)")->check(flags::FiniteNonNegative);
  app.add_option("--smoothing", step.label_smoothing, "label smoothing")->check(flags::FiniteNonNegative);
  app.add_option("--clip", step.clip_norm, "global gradient-norm clip (0 = off)")->check(flags::FiniteNonNegative);
  app.add_option("--crop-padding", aug.crop_padding, "random-crop padding in pixels (0 = off)")->check(flags::FiniteNonNegative);
  app.add_option("--flip", aug.hflip, "random horizontal flip (true/false)");
  app.add_option("--width", cfg.width, "embedding width D")->check(flags::FinitePositive);
  app.add_option("--depth", cfg.depth, "number of blocks L")->check(flags::FinitePositive);
  app.add_option("--heads", cfg.heads, "attention heads H")->check(flags::FinitePositive);
  app.add_option("--mlp-ratio", cfg.mlp_ratio, "MLP hidden width / D")->check(flags::FinitePositive);
  app.add_option("--patch", cfg.patch, "patch size")->check(flags::FinitePositive);
  app.add_option("--seed", seed, "seed for initialisation, shuffling and augmentation");
  app.add_option("--train-limit", train_limit, "use only the first N training images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--test-limit", test_limit, "use only the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--data-dir", data_dir, "folder with Fashion-MNIST's *-ubyte.gz files");
  app.add_option("--init", init, "start from this checkpoint's weights (its config wins; fresh optimizer)");
  app.add_option("--out", out, "checkpoint path (safetensors)");
  app.add_option("--csv", csv, "per-epoch CSV path (default: <out without extension>.csv)");
  app.add_flag("--quiet", quiet, "no progress lines");
  CLI11_PARSE(app, argc, argv);
  if (!init.empty()) cfg = model::read_vit_config(io::read_safetensors(init));
  cfg.validate();
  if (csv.empty()) csv = std::filesystem::path(out).replace_extension(".csv").string();
  io::check_writable(out, "--out");  // before any work, not after the first epoch
  io::check_writable(csv, "--csv");

  auto train_set = io::load_fashion_mnist(io::Split::train, data_dir);
  auto test_set = io::load_fashion_mnist(io::Split::test, data_dir);
  if (train_limit > 0) train_set = train_set.head(train_limit);
  if (test_limit > 0) test_set = test_set.head(test_limit);
  cfg.image_size = train_set.size;
  cfg.channels = train_set.channels;
  cfg.classes = train_set.classes;

  model::Model m(model::make_vit<float>(cfg));
  m.init(seed);
  if (!init.empty()) io::load_params(m, io::read_safetensors(init));
  std::fprintf(stderr, "ViT: width %ld depth %ld heads %ld patch %ld tokens %ld, %zu parameters; "
               "%ld training images, %ld test images, %d thread(s)\n",
               long(cfg.width), long(cfg.depth), long(cfg.heads), long(cfg.patch),
               long(cfg.tokens()), m.param_count(), long(train_set.count), long(test_set.count),
               host::max_threads());

  const long steps_per_epoch = (train_set.count + batch - 1) / batch;
  const train::LoopOptions loop{.steps = long(epochs) * steps_per_epoch, .batch = batch, .lr = lr, .min_lr = min_lr,
                                .warmup_steps = long(warmup_epochs * double(steps_per_epoch)), .weight_decay = wd,
                                .clip_norm = step.clip_norm, .seed = seed + 1, .augment = aug, .label = "train",
                                .quiet = quiet};
  const train::CosineSchedule sched{lr, min_lr, loop.warmup_steps, loop.steps};  // for the CSV's lr column

  nlohmann::json run = {{"model", cfg},          {"epochs", epochs},  {"batch", batch},
                        {"lr", lr},              {"min_lr", min_lr},  {"warmup_epochs", warmup_epochs},
                        {"weight_decay", wd},    {"label_smoothing", step.label_smoothing},
                        {"clip", step.clip_norm}, {"crop_padding", aug.crop_padding},
                        {"hflip", aug.hflip},    {"seed", seed},      {"train_images", train_set.count},
                        {"init", init}};
  std::ostringstream table;
  table << "epoch,train_loss,train_accuracy,test_loss,test_accuracy,lr,seconds\n";

  std::vector<float> dlogits;
  double loss_sum = 0, epoch_start = 0;
  index_t correct = 0, seen = 0;
  int epoch = 1;
  const io::Progress clock("epoch", 1, 1e9, true);  // wall time per epoch
  const auto step_fn = [&](long, const float* images, const std::int32_t* labels, index_t n) {
    const auto r = train::classify_step(m, images, labels, n, train_set.image_numel(), step.label_smoothing, dlogits);
    loss_sum += r.loss * double(n);
    correct += r.correct;
    seen += n;
    return r.loss;
  };
  const auto note = [&] {
    char extra[96];
    std::snprintf(extra, sizeof extra, "epoch %d loss %.4f acc %.4f", epoch, loss_sum / double(seen),
                  double(correct) / double(seen));
    return std::string(extra);
  };
  // At the end of each epoch: evaluate, a CSV row, and the checkpoint rewritten atomically.
  const auto end_of_epoch = [&](long s) {
    if ((s + 1) % steps_per_epoch != 0) return;
    const auto ev = train::evaluate(m, test_set);
    const double secs = clock.elapsed() - epoch_start;
    std::fprintf(stderr, "epoch %d/%d  train loss %.4f acc %.4f  test loss %.4f acc %.4f  (%.0f s)\n",
                 epoch, epochs, loss_sum / double(seen), double(correct) / double(seen), ev.loss,
                 ev.accuracy, secs);
    table << epoch << ',' << loss_sum / double(seen) << ',' << double(correct) / double(seen) << ','
          << ev.loss << ',' << ev.accuracy << ',' << sched.at(s) << ',' << secs << '\n';
    run["epochs_done"] = epoch;
    run["test_accuracy"] = ev.accuracy;
    io::save_checkpoint(out, m, cfg, {{"training", run.dump()}});
    io::write_file_atomic(csv, table.str());
    ++epoch;
    loss_sum = 0;
    correct = seen = 0;
    epoch_start = clock.elapsed();
  };
  train::run_loop(m, train_set, loop, step_fn, {.note = note, .after_step = end_of_epoch});
  std::printf("checkpoint: %s\naccuracy: %.4f\n", out.c_str(), run["test_accuracy"].get<double>());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_teacher: error: %s\n", e.what());
  return 1;
}
