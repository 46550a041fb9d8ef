// Image classification data held in memory: Fashion-MNIST from its gzip IDX files (image
// folders: io/image_folder.hpp), normalisation, seeded shuffling, augmentation (random crop with
// padding, horizontal flip), batching.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/io/idx.hpp"
#include "seqswap/io/normalize.hpp"

namespace seqswap::io {

inline const char* default_fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";


struct ImageDataset {
  std::string name;
  index_t count = 0, channels = 1, size = 0;  // images are (channels, size, size)
  std::vector<std::uint8_t> pixels;           // (count, channels, size, size)
  std::vector<std::int32_t> labels;           // (count)
  index_t classes = 0;
  Normalize norm;  // how to feed these pixels to a model (BatchLoader's default)

  index_t image_numel() const { return channels * size * size; }
  // The first n images (n <= count): small runs and tests.
  ImageDataset head(index_t n) const {
    ImageDataset d = *this;
    d.count = std::min(n, count);
    d.pixels.resize(static_cast<std::size_t>(d.count * image_numel()));
    d.labels.resize(static_cast<std::size_t>(d.count));
    return d;
  }
};

enum class Split { train, test };

// Reads <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz.
inline ImageDataset load_fashion_mnist(Split split,
                                       const std::filesystem::path& dir = default_fashion_mnist_dir) {
  const std::string stem = split == Split::train ? "train" : "t10k";
  auto images = io::read_idx_images(dir / (stem + "-images-idx3-ubyte.gz"));
  auto labels = io::read_idx_labels(dir / (stem + "-labels-idx1-ubyte.gz"));
  check(images.count == labels.count, "Fashion-MNIST ", stem, ": expected as many labels as images (",
        images.count, "), found ", labels.count);
  check(images.rows == images.cols, "Fashion-MNIST ", stem, ": expected square images, found ",
        images.rows, "x", images.cols);
  ImageDataset d;
  d.name = "fashion-mnist/" + stem;
  d.count = images.count;
  d.size = images.rows;
  d.pixels = std::move(images.pixels);
  d.labels.assign(labels.labels.begin(), labels.labels.end());
  d.classes = 10;
  for (auto y : d.labels)
    check(y >= 0 && y < 10, "Fashion-MNIST ", stem, ": expected labels 0..9, found ", y);
  return d;
}


struct Augment {
  index_t crop_padding = 0;  // random crop of the image padded by this many pixels; 0 = off
  bool hflip = false;        // horizontal flip with probability 1/2
};

// Batches over a dataset in a seeded order; writes normalised float images (B, C, S, S),
// normalised with `norm`, or the dataset's own `norm` when none is given.
class BatchLoader {
 public:
  BatchLoader(const ImageDataset& data, index_t batch, bool shuffle, std::uint64_t seed,
              std::optional<Normalize> norm = std::nullopt, Augment aug = {})
      : data_(&data), batch_(batch), shuffle_(shuffle), rng_(seed), norm_(norm.value_or(data.norm)), aug_(aug) {
    check(batch > 0, "BatchLoader: expected batch > 0, found ", batch);
    check(data.count > 0, "BatchLoader: dataset '", data.name, "' is empty");
    norm_.check_for(data.channels, "BatchLoader: dataset '" + data.name + "'");
    order_.resize(static_cast<std::size_t>(data.count));
    start_epoch();
  }
  index_t batches_per_epoch() const { return (data_->count + batch_ - 1) / batch_; }
  index_t image_numel() const { return data_->image_numel(); }

  // Reshuffles (when shuffling) and rewinds.
  void start_epoch() {
    std::iota(order_.begin(), order_.end(), index_t{0});
    if (shuffle_)
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng_.below(i)]);
    pos_ = 0;
  }
  // Fills the next batch; returns its size (0 at the end of the epoch).
  index_t next(std::vector<float>& images, std::vector<std::int32_t>& labels) {
    const index_t n = std::min(batch_, data_->count - pos_);
    if (n <= 0) return 0;
    const index_t E = data_->image_numel();
    images.resize(static_cast<std::size_t>(n * E));
    labels.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
      const index_t k = order_[static_cast<std::size_t>(pos_ + i)];
      labels[i] = data_->labels[k];
      write_image(data_->pixels.data() + k * E, images.data() + i * E);
    }
    pos_ += n;
    return n;
  }
  // The next batch of a step-budgeted loop: starts a new epoch when this one is exhausted.
  index_t next_cycling(std::vector<float>& images, std::vector<std::int32_t>& labels) {
    if (const index_t n = next(images, labels)) return n;
    start_epoch();
    return next(images, labels);
  }

 private:
  void write_image(const std::uint8_t* src, float* dst) {
    const index_t C = data_->channels, S = data_->size, P = aug_.crop_padding;
    const index_t dy = P > 0 ? index_t(rng_.below(std::uint64_t(2 * P + 1))) - P : 0;
    const index_t dx = P > 0 ? index_t(rng_.below(std::uint64_t(2 * P + 1))) - P : 0;
    const bool flip = aug_.hflip && (rng_.next_u64() & 1);
    for (index_t c = 0; c < C; ++c) {
      const float scale = float(1.0 / (255.0 * norm_.std_of(c)));
      const float shift = float(norm_.mean_of(c) / norm_.std_of(c));
      for (index_t y = 0; y < S; ++y)
        for (index_t x = 0; x < S; ++x) {
          const index_t sy = y + dy, sx0 = (flip ? S - 1 - x : x) + dx;
          // Padding is black (pixel 0), as torchvision's RandomCrop(padding=P) on the raw image.
          const float v = (sy >= 0 && sy < S && sx0 >= 0 && sx0 < S)
                              ? float(src[(c * S + sy) * S + sx0])
                              : 0.0f;
          dst[(c * S + y) * S + x] = v * scale - shift;
        }
    }
  }

  const ImageDataset* data_;
  index_t batch_;
  bool shuffle_;
  Rng rng_;
  Normalize norm_;
  Augment aug_;
  std::vector<index_t> order_;
  index_t pos_ = 0;
};

}  // namespace seqswap::io
