// evaluate: test-set accuracy of a ViT checkpoint on Fashion-MNIST or an image folder.
//
//   evaluate --checkpoint models/vit-fmnist.safetensors [--json out.json]
//   evaluate --checkpoint deit_tiny.safetensors --arch deit_tiny_patch16_224 --image-folder ROOT --stream
//
// The images are normalised as the checkpoint's config says (its "normalize"; Fashion-MNIST's
// statistics for checkpoints that predate it); --arch reads a file without seqswap's metadata
// (timm's tensor names) as that architecture.
// A halting teacher (metadata "halting", written by avit_finetune) runs with halting, as it
// was trained, and also prints its keep ratios; --dense runs it without. A student (metadata
// "student", written by replace_layers and plan_replacement) is rebuilt with its mixers and
// prints them. The last line printed is `accuracy: 0.xxxx`.
#include <CLI/CLI.hpp>

#include "data.hpp"
#include "flags.hpp"
#include <cstdio>

#include "seqswap/io/atomic_file.hpp"
#include "seqswap/model/halting_vit.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/train/loop.hpp"
#include "seqswap/zoo/student.hpp"
#include "zoo_instances.hpp"  // with SEQSWAP_ZOO_EXTERN: the mixers' code compiled once for all drivers

using namespace seqswap;

int main(int argc, char** argv) try {
  CLI::App app{"Evaluate a ViT checkpoint on the Fashion-MNIST test set or an image folder"};
  std::string checkpoint, json_out, arch;
  DataFlags data;
  index_t limit = 0, batch = 256;
  bool dense = false, allow_non_finite = false, stream = false;
  app.add_option("--checkpoint", checkpoint, "safetensors checkpoint")->required();
  app.add_option("--json", json_out, "also write the result as JSON here");
  data.add(app);
  app.add_option("--arch", arch, "read the checkpoint as this architecture (deit_tiny_patch16_224, ...; for "
                 "files without seqswap's metadata, e.g. a timm state dict)");
  app.add_option("--limit", limit, "evaluate only the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--batch", batch, "batch size")->check(flags::FinitePositive);
  app.add_flag("--stream", stream, "with --image-folder: decode the test images batch by batch on worker threads "
               "instead of loading them all into memory (a folder of any size)");
  app.add_flag("--dense", dense, "run a halting teacher without halting");
  app.add_flag("--allow-non-finite", allow_non_finite, "load a checkpoint holding NaN/Inf weights (refused otherwise)");
  CLI11_PARSE(app, argc, argv);
  if (!json_out.empty()) io::check_writable(json_out, "--json");

  const auto file = io::read_safetensors(checkpoint);
  const auto halting = dense ? std::nullopt : model::read_halting_options(file);
  // A student written by replace_layers or plan_replacement is rebuilt from its metadata.
  const auto student = arch.empty() ? zoo::read_student_description(file, model::read_vit_config(file).depth) : std::nullopt;
  check(!(student && halting), "checkpoint ", checkpoint, ": a student with halting metadata is not supported");
  model::VitConfig cfg;
  nlohmann::json j = {{"checkpoint", checkpoint}};
  double accuracy = 0, loss = 0;
  index_t count = 0;
  const auto run = [&](auto& m) {
    j["model"] = cfg;
    j["parameters"] = m.param_count();
    io::ImageDataset test_set;
    std::unique_ptr<io::ImageFolderLoader> test_stream;
    if (stream) {
      check(data.folder(), "--stream reads an image folder: pass --image-folder");
      check(limit == 0, "--stream evaluates the whole split: leave out --limit");
      test_stream = data.stream(io::Split::test, cfg, batch, 0, /*train=*/false);
      check(test_stream->classes() == cfg.classes, "the model has ", cfg.classes, " classes, the folder ",
            test_stream->classes());
    } else {
      test_set = data.load(io::Split::test, cfg);
      check_classes(test_set, cfg);
      if (limit > 0) test_set = test_set.head(limit);
    }
    if constexpr (std::is_same_v<std::decay_t<decltype(m)>, model::VitModel<float>>) {
      if (halting) {
        model::HaltingVit hv(m, *halting);
        const auto e = stream ? train::evaluate_halting_source(hv, *test_stream) : train::evaluate_halting(hv, test_set, batch);
        accuracy = e.accuracy, loss = e.loss, count = e.count;
        j["halting"] = *halting;
        j["keep_per_layer"] = e.keep;
        j["mean_keep"] = e.mean_keep;
        std::printf("halting: mean keep ratio %.3f, per layer", e.mean_keep);
        for (double k : e.keep) std::printf(" %.2f", k);
        std::printf("\n");
        return;
      }
    }
    const auto e = stream ? train::evaluate_source(m, *test_stream) : train::evaluate(m, test_set, batch);
    accuracy = e.accuracy, loss = e.loss, count = e.count;
  };
  if (student) {
    auto m = zoo::load_student<float>(checkpoint, &cfg, nullptr, allow_non_finite);
    j["mixer_per_layer"] = student->mixer_per_layer;
    std::printf("student:");
    for (std::size_t l = 0; l < student->mixer_per_layer.size(); ++l) std::printf(" %zu:%s", l, student->mixer_per_layer[l].c_str());
    std::printf("\n");
    run(m);
  } else {
    auto m = arch.empty() ? model::load_vit<float>(checkpoint, &cfg, allow_non_finite)
                          : model::load_vit_arch<float>(checkpoint, arch, &cfg, allow_non_finite);
    run(m);
  }
  j["images"] = count;
  j["accuracy"] = accuracy;
  j["loss"] = loss;
  if (!json_out.empty()) io::write_file_atomic(json_out, j.dump(2) + "\n");
  std::printf("images: %ld\nloss: %.4f\naccuracy: %.4f\n", long(count), loss, accuracy);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "evaluate: error: %s\n", e.what());
  return 1;
}
