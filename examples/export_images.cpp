// export_images: writes Fashion-MNIST as an image folder (ROOT/train/<class>/*.png|jpg and
// ROOT/test/<class>/...), the layout every driver reads with --image-folder: a way to try that
// path without data of one's own, and the fixture of the driver.image_folder test.
//
//   export_images --out /tmp/fmnist-folder --train-limit 2000 --test-limit 500 --format png
//   train_teacher --image-folder /tmp/fmnist-folder --image-size 28 --channels 1 --crop-pct 1 \
//       --normalize fashion-mnist --epochs 2 --out /tmp/folder-teacher.safetensors
#include <CLI/CLI.hpp>

#include "flags.hpp"
#include <cstdio>

#include "seqswap/io/dataset.hpp"
#include "seqswap/io/image.hpp"

using namespace seqswap;

int main(int argc, char** argv) try {
  CLI::App app{"Write Fashion-MNIST as a class-per-folder image set (PNG or JPEG)"};
  std::string out, format = "png", data_dir = io::default_fashion_mnist_dir;
  index_t train_limit = 0, test_limit = 0;
  int quality = 95;
  app.add_option("--out", out, "root folder (train/ and test/ are made in it)")->required();
  app.add_option("--format", format, "png (lossless) or jpg")->check(CLI::IsMember({"png", "jpg"}));
  app.add_option("--quality", quality, "JPEG quality 1-100")->check(CLI::Range(1, 100));
  app.add_option("--train-limit", train_limit, "only the first N training images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--test-limit", test_limit, "only the first N test images (0 = all)")->check(flags::FiniteNonNegative);
  app.add_option("--data-dir", data_dir, "folder with Fashion-MNIST's *-ubyte.gz files");
  CLI11_PARSE(app, argc, argv);

  // Folder names sort in label order, as the loader assigns labels by sorted name.
  const char* names[10] = {"0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat",
                           "5-sandal", "6-shirt",   "7-sneaker",  "8-bag",   "9-boot"};
  for (const auto& [split, name, limit] : {std::tuple{io::Split::train, "train", train_limit},
                                           std::tuple{io::Split::test, "test", test_limit}}) {
    auto d = io::load_fashion_mnist(split, data_dir);
    if (limit > 0) d = d.head(limit);
    const std::filesystem::path root = std::filesystem::path(out) / name;
    for (const char* c : names) std::filesystem::create_directories(root / c);
    const index_t E = d.image_numel();
    for (index_t i = 0; i < d.count; ++i) {
      io::Image img{d.size, d.size, d.channels, {d.pixels.begin() + i * E, d.pixels.begin() + (i + 1) * E}};
      char file[32];
      std::snprintf(file, sizeof file, "%05ld.%s", long(i), format.c_str());
      io::write_image(root / names[d.labels[std::size_t(i)]] / file, img, quality);
    }
    std::printf("%s: %ld images in %s\n", name, long(d.count), root.string().c_str());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "export_images: error: %s\n", e.what());
  return 1;
}
