// Where the drivers' images come from: Fashion-MNIST's IDX files (the default) or an image
// folder (--image-folder ROOT with ROOT/train/<class>/* and ROOT/val/<class>/* or ROOT/test/...),
// preprocessed to the model's size and channels and normalised as the model's config says.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "seqswap/io/dataset.hpp"
#include "seqswap/io/image_folder.hpp"
#include "seqswap/model/vit.hpp"

class DataFlags {
 public:
  std::string data_dir = seqswap::io::default_fashion_mnist_dir;
  std::string image_folder;
  std::string on_corrupt = "fail";
  int workers = 0;
  double crop_pct = 0.875;
  double crop_scale_min = 0.08;  // stream(): the random resized crop's smallest area share

  void add(CLI::App& app) {
    app.add_option("--data-dir", data_dir, "folder with Fashion-MNIST's *-ubyte.gz files");
    app.add_option("--image-folder", image_folder,
                   "train and evaluate on ROOT/train/<class>/*.jpg|png and ROOT/val (or ROOT/test) instead of "
                   "Fashion-MNIST; images are resized and centre-cropped to the model's size (DeiT's evaluation "
                   "preprocessing) and normalised as its config says");
    app.add_option("--on-corrupt", on_corrupt, "an unreadable image in --image-folder: fail (default) or skip "
                   "(reported by path)");
    app.add_option("--workers", workers, "image-decoding threads (0 = all cores)");
    app.add_option("--crop-pct", crop_pct, "with --image-folder: the centre crop's share of the resized shorter side "
                   "(DeiT: 0.875; 1 keeps images already at the model's size unchanged)")
        ->check(CLI::Range(0.05, 1.0));
  }
  bool folder() const { return !image_folder.empty(); }

  // The split as `cfg`'s model wants it: its size and channels (an image folder is preprocessed
  // to them; Fashion-MNIST must already match) and its normalisation.
  seqswap::io::ImageDataset load(seqswap::io::Split split, const seqswap::model::VitConfig& cfg) {
    using namespace seqswap;
    io::ImageDataset d;
    if (!folder()) {
      d = io::load_fashion_mnist(split, data_dir);
      check(d.size == cfg.image_size && d.channels == cfg.channels, "the model expects ", cfg.channels, "x",
            cfg.image_size, "x", cfg.image_size, " images; Fashion-MNIST has ", d.channels, "x", d.size, "x", d.size,
            " (pass --image-folder for other images)");
    } else {
      const auto f = scan(split);
      index_t skipped = 0;
      d = io::load_image_folder(f, options(cfg), &skipped);
      std::fprintf(stderr, "image folder %s: %ld images of %ld classes%s\n", f.root.string().c_str(), long(d.count),
                   long(d.classes), skipped ? (", " + std::to_string(skipped) + " skipped").c_str() : "");
    }
    d.norm = cfg.norm;
    return d;
  }

  // The split as a stream decoded by worker threads (never held in memory): training batches
  // shuffled and augmented as DeiT's (random resized crop, flip), evaluation in fixed order.
  std::unique_ptr<seqswap::io::ImageFolderLoader> stream(seqswap::io::Split split, const seqswap::model::VitConfig& cfg,
                                                        seqswap::index_t batch, std::uint64_t seed, bool train) {
    auto o = options(cfg);
    o.transform.train = train;
    o.transform.scale_min = crop_scale_min;
    auto f = scan(split);
    std::fprintf(stderr, "image folder %s: %zu images of %zu classes, streamed\n", f.root.string().c_str(),
                 f.samples.size(), f.classes.size());
    return std::make_unique<seqswap::io::ImageFolderLoader>(std::move(f), batch, /*shuffle=*/train, seed, o);
  }

 private:
  seqswap::io::ImageFolder scan(seqswap::io::Split split) {
    namespace fs = std::filesystem;
    const fs::path root(image_folder);
    fs::path dir = root / "train";
    if (split == seqswap::io::Split::test) dir = fs::is_directory(root / "val") ? root / "val" : root / "test";
    auto f = seqswap::io::scan_image_folder(dir, classes_);
    classes_ = f.classes;
    return f;
  }
  seqswap::io::FolderOptions options(const seqswap::model::VitConfig& cfg) const {
    seqswap::io::FolderOptions o;
    o.transform = {.size = cfg.image_size, .channels = cfg.channels, .crop_pct = crop_pct};
    o.norm = cfg.norm;
    o.on_corrupt = seqswap::io::parse_on_corrupt(on_corrupt);
    o.workers = workers;
    return o;
  }

  std::vector<std::string> classes_;  // the first split's: the second must have the same
};

// A model trained on `classes` classes cannot be scored on data with another count.
inline void check_classes(const seqswap::io::ImageDataset& d, const seqswap::model::VitConfig& cfg) {
  seqswap::check(d.classes == cfg.classes, "the model has ", cfg.classes, " classes, the data '", d.name, "' ",
                 d.classes);
}
