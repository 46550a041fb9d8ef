// evaluate: test-set accuracy of a ViT checkpoint on Fashion-MNIST.
//
//   evaluate --checkpoint models/vit-fmnist.safetensors [--json out.json]
//
// The last line printed is `accuracy: 0.xxxx`.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "seqswap/io/atomic_file.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/train/loop.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  CLI::App app{"Evaluate a ViT checkpoint on the Fashion-MNIST test set"};
  std::string checkpoint, json_out, data_dir = train::default_fashion_mnist_dir;
  index_t limit = 0, batch = 256;
  app.add_option("--checkpoint", checkpoint, "safetensors checkpoint")->required();
  app.add_option("--json", json_out, "also write the result as JSON here");
  app.add_option("--data-dir", data_dir, "folder with Fashion-MNIST's *-ubyte.gz files");
  app.add_option("--limit", limit, "evaluate only the first N test images (0 = all)");
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  model::VitConfig cfg;
  auto m = model::load_vit<float>(checkpoint, &cfg);
  auto test_set = train::load_fashion_mnist(train::Split::test, data_dir);
  if (limit > 0) test_set = test_set.head(limit);
  check(test_set.size == cfg.image_size && test_set.channels == cfg.channels,
        "evaluate: the checkpoint expects ", cfg.channels, "x", cfg.image_size, "x",
        cfg.image_size, " images, the data has ", test_set.channels, "x", test_set.size, "x",
        test_set.size);
  const auto e = train::evaluate(m, test_set, batch);
  if (!json_out.empty()) {
    nlohmann::json j = {{"checkpoint", checkpoint}, {"images", e.count}, {"accuracy", e.accuracy},
                        {"loss", e.loss}, {"model", cfg}, {"parameters", m.param_count()}};
    io::write_file_atomic(json_out, j.dump(2) + "\n");
  }
  std::printf("images: %ld\nloss: %.4f\naccuracy: %.4f\n", long(e.count), e.loss, e.accuracy);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "evaluate: error: %s\n", e.what());
  return 1;
}
