// train_teacher: trains a ViT on Fashion-MNIST (or an image folder) from scratch and writes a
// checkpoint.
//
//   train_teacher --epochs 30 --out models/vit-fmnist.safetensors --csv models/vit-fmnist.csv
//   train_teacher --image-folder ROOT --arch deit_tiny_patch16_224 --out deit.safetensors
//   train_teacher --image-folder ROOT --image-size 64 --channels 3 --patch 8 --out small.safetensors
//   train_teacher --image-folder ROOT --arch deit_tiny_patch16_224 --stream --out deit.safetensors
//
// --stream decodes the folder's images on worker threads batch by batch instead of holding them
// in memory (sets of any size), with DeiT's training augmentation (random resized crop, flip).
//
// The checkpoint's config records the input size, channels and pixel normalisation
// (--normalize; default: Fashion-MNIST's statistics for Fashion-MNIST, ImageNet's for a folder).
//
// --device cuda trains on the GPU: the binary train_teacher_cuda (this file compiled with
// SEQSWAP_DEVICE_DRIVER and linked with the device ops that nvcc compiles,
// examples/cuda/device_ops.cu; built when nvcc is found). The model, its gradients and AdamW
// state stay in device memory; each batch is uploaded, and only the per-image losses come back.
// The test set is evaluated on the device (only logits come back); at the end of each epoch the
// weights and moments are copied to the host, where the checkpoint and resume state are written
// as on the CPU.
// Per epoch: a CSV row (train loss/accuracy, test loss/accuracy, lr, seconds); the checkpoint
// is rewritten atomically after every epoch, so an interrupted run keeps the last one. With
// --resume, the run also keeps its whole state (weights, AdamW moments, step, CSV) beside the
// checkpoint after every epoch, and the same command continues an interrupted run from its
// last finished epoch: the result equals an uninterrupted run's bit for bit.
//
// Data parallel (built with MPI, docs/scale-out.md): `mpirun -np R train_teacher ...` runs R
// ranks; each takes 1/R of every global batch (--batch stays the global batch), gradients are
// summed with MPI_Allreduce, every rank steps alike, and rank 0 alone prints and writes files.
#include <CLI/CLI.hpp>

#include "data.hpp"
#include "flags.hpp"
#include "ranks.hpp"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <span>
#include <fstream>
#include <sstream>

#include "seqswap/io/atomic_file.hpp"
#include "seqswap/io/checkpoint.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  const Ranks launch(&argc, &argv);
  train::Communicator* comm = launch.comm();
  const int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  const bool writer = rank == 0;  // rank 0 prints and writes; every rank computes the same model
  CLI::App app{"Train a ViT teacher on Fashion-MNIST"};
  model::VitConfig cfg;
  int epochs = 30;
  index_t batch = 128;
  double lr = 1e-3, min_lr = 1e-5, warmup_epochs = 2, wd = 0.05;
  train::StepOptions step;
  io::Augment aug{.crop_padding = 2, .hflip = true};
  std::uint64_t seed = 0;
  index_t train_limit = 0, test_limit = 0;
  std::string out = "models/vit-fmnist.safetensors", csv, init, arch, normalize;
  DataFlags data;
  bool quiet = false, resume = false, stream = false;
  flags::DeviceFlags dev;
  std::vector<int> keep_epochs;
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
  data.add(app);
  app.add_option("--arch", arch, "a named ViT/DeiT shape (deit_tiny_patch16_224, deit_small_patch16_224, ...; "
                 "timm's names and tensors) instead of --width/--depth/--heads/--patch/--mlp-ratio");
  app.add_option("--image-size", cfg.image_size, "with --image-folder: the model's image side in pixels")
      ->check(flags::FinitePositive);
  app.add_option("--channels", cfg.channels, "with --image-folder: 1 (grey) or 3 (RGB)")->check(CLI::IsMember({1, 3}));
  app.add_option("--normalize", normalize, "pixel normalisation: fashion-mnist, imagenet or MEAN[,..]/STD[,..] "
                 "(default: fashion-mnist for Fashion-MNIST, imagenet for an image folder)");
  app.add_flag("--stream", stream, "with --image-folder: decode batches on worker threads as training goes (any "
               "size of folder; DeiT's random resized crop and flip) instead of loading the images into memory");
  app.add_option("--crop-scale-min", data.crop_scale_min, "with --stream: the smallest area share of the random "
                 "resized crop (DeiT: 0.08)")->check(CLI::Range(0.01, 1.0));
  app.add_option("--init", init, "start from this checkpoint's weights (its config wins; fresh optimizer)");
  app.add_option("--out", out, "checkpoint path (safetensors)");
  app.add_option("--csv", csv, "per-epoch CSV path (default: <out without extension>.csv)");
  app.add_flag("--resume", resume, "keep the training state in <out>.state.safetensors after every epoch and "
               "continue from it when it exists (same options required)");
  app.add_option("--keep-epochs", keep_epochs, "also keep the checkpoint of these epochs as <out>-epochE.safetensors")
      ->check(flags::FinitePositive)->delimiter(',');
  app.add_flag("--quiet", quiet, "no progress lines");
  dev.add(app, "train_teacher", "train");
  CLI11_PARSE(app, argc, argv);
  dev.validate("train_teacher", ranks);
  if (!writer) quiet = true;
  if (!arch.empty()) {
    check(data.folder(), "--arch ", arch, " is a 224x224 RGB shape with patch 16: pass --image-folder "
          "(Fashion-MNIST is 1x28x28)");
    for (const char* f : {"--width", "--depth", "--heads", "--patch", "--mlp-ratio"})
      check(app.count(f) == 0, "--arch ", arch, " fixes the shape: leave out ", f);
    const index_t size = cfg.image_size, channels = cfg.channels;
    cfg = model::vit_arch(arch);
    if (app.count("--image-size")) cfg.image_size = size;
    if (app.count("--channels")) cfg.channels = channels;
    if (cfg.channels != 3) cfg.norm = io::Normalize::fashion_mnist();
  }
  if (!data.folder()) {
    check(app.count("--image-size") == 0 && app.count("--channels") == 0,
          "--image-size and --channels apply to --image-folder (Fashion-MNIST is 1x28x28)");
    cfg.image_size = 28, cfg.channels = 1;
  } else {
    check(app.count("--image-size") || !arch.empty(), "--image-folder: expected --image-size (or --arch), found neither");
    if (arch.empty()) cfg.norm = cfg.channels == 3 ? io::Normalize::imagenet() : io::Normalize{{0.5}, {0.5}};
  }
  if (!normalize.empty()) cfg.norm = io::parse_normalize(normalize);
  if (!init.empty()) cfg = model::read_vit_config(io::read_safetensors(init));
  cfg.validate();
  if (csv.empty()) csv = std::filesystem::path(out).replace_extension(".csv").string();
  io::check_writable(out, "--out");  // before any work, not after the first epoch
  io::check_writable(csv, "--csv");
  const auto state_path = std::filesystem::path(out).replace_extension(".state.safetensors");
  const auto epoch_path = [&](int e) {
    auto p = std::filesystem::path(out);
    return p.replace_filename(p.stem().string() + "-epoch" + std::to_string(e) + ".safetensors");
  };
  for (int e : keep_epochs)
    check(e <= epochs, "--keep-epochs: expected epochs in 1..", epochs, ", found ", e);

  io::ImageDataset train_set, test_set;
  std::unique_ptr<io::ImageFolderLoader> train_stream, test_stream;  // --stream
  if (stream) {
    check(data.folder(), "--stream reads an image folder: pass --image-folder");
    check(train_limit == 0 && test_limit == 0, "--stream uses whole splits: leave out --train-limit and --test-limit");
    train_stream = data.stream(io::Split::train, cfg, batch, seed + 1, /*train=*/true);
    test_stream = data.stream(io::Split::test, cfg, 64, 0, /*train=*/false);
    check(init.empty() || train_stream->classes() == cfg.classes, "the model has ", cfg.classes,
          " classes, the folder ", train_stream->classes());
    cfg.classes = train_stream->classes();
  } else {
    train_set = data.load(io::Split::train, cfg);
    test_set = data.load(io::Split::test, cfg);
    if (train_limit > 0) train_set = train_set.head(train_limit);
    if (test_limit > 0) test_set = test_set.head(test_limit);
    if (!init.empty()) check_classes(train_set, cfg);
    cfg.classes = train_set.classes;
  }
  const index_t train_count = stream ? train_stream->count() : train_set.count;
  const index_t test_count = stream ? test_stream->count() : test_set.count;
  const index_t numel = cfg.channels * cfg.image_size * cfg.image_size;

  model::Model m(model::make_vit<float>(cfg));
  m.init(seed);
  if (!init.empty()) io::load_params(m, io::read_safetensors(init));
  if (writer)
    std::fprintf(stderr, "ViT: width %ld depth %ld heads %ld patch %ld tokens %ld, %zu parameters; "
                 "%ld training images, %ld test images, %d thread(s) x %d rank(s)\n",
                 long(cfg.width), long(cfg.depth), long(cfg.heads), long(cfg.patch),
                 long(cfg.tokens()), m.param_count(), long(train_count), long(test_count),
                 host::max_threads(), ranks);

  const long steps_per_epoch = (train_count + batch - 1) / batch;
  const train::LoopOptions loop{.steps = long(epochs) * steps_per_epoch, .batch = batch, .lr = lr, .min_lr = min_lr,
                                .warmup_steps = long(warmup_epochs * double(steps_per_epoch)), .weight_decay = wd,
                                .clip_norm = step.clip_norm, .seed = seed + 1, .augment = aug, .label = "train",
                                .quiet = quiet};
  const train::CosineSchedule sched{lr, min_lr, loop.warmup_steps, loop.steps};  // for the CSV's lr column
  train::LoopOptions loop_at = loop;

  nlohmann::json run = {{"model", cfg},          {"epochs", epochs},  {"batch", batch},
                        {"lr", lr},              {"min_lr", min_lr},  {"warmup_epochs", warmup_epochs},
                        {"weight_decay", wd},    {"label_smoothing", step.label_smoothing},
                        {"clip", step.clip_norm}, {"crop_padding", aug.crop_padding},
                        {"hflip", aug.hflip},    {"seed", seed},      {"train_images", train_count},
                        {"init", init}};
  if (stream) {  // (keys only a streamed run has: states of earlier runs stay resumable)
    run["stream"] = true;
    run["crop_scale_min"] = data.crop_scale_min;
  }
  std::ostringstream table;
  table << "epoch,train_loss,train_accuracy,test_loss,test_accuracy,lr,seconds\n";
  int epoch = 1;
  long start_step = 0;
  if (resume && std::filesystem::exists(state_path)) {
    // The state of the last finished epoch: same options required, weights and moments restored.
    const auto st = io::read_safetensors(state_path);
    const auto meta = [&](const char* key) {
      const auto it = st.metadata.find(key);
      check(it != st.metadata.end(), "--resume: ", state_path.string(), ": expected metadata '", key,
            "', found none (not a train_teacher state file?)");
      return it->second;
    };
    const auto number = [&](const char* key) {
      const std::string text = meta(key);
      try {
        return std::stod(text);
      } catch (const std::exception&) {
        fail("--resume: ", state_path.string(), ": metadata '", key, "': expected a number, found '", text, "'");
      }
    };
    const auto saved = [&] {
      try {
        return nlohmann::json::parse(meta("run"));
      } catch (const nlohmann::json::exception& e) {
        fail("--resume: ", state_path.string(), ": metadata 'run' is not valid JSON (", e.what(), ")");
      }
    }();
    for (const auto& [k, v] : run.items())
      check(k == "init" || saved.value(k, nlohmann::json()) == v, "--resume: ", state_path.string(),
            " was written with ", k, " = ", saved.value(k, nlohmann::json()).dump(), ", this run has ", v.dump(),
            " (use the same options, or remove the state file to start over)");
    const std::size_t n = m.param_count();
    const auto restore = [&](const char* name, float* dst) {
      const auto v = st.at(name).to_vector<float>();
      check(v.size() == n, "--resume: ", state_path.string(), ": tensor '", name, "': expected ", n,
            " values, found ", v.size());
      std::copy(v.begin(), v.end(), dst);
    };
    restore("params", m.params().data);
    restore("adam_m", m.adam_m().data());
    restore("adam_v", m.adam_v().data());
    const double done = number("epochs_done");
    check(done >= 1 && done <= epochs && done == std::floor(done), "--resume: ", state_path.string(),
          ": expected 1..", epochs, " finished epochs, found ", meta("epochs_done"));
    epoch = int(done) + 1;
    start_step = long(epoch - 1) * steps_per_epoch;
    table.str(meta("csv"));
    table.seekp(0, std::ios_base::end);
    run["epochs_done"] = epoch - 1;
    run["test_accuracy"] = number("test_accuracy");
    if (writer) std::fprintf(stderr, "resuming after epoch %d of %d from %s\n", epoch - 1, epochs, state_path.string().c_str());
  }

  std::vector<float> dlogits;
  double loss_sum = 0, epoch_start = 0;
  index_t correct = 0, seen = 0;
  const io::Progress clock("epoch", 1, 1e9, true);  // wall time per epoch
  const auto tally = [&](const train::StepResult& r, index_t n) {  // the epoch's training loss and accuracy
    loss_sum += r.loss * double(n);
    correct += r.correct;
    seen += n;
    return r.loss;
  };
  const auto step_fn = [&](long, const float* images, const std::int32_t* labels, index_t n) {
    return tally(train::classify_step(m, images, labels, n, numel, step.label_smoothing, dlogits), n);
  };
  const auto note = [&] {
    char extra[96];
    std::snprintf(extra, sizeof extra, "epoch %d loss %.4f acc %.4f", epoch, loss_sum / double(seen),
                  double(correct) / double(seen));
    return std::string(extra);
  };
  // Rank 0's files after an epoch: the CSV row, the checkpoint (rewritten atomically), the kept
  // epoch's copy and, last, the resume state (so it never runs ahead of the checkpoint and CSV).
  const auto write_epoch = [&](long s, const train::EvalResult& ev, double secs) {
    std::fprintf(stderr, "epoch %d/%d  train loss %.4f acc %.4f  test loss %.4f acc %.4f  (%.0f s)\n",
                 epoch, epochs, loss_sum / double(seen), double(correct) / double(seen), ev.loss,
                 ev.accuracy, secs);
    table << epoch << ',' << loss_sum / double(seen) << ',' << double(correct) / double(seen) << ','
          << ev.loss << ',' << ev.accuracy << ',' << sched.at(s) << ',' << secs << '\n';
    io::save_checkpoint(out, m, cfg, {{"training", run.dump()}});
    io::write_file_atomic(csv, table.str());
    if (std::find(keep_epochs.begin(), keep_epochs.end(), epoch) != keep_epochs.end())
      io::save_checkpoint(epoch_path(epoch), m, cfg, {{"training", run.dump()}});
    if (!resume) return;
    const std::size_t n = m.param_count();
    const auto flat = [&](const char* name, const float* p) {
      return io::make_tensor<float>(name, {std::int64_t(n)}, std::span<const float>(p, n));
    };
    nlohmann::json options = run;
    options.erase("epochs_done");
    options.erase("test_accuracy");
    io::write_safetensors(state_path, {flat("params", m.params().data), flat("adam_m", m.adam_m().data()),
                                       flat("adam_v", m.adam_v().data())},
                          {{"run", options.dump()}, {"epochs_done", std::to_string(epoch)}, {"csv", table.str()},
                           {"test_accuracy", nlohmann::json(ev.accuracy).dump()}});
  };
  // The test-set evaluation after each epoch: the host model's (the device path points it at
  // the device model).
  std::function<train::EvalResult()> evaluate_test = [&] {
    return stream ? train::evaluate_source(m, *test_stream) : train::evaluate_split(m, test_set, comm);
  };
  const auto end_of_epoch = [&](long s) {
    if ((s + 1) % steps_per_epoch != 0) return;
    if (comm) {  // the epoch's training loss and accuracy over every rank's slices
      double sums[3] = {loss_sum, double(correct), double(seen)};
      comm->allreduce_sum(sums, 3);
      loss_sum = sums[0];
      correct = index_t(sums[1]);
      seen = index_t(sums[2]);
    }
    // Each rank a share of the test batches (a stream: every rank all of them).
    const auto ev = evaluate_test();
    run["epochs_done"] = epoch;
    run["test_accuracy"] = ev.accuracy;
    if (writer) write_epoch(s, ev, clock.elapsed() - epoch_start);
    ++epoch;
    loss_sum = 0;
    correct = seen = 0;
    epoch_start = clock.elapsed();
  };
  loop_at.start_step = start_step;
  train::LoopResult trained;
  if (dev.device == "cpu") {
    const train::LoopHooks hooks{.note = note, .after_step = end_of_epoch, .comm = comm};
    trained = stream ? train::run_loop(m, *train_stream, loop_at, step_fn, hooks)
                     : train::run_loop(m, train_set, loop_at, step_fn, hooks);
  } else {
#if defined(SEQSWAP_DEVICE_DRIVER)
    // The host model's state (initialised, --init or --resume) goes to the device once; the
    // device's comes back at the end of each epoch, before evaluation and the files.
    model::Model<typename decltype(m)::NetType, backend::Cuda> dm(model::make_vit<float>(cfg));
    const std::size_t n = m.param_count();
    using DevBuf = Buffer<float, backend::Cuda>;
    DevBuf::upload_to(m.params().data, dm.params().data, n);
    dm.adam_m().upload(m.adam_m().data(), n);
    dm.adam_v().upload(m.adam_v().data(), n);
    train::DeviceStepScratch<float> scratch;
    const auto device_step = [&](long, const float* images, const std::int32_t* labels, index_t k) {
      return tally(train::classify_step_device(dm, images, labels, k, numel, step.label_smoothing, scratch), k);
    };
    const auto device_end_of_epoch = [&](long s) {
      if ((s + 1) % steps_per_epoch == 0) {
        DevBuf::download_from(dm.params().data, m.params().data, n);
        dm.adam_m().download(m.adam_m().data(), n);
        dm.adam_v().download(m.adam_v().data(), n);
      }
      end_of_epoch(s);
    };
    evaluate_test = [&] {
      return stream ? train::evaluate_source(dm, *test_stream) : train::evaluate(dm, test_set);
    };
    ops::device::set_tf32(dev.tf32);
    if (writer)
      std::fprintf(stderr, "training on the CUDA device%s\n", dev.tf32 ? " (linear maps on TF32 tensor cores)" : "");
    const train::LoopHooks hooks{.note = note, .after_step = device_end_of_epoch};
    trained = stream ? train::run_loop(dm, *train_stream, loop_at, device_step, hooks)
                     : train::run_loop(dm, train_set, loop_at, device_step, hooks);
#endif
  }
  if (!writer) return 0;
  if (comm)  // the gradient all-reduce's share of rank 0's training loop (evaluation included)
    std::fprintf(stderr, "all-reduce: %.2f s of %.1f s in the training loop (%.1f%%), %d ranks\n", trained.comm_seconds,
                 trained.seconds, 100.0 * trained.comm_seconds / std::max(1e-9, trained.seconds), ranks);
  std::printf("checkpoint: %s\naccuracy: %.4f\n", out.c_str(), run["test_accuracy"].get<double>());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_teacher: error: %s\n", e.what());
  return 1;
}
