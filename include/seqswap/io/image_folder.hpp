// Class-per-folder image datasets (root/<class>/*.jpg|jpeg|png, as torchvision's ImageFolder):
// scanning, DeiT's preprocessing (evaluation: resize the shorter side to size / crop_pct, centre
// crop; training: random resized crop and flip), decoding on worker threads, and either
//  - load_image_folder: every image preprocessed once into an in-memory ImageDataset (small
//    folders; everything that takes an ImageDataset then works on it), or
//  - ImageFolderLoader: a stream of normalised batches decoded by worker threads ahead of the
//    consumer (folders too large for memory; run_loop takes it as a batch source).
// Corrupt or unreadable files are reported by path and skipped, or fail the run (OnCorrupt).
#pragma once
#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/io/dataset.hpp"
#include "seqswap/io/image.hpp"

namespace seqswap::io {

struct ImageFolder {
  std::filesystem::path root;
  std::vector<std::string> classes;  // sorted folder names; label = index
  struct Sample {
    std::filesystem::path path;
    std::int32_t label;
  };
  std::vector<Sample> samples;  // sorted by class, then file name
};

inline bool is_image_file(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

// Lists root/<class>/<image>. With `classes` given (e.g. the training split's), the folder
// must hold exactly those classes, so that labels mean the same in every split.
inline ImageFolder scan_image_folder(const std::filesystem::path& root,
                                     const std::vector<std::string>& classes = {}) {
  namespace fs = std::filesystem;
  check(fs::is_directory(root), "image folder ", root.string(), ": expected a directory of class folders, found ",
        fs::exists(root) ? "a file" : "nothing");
  ImageFolder f;
  f.root = root;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) f.classes.push_back(e.path().filename().string());
  std::sort(f.classes.begin(), f.classes.end());
  check(!f.classes.empty(), "image folder ", root.string(), ": expected class folders (root/<class>/*.jpg|png), found none");
  if (!classes.empty())
    check(f.classes == classes, "image folder ", root.string(), ": expected the ", classes.size(),
          " classes of the other split, found ", f.classes.size(), " (first difference: '",
          [&] {
            for (std::size_t i = 0; i < std::max(classes.size(), f.classes.size()); ++i) {
              const std::string a = i < classes.size() ? classes[i] : "", b = i < f.classes.size() ? f.classes[i] : "";
              if (a != b) return (a.empty() ? "(none)" : a) + "' vs '" + (b.empty() ? "(none)" : b);
            }
            return std::string("?");
          }(), "')");
  for (std::size_t c = 0; c < f.classes.size(); ++c) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(root / f.classes[c]))
      if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& p : files) f.samples.push_back({std::move(p), std::int32_t(c)});
  }
  check(!f.samples.empty(), "image folder ", root.string(), ": expected .jpg, .jpeg or .png files in the class folders, found none");
  return f;
}

// DeiT's preprocessing (timm's create_transform): evaluation resizes the shorter side to
// size / crop_pct (224 / 0.875 = 256) and takes the centre size x size; training takes a random
// crop of scale [scale_min, 1] of the area and aspect ratio in [3/4, 4/3], resized to size x size,
// flipped with probability 1/2. Output is (channels, size, size) uint8.
struct FolderTransform {
  index_t size = 224;
  index_t channels = 3;
  double crop_pct = 0.875;
  bool train = false;
  double scale_min = 0.08;
  bool hflip = true;
};

inline Image preprocess(const Image& img, const FolderTransform& t, Rng* rng) {
  const double W = double(img.width), H = double(img.height);
  Image out;
  if (!t.train) {
    const double shorter = std::min(W, H), target = std::floor(double(t.size) / t.crop_pct);
    // The crop of the resized image, mapped back onto the original: no intermediate image.
    const double side = double(t.size) * shorter / target;
    out = resize_region(img, (W - side) / 2, (H - side) / 2, side, side, t.size, t.size);
  } else {
    check(rng != nullptr, "preprocess: the training transform needs a random generator");
    double x0 = 0, y0 = 0, w = W, h = H;
    bool found = false;
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {
      const double area = W * H * (t.scale_min + (1 - t.scale_min) * rng->uniform());
      const double log_ratio = std::log(3.0 / 4.0) + (std::log(4.0 / 3.0) - std::log(3.0 / 4.0)) * rng->uniform();
      const double ratio = std::exp(log_ratio);
      const double cw = std::round(std::sqrt(area * ratio)), ch = std::round(std::sqrt(area / ratio));
      if (cw > 0 && ch > 0 && cw <= W && ch <= H) {
        x0 = double(rng->below(std::uint64_t(W - cw + 1)));
        y0 = double(rng->below(std::uint64_t(H - ch + 1)));
        w = cw, h = ch, found = true;
      }
    }
    if (!found) {  // torchvision's fallback: the centre crop of the clamped ratio
      const double ratio = W / H;
      if (ratio < 3.0 / 4.0) w = W, h = std::round(W / (3.0 / 4.0));
      else if (ratio > 4.0 / 3.0) h = H, w = std::round(H * (4.0 / 3.0));
      x0 = (W - w) / 2, y0 = (H - h) / 2;
    }
    out = resize_region(img, x0, y0, w, h, t.size, t.size);
    if (t.hflip && (rng->next_u64() & 1))
      for (index_t y = 0; y < out.height; ++y)
        for (index_t x = 0; x < out.width / 2; ++x)
          for (index_t c = 0; c < out.channels; ++c) std::swap(out.at(y, x, c), out.at(y, out.width - 1 - x, c));
  }
  return out;
}

// HWC -> CHW.
inline void to_planar(const Image& img, std::uint8_t* dst) {
  for (index_t c = 0; c < img.channels; ++c)
    for (index_t y = 0; y < img.height; ++y)
      for (index_t x = 0; x < img.width; ++x) *dst++ = img.at(y, x, c);
}

enum class OnCorrupt { fail, skip };

inline OnCorrupt parse_on_corrupt(const std::string& s) {
  if (s == "fail") return OnCorrupt::fail;
  if (s == "skip") return OnCorrupt::skip;
  fail("--on-corrupt: expected fail or skip, found '", s, "'");
}

struct FolderOptions {
  FolderTransform transform{};
  Normalize norm = Normalize::imagenet();
  OnCorrupt on_corrupt = OnCorrupt::fail;
  int workers = 0;  // decoding threads; 0 = hardware concurrency
  // Called (from a worker thread, serialised) with each file that could not be used and why;
  // default: one line on stderr.
  std::function<void(const std::filesystem::path&, const std::string&)> report;
};

namespace detail {
inline int worker_count(int w) { return w > 0 ? w : std::max(1, int(std::thread::hardware_concurrency())); }
inline void default_report(const std::filesystem::path& p, const std::string& why) {
  (void)p;  // `why` names the file
  std::fprintf(stderr, "image folder: skipped %s\n", why.c_str());
}
}  // namespace detail

// Decodes and preprocesses (evaluation transform) every image of `f` into memory, on
// o.workers threads. Skipped files (OnCorrupt::skip) are left out and reported; `skipped`
// receives their count. The dataset's normalisation is o.norm.
inline ImageDataset load_image_folder(const ImageFolder& f, const FolderOptions& o, index_t* skipped = nullptr) {
  check(!o.transform.train, "load_image_folder: expected the evaluation transform (augmentation belongs to the loader)");
  o.norm.check_for(o.transform.channels, "image folder " + f.root.string());
  const index_t n = index_t(f.samples.size()), E = o.transform.channels * o.transform.size * o.transform.size;
  std::vector<std::uint8_t> pixels(std::size_t(n * E));
  std::vector<char> ok(std::size_t(n), 0);
  std::vector<std::string> error(static_cast<std::size_t>(n));
  std::atomic<index_t> next{0};
  auto work = [&] {
    for (index_t i; (i = next++) < n;) {
      try {
        const auto img = read_image(f.samples[std::size_t(i)].path, int(o.transform.channels));
        to_planar(preprocess(img, o.transform, nullptr), pixels.data() + i * E);
        ok[std::size_t(i)] = 1;
      } catch (const std::exception& e) {
        error[std::size_t(i)] = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < detail::worker_count(o.workers); ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  ImageDataset d;
  d.name = f.root.string();
  d.channels = o.transform.channels;
  d.size = o.transform.size;
  d.classes = index_t(f.classes.size());
  d.norm = o.norm;
  index_t bad = 0;
  for (index_t i = 0; i < n; ++i) {  // compacted in place: no second copy of the pixels
    if (!ok[std::size_t(i)]) {
      if (o.on_corrupt == OnCorrupt::fail)
        fail(error[std::size_t(i)], " (pass --on-corrupt skip / OnCorrupt::skip to leave such files out)");
      (o.report ? o.report : detail::default_report)(f.samples[std::size_t(i)].path, error[std::size_t(i)]);
      ++bad;
      continue;
    }
    if (bad > 0) std::copy(pixels.begin() + i * E, pixels.begin() + (i + 1) * E, pixels.begin() + (i - bad) * E);
    d.labels.push_back(f.samples[std::size_t(i)].label);
  }
  d.count = n - bad;
  pixels.resize(std::size_t(d.count * E));
  d.pixels = std::move(pixels);
  check(d.count > 0, "image folder ", f.root.string(), ": every one of its ", n, " images was unusable");
  if (skipped) *skipped = bad;
  return d;
}

// A stream of normalised batches (B, C, S, S) over an image folder, decoded by worker threads
// up to `prefetch` batches ahead of the consumer. Batch k of the stream is a pure function of
// (seed, k): the epoch's order is a seeded shuffle, and each image's augmentation draws from
// a generator seeded by (seed, epoch, position), so the worker count never changes the data.
// Skipped (corrupt) images make their batch smaller; each is reported once.
class ImageFolderLoader {
 public:
  ImageFolderLoader(ImageFolder folder, index_t batch, bool shuffle, std::uint64_t seed, FolderOptions o,
                    int prefetch = 4)
      : f_(std::move(folder)), batch_(batch), shuffle_(shuffle), seed_(seed), o_(std::move(o)),
        prefetch_(std::max(1, prefetch)) {
    check(batch > 0, "ImageFolderLoader: expected batch > 0, found ", batch);
    o_.norm.check_for(o_.transform.channels, "image folder " + f_.root.string());
    for (int w = 0; w < detail::worker_count(o_.workers); ++w) workers_.emplace_back([this] { work(); });
  }
  ImageFolderLoader(const ImageFolderLoader&) = delete;
  ImageFolderLoader& operator=(const ImageFolderLoader&) = delete;
  ~ImageFolderLoader() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  index_t image_numel() const { return o_.transform.channels * o_.transform.size * o_.transform.size; }
  index_t batches_per_epoch() const { return (index_t(f_.samples.size()) + batch_ - 1) / batch_; }
  index_t classes() const { return index_t(f_.classes.size()); }
  index_t count() const { return index_t(f_.samples.size()); }  // files, corrupt ones included
  const Normalize& norm() const { return o_.norm; }
  index_t skipped() const {
    std::lock_guard lock(mu_);
    return index_t(reported_.size());
  }

  // The next batch of the stream (epochs follow one another); returns its size (a batch whose
  // every image was skipped is passed over). A corrupt file under OnCorrupt::fail throws here,
  // naming the file.
  index_t next_cycling(std::vector<float>& images, std::vector<std::int32_t>& labels) {
    for (long empty = 0;; ++empty) {
      const index_t n = take(images, labels);
      if (n > 0) return n;
      check(empty < batches_per_epoch(), "image folder ", f_.root.string(), ": a whole epoch of images was unusable");
    }
  }
  // Continues the stream at batch k (a resumed run starts where it stopped, without decoding the
  // batches before it). Batches decoded ahead for the old position are dropped.
  void seek(long k) {
    check(k >= 0, "ImageFolderLoader: expected a batch index >= 0, found ", k);
    {
      std::lock_guard lock(mu_);
      consumed_ = assigned_ = k;
      ready_.clear();
      in_epoch_ = index_t(k % long(batches_per_epoch()));
    }
    cv_.notify_all();
  }
  // Within one epoch: 0 after its last batch (then the stream moves on to the next epoch).
  index_t next(std::vector<float>& images, std::vector<std::int32_t>& labels) {
    while (in_epoch_ < batches_per_epoch()) {
      ++in_epoch_;
      if (const index_t n = take(images, labels)) return n;
    }
    in_epoch_ = 0;
    return 0;
  }

 private:
  index_t take(std::vector<float>& images, std::vector<std::int32_t>& labels) {
    Batch b;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return ready_.count(consumed_) > 0; });
      b = std::move(ready_[consumed_]);
      ++consumed_;
      ready_.erase(ready_.begin(), ready_.lower_bound(consumed_));  // and any left from before a seek
    }
    cv_.notify_all();
    if (b.error) std::rethrow_exception(b.error);
    images = std::move(b.images);
    labels = std::move(b.labels);
    return index_t(labels.size());
  }

  struct Batch {
    std::vector<float> images;
    std::vector<std::int32_t> labels;
    std::exception_ptr error;
  };

  // The sample order of epoch e (cached; computed under the lock).
  const std::vector<index_t>& order(long e) {
    auto it = orders_.find(e);
    if (it != orders_.end()) return it->second;
    std::vector<index_t> o(f_.samples.size());
    std::iota(o.begin(), o.end(), index_t{0});
    if (shuffle_) {
      Rng rng(seed_ ^ (0x9e3779b97f4a7c15ULL * std::uint64_t(e + 1)));
      for (std::size_t i = o.size(); i > 1; --i) std::swap(o[i - 1], o[rng.below(i)]);
    }
    while (orders_.size() > 2) orders_.erase(orders_.begin());  // workers stay within a batch or two of each other
    return orders_.emplace(e, std::move(o)).first->second;
  }

  void work() {
    for (;;) {
      long k;
      std::vector<index_t> ids;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || assigned_ < consumed_ + prefetch_; });
        if (stop_) return;
        k = assigned_++;
        const long e = k / long(batches_per_epoch()), b = k % long(batches_per_epoch());
        const auto& ord = order(e);
        const index_t lo = index_t(b) * batch_, hi = std::min<index_t>(lo + batch_, index_t(ord.size()));
        ids.assign(ord.begin() + lo, ord.begin() + hi);
      }
      Batch out = make_batch(k, ids);
      {
        std::lock_guard lock(mu_);
        ready_[k] = std::move(out);
      }
      cv_.notify_all();
    }
  }

  Batch make_batch(long k, const std::vector<index_t>& ids) {
    Batch out;
    const index_t E = image_numel(), C = o_.transform.channels;
    std::vector<std::uint8_t> planar(static_cast<std::size_t>(E));
    out.images.reserve(ids.size() * std::size_t(E));
    try {
      for (std::size_t j = 0; j < ids.size(); ++j) {
        const auto& s = f_.samples[std::size_t(ids[j])];
        Rng rng(seed_ + 0x632be59bd9b4e019ULL * std::uint64_t(k * batch_ + index_t(j) + 1));
        Image img;
        try {
          img = preprocess(read_image(s.path, int(C)), o_.transform, &rng);
        } catch (const Error& e) {
          if (o_.on_corrupt == OnCorrupt::fail)
            fail(e.what(), " (pass --on-corrupt skip / OnCorrupt::skip to leave such files out)");
          std::lock_guard lock(mu_);
          if (reported_.insert(s.path.string()).second) (o_.report ? o_.report : detail::default_report)(s.path, e.what());
          continue;
        }
        to_planar(img, planar.data());
        const std::size_t at = out.images.size();
        out.images.resize(at + std::size_t(E));
        for (index_t c = 0; c < C; ++c) {
          const float scale = float(1.0 / (255.0 * o_.norm.std_of(c))), shift = float(o_.norm.mean_of(c) / o_.norm.std_of(c));
          const index_t plane = E / C;
          for (index_t i = 0; i < plane; ++i)
            out.images[at + std::size_t(c * plane + i)] = float(planar[std::size_t(c * plane + i)]) * scale - shift;
        }
        out.labels.push_back(s.label);
      }
    } catch (...) {
      out.error = std::current_exception();
    }
    return out;
  }

  ImageFolder f_;
  index_t batch_;
  bool shuffle_;
  std::uint64_t seed_;
  FolderOptions o_;
  long prefetch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<long, Batch> ready_;
  std::map<long, std::vector<index_t>> orders_;
  std::set<std::string> reported_;
  long assigned_ = 0, consumed_ = 0;
  index_t in_epoch_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace seqswap::io
