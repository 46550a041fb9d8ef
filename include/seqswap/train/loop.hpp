// The training step and evaluation for image classifiers (teacher training and stage 2).
#pragma once
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "seqswap/train/adamw.hpp"
#include "seqswap/train/data.hpp"
#include "seqswap/train/loss.hpp"

namespace seqswap::train {

struct StepOptions {
  double label_smoothing = 0.1;
  double clip_norm = 1.0;  // global gradient norm; 0 = off
};

struct StepResult {
  double loss = 0;
  index_t correct = 0;
  double grad_norm = 0;
};

// After backward: clips the global gradient norm (0 = off) and takes one AdamW step at `lr`
// (only where mask is 1, when given). Returns the norm before clipping.
template <class M, class T = typename M::T>
double clip_and_step(M& model, AdamW<T>& opt, double lr, double clip_norm, const std::uint8_t* mask = nullptr) {
  auto g = model.grads();
  const double norm = clip_grad_norm(g.data, g.size, clip_norm);
  auto p = model.params();
  opt.step(p.data, g.data, model.adam_m().data(), model.adam_v().data(), p.size, lr, mask);
  return norm;
}

// One optimizer step on a batch: forward, loss, backward, clip, AdamW at learning rate `lr`.
// images (B, C*S*S) normalised; labels (B).
template <class M, class T = typename M::T>
StepResult train_step(M& model, AdamW<T>& opt, const T* images, const std::int32_t* labels,
                      index_t B, index_t image_numel, double lr, const StepOptions& o,
                      std::vector<T>& dlogits_scratch) {
  auto logits = model.forward(images, B, image_numel);
  const index_t C = logits.dim;
  dlogits_scratch.resize(static_cast<std::size_t>(B * C));
  const auto r = cross_entropy(logits.data, labels, B, C, o.label_smoothing, dlogits_scratch.data());
  model.zero_grad();
  model.backward(dlogits_scratch.data());
  return {r.loss, r.correct, clip_and_step(model, opt, lr, o.clip_norm)};
}

struct EvalResult {
  double loss = 0;      // mean cross-entropy (no smoothing)
  double accuracy = 0;  // fraction correct
  index_t count = 0;
};

// Accuracy and loss of `model` on `data` (no augmentation, fixed order).
template <class M>
EvalResult evaluate(M& model, const ImageDataset& data, index_t batch = 256, Normalize norm = {}) {
  using T = typename M::T;
  BatchLoader loader(data, batch, /*shuffle=*/false, 0, norm);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::vector<T> x;
  EvalResult e;
  double loss_sum = 0;
  index_t correct = 0;
  while (index_t n = loader.next(images, labels)) {
    x.assign(images.begin(), images.end());
    auto logits = model.forward(x.data(), n, data.image_numel());
    const auto r = cross_entropy<T>(logits.data, labels.data(), n, logits.dim, 0.0, nullptr);
    loss_sum += r.loss * double(n);
    correct += r.correct;
    e.count += n;
  }
  e.loss = loss_sum / double(e.count);
  e.accuracy = double(correct) / double(e.count);
  return e;
}

// A one-line progress meter: items/s and ETA, at most every `interval` seconds.
class Progress {
 public:
  Progress(std::string label, long total, double interval_s = 5.0, bool quiet = false)
      : label_(std::move(label)), total_(total), interval_(interval_s), quiet_(quiet),
        start_(clock::now()), last_(start_) {}
  // done: units finished so far; items: e.g. images processed so far (for the rate).
  void update(long done, long items, const std::string& extra = "") {
    const auto now = clock::now();
    if (quiet_ || (std::chrono::duration<double>(now - last_).count() < interval_ && done < total_))
      return;
    last_ = now;
    const double el = elapsed();
    const double rate = el > 0 ? double(items) / el : 0;
    const double eta = done > 0 ? el * double(total_ - done) / double(done) : 0;
    std::fprintf(stderr, "%s %ld/%ld  %.0f img/s  elapsed %s  ETA %s  %s\n", label_.c_str(), done,
                 total_, rate, hms(el).c_str(), hms(eta).c_str(), extra.c_str());
  }
  double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  static std::string hms(double s) {
    char buf[32];
    const long t = long(s + 0.5);
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    return buf;
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  long total_;
  double interval_;
  bool quiet_;
  clock::time_point start_, last_;
};

}  // namespace seqswap::train
