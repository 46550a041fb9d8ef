// The one training loop (teacher training, A-ViT fine-tuning, every distillation stage), the
// training step and evaluation for image classifiers, and the progress meter.
#pragma once
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/train/adamw.hpp"
#include "seqswap/train/device_step.hpp"
#include "seqswap/train/comm.hpp"
#include "seqswap/io/dataset.hpp"
#include "seqswap/io/progress.hpp"
#include "seqswap/train/loss.hpp"
#include "seqswap/train/schedule.hpp"

namespace seqswap::train {

struct StepOptions {
  double label_smoothing = 0.1;
  double clip_norm = 1.0;  // global gradient norm; 0 = off
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

// Forward, cross-entropy and backward on a batch: the gradients ACCUMULATE into the model's
// grads (no optimizer step). images (B, C*S*S) normalised; labels (B).
template <class M, class T = typename M::T>
StepResult classify_step(M& model, const T* images, const std::int32_t* labels, index_t B, index_t image_numel,
                         double label_smoothing, std::vector<T>& dlogits_scratch) {
  auto logits = model.forward(images, B, image_numel);
  const index_t C = logits.dim;
  dlogits_scratch.resize(static_cast<std::size_t>(B * C));
  const auto r = cross_entropy(logits.data, labels, B, C, label_smoothing, dlogits_scratch.data());
  model.backward(dlogits_scratch.data());
  return {r.loss, r.correct, 0.0};
}

// One optimizer step on a batch: forward, loss, backward, clip, AdamW at learning rate `lr`.
template <class M, class T = typename M::T>
StepResult train_step(M& model, AdamW<T>& opt, const T* images, const std::int32_t* labels,
                      index_t B, index_t image_numel, double lr, const StepOptions& o,
                      std::vector<T>& dlogits_scratch) {
  model.zero_grad();
  auto r = classify_step(model, images, labels, B, image_numel, o.label_smoothing, dlogits_scratch);
  r.grad_norm = clip_and_step(model, opt, lr, o.clip_norm);
  return r;
}

struct EvalResult {
  double loss = 0;      // mean cross-entropy (no smoothing)
  double accuracy = 0;  // fraction correct
  index_t count = 0;
  double ms_per_image = 0;  // forward wall time (batch `batch`, this machine, this run)
};

// Runs `model` over one epoch of `loader` (io::BatchLoader or io::ImageFolderLoader, in their
// fixed order, no augmentation): loss, accuracy, forward time; after_batch(n) (optional) sees
// each batch's state right after its forward. A device model (on_device<M>) evaluates on the
// device: each batch goes up and only its logits come back (the forward time includes both).
template <class M, class Source, class After = std::nullptr_t>
EvalResult evaluate_source(M& model, Source& loader, After after_batch = nullptr) {
  using T = typename M::T;
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::vector<T> x, host_logits;
  Buffer<T, std::conditional_t<on_device<M>(), backend::Cuda, backend::Host>> device_x;
  EvalResult e;
  double loss_sum = 0, secs = 0;
  index_t correct = 0;
  while (index_t n = loader.next(images, labels)) {
    x.assign(images.begin(), images.begin() + std::ptrdiff_t(n * loader.image_numel()));
    const auto t0 = std::chrono::steady_clock::now();
    const T* z = nullptr;  // the logits on the host
    index_t C = 0;
    if constexpr (on_device<M>()) {
      device_x.upload(x.data(), x.size());
      auto logits = model.forward(device_x.data(), n, loader.image_numel());
      C = logits.dim;
      host_logits.resize(static_cast<std::size_t>(n * C));
      Buffer<T, backend::Cuda>::download_from(logits.data, host_logits.data(), host_logits.size());
      z = host_logits.data();
    } else {
      auto logits = model.forward(x.data(), n, loader.image_numel());
      C = logits.dim;
      z = logits.data;
    }
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto r = cross_entropy<T>(z, labels.data(), n, C, 0.0, nullptr);
    loss_sum += r.loss * double(n);
    correct += r.correct;
    e.count += n;
    if constexpr (!std::is_same_v<After, std::nullptr_t>) after_batch(n);
  }
  check(e.count > 0, "evaluate: no images to evaluate");
  e.loss = loss_sum / double(e.count);
  e.accuracy = double(correct) / double(e.count);
  e.ms_per_image = 1e3 * secs / double(e.count);
  return e;
}

// The same over an in-memory dataset, in batches of `batch`, normalised with `norm` (default:
// the dataset's own).
template <class M, class After = std::nullptr_t>
EvalResult evaluate(M& model, const io::ImageDataset& data, index_t batch = 256, std::optional<io::Normalize> norm = std::nullopt,
                    After after_batch = nullptr) {
  check(data.count > 0, "evaluate: the dataset '", data.name, "' is empty");
  io::BatchLoader loader(data, batch, /*shuffle=*/false, 0, norm);
  return evaluate_source(model, loader, std::move(after_batch));
}

// evaluate() over R ranks: rank r runs batches r, r + R, ... of the fixed order and the loss,
// correct count and image count are summed over the ranks, so every rank returns the whole
// set's loss and accuracy (the same as one process, up to the summation order of the loss) in
// about 1/R of the time. ms_per_image is this rank's. comm == nullptr or one rank: evaluate().
template <class M>
EvalResult evaluate_split(M& model, const io::ImageDataset& data, Communicator* comm, index_t batch = 256) {
  const int R = comm ? comm->size() : 1;
  if (R == 1) return evaluate(model, data, batch);
  check(batch > 0, "evaluate: expected batch > 0, found ", batch);
  const index_t batches = (data.count + batch - 1) / batch;
  io::ImageDataset mine = data;  // this rank's batches, in order
  mine.pixels.clear();
  mine.labels.clear();
  const index_t E = data.image_numel();
  for (index_t b = comm->rank(); b < batches; b += R) {
    const index_t lo = b * batch, hi = std::min(data.count, lo + batch);
    mine.pixels.insert(mine.pixels.end(), data.pixels.begin() + lo * E, data.pixels.begin() + hi * E);
    mine.labels.insert(mine.labels.end(), data.labels.begin() + lo, data.labels.begin() + hi);
  }
  mine.count = index_t(mine.labels.size());
  EvalResult e;
  double sums[3] = {0, 0, 0};  // loss * count, correct, count
  if (mine.count > 0) {
    e = evaluate(model, mine, batch);
    sums[0] = e.loss * double(e.count), sums[1] = e.accuracy * double(e.count), sums[2] = double(e.count);
  }
  comm->allreduce_sum(sums, 3);
  check(sums[2] > 0, "evaluate: the dataset '", data.name, "' is empty");
  e.loss = sums[0] / sums[2];
  e.accuracy = std::round(sums[1]) / sums[2];
  e.count = index_t(sums[2]);
  return e;
}

// What a halting model does on a dataset: accuracy, and how many tokens each block sees.
struct HaltingEval : EvalResult {
  std::vector<double> keep;  // (L) mean fraction of patch tokens entering block l
  double mean_keep = 0;      // mean over layers
  double ponder = 0;         // mean (layers run + remainder) of the patch tokens
};

// HV: a model::HaltingVit (forward, halter()); one epoch of `loader` (as evaluate_source).
template <class HV, class Source>
HaltingEval evaluate_halting_source(HV& hv, Source& loader) {
  HaltingEval e;
  double ponder_sum = 0;
  static_cast<EvalResult&>(e) = evaluate_source(hv, loader, [&](index_t n) {
    const auto& h = hv.halter();
    e.keep.resize(static_cast<std::size_t>(h.layers()), 0.0);
    for (index_t l = 0; l < h.layers(); ++l) e.keep[l] += h.keep_ratio(l) * double(n);
    ponder_sum += h.ponder() * double(n);
  });
  for (auto& k : e.keep) k /= double(e.count);
  for (double k : e.keep) e.mean_keep += k / double(e.keep.size());
  e.ponder = ponder_sum / double(e.count);
  return e;
}
// The same over an in-memory dataset.
template <class HV>
HaltingEval evaluate_halting(HV& hv, const io::ImageDataset& data, index_t batch = 256, std::optional<io::Normalize> norm = std::nullopt) {
  check(data.count > 0, "evaluate: the dataset '", data.name, "' is empty");
  io::BatchLoader loader(data, batch, /*shuffle=*/false, 0, norm);
  return evaluate_halting_source(hv, loader);
}

// The loop every trainer shares: shuffled batches cycling over epochs, AdamW (decay mask from
// the model's tensors) at a warm-up + cosine learning rate, the global gradient-norm clip, an
// optional per-element trainable mask (what is 0 neither moves nor counts in the clip), a
// progress line with ETA, and the mean loss over the last 10% of the steps.
struct LoopOptions {
  long steps = 0;              // optimizer steps (the budget)
  index_t batch = 64;
  double lr = 1e-3;
  double min_lr = 1e-5;
  long warmup_steps = 0;
  double weight_decay = 0.05;
  double clip_norm = 1.0;      // 0 = off
  std::uint64_t seed = 0;      // batch order (and augmentation)
  // Resume at this step: the loop draws (and discards) the first start_step batches, so the
  // batch order and augmentation continue exactly, and the schedule and AdamW's step count
  // continue from here. The caller restores the parameters and AdamW moments (m, v) saved at
  // that step; then the run equals an uninterrupted one bit for bit.
  long start_step = 0;
  io::Augment augment{};
  std::string label = "train";  // progress label
  double progress_interval_s = 10.0;
  bool quiet = false;
};

struct LoopResult {
  long steps = 0;
  double seconds = 0;
  double final_loss = 0;  // mean over the last 10% of the steps
  double comm_seconds = 0;  // of `seconds`, this rank's time in the gradient and loss all-reduces
};

// The first step of the "last 10%" tail that LoopResult::final_loss averages.
inline long tail_start(long steps) { return steps - std::max(1L, steps / 10); }

// The first parameter tensor of `model` holding a non-finite value in `v` (an arena-sized
// view: params or grads), as "name[k] = nan"; "" when every value is finite.
template <class M, class V>
std::string first_non_finite(const M& model, const V& v) {
  for (std::size_t i = 0; i < v.size; ++i) {
    if (std::isfinite(double(v.data[i]))) continue;
    for (const auto& info : model.params_info())
      if (i >= info.offset && i < info.offset + info.count)
        return info.name + "[" + std::to_string(i - info.offset) + "] = " + std::to_string(double(v.data[i]));
    return "element " + std::to_string(i);
  }
  return "";
}

// first_non_finite for any model: a device arena is reduced on the device first and copied to
// the host only when it holds a non-finite value (to name it).
template <class M, class V>
std::string first_non_finite_any(const M& model, const V& v) {
  if constexpr (on_device<M>()) {
    if (std::isfinite(ops::device::sum_squares(v.data, static_cast<index_t>(v.size)))) return "";
    using T = typename M::T;
    std::vector<T> host(v.size);
    Buffer<T, backend::Cuda>::download_from(v.data, host.data(), host.size());
    return first_non_finite(model, ParamsView<const T, backend::Host>{host.data(), host.size()});
  } else {
    return first_non_finite(model, v);
  }
}

// What a trainer adds to the loop (all optional).
struct LoopHooks {
  const std::uint8_t* mask = nullptr;       // one per parameter (host memory): 0 freezes it (and leaves it out of the clip)
  io::Progress* progress = nullptr;              // an outer meter (else the loop's own, labelled o.label)
  std::function<std::string()> note;         // appended to the progress line
  std::function<void(long)> after_step;      // after optimizer step s (evaluation, checkpoints)
  // Data parallel (train/comm.hpp; nullptr or one rank = single process): every rank draws the
  // same global batch, runs `step` on its slice (batch_slice) and the gradients and the loss,
  // each weighted by the slice's share of the batch, are summed over the ranks, so every rank
  // takes the same optimizer step on the global batch's mean gradient. Progress prints on rank 0.
  Communicator* comm = nullptr;
};

// Where the loop's batches come from: io::BatchLoader (an in-memory dataset) or
// io::ImageFolderLoader (images decoded by worker threads). Batch k must be a function of the
// source's seed and k alone (every rank draws the same global batch).
template <class S>
concept BatchSource = requires(S& s, std::vector<float>& images, std::vector<std::int32_t>& labels) {
  { s.next_cycling(images, labels) } -> std::convertible_to<index_t>;
  { s.image_numel() } -> std::convertible_to<index_t>;
};

// step(s, images, labels, n) -> loss: forward and backward for step s on a batch of n images
// (B, C*S*S, normalised), its gradients ACCUMULATED into the model's zeroed grads. The batches
// come from `loader` (resuming at start_step seeks there when the loader can, else draws and
// discards the batches before it). LoopOptions::batch and ::augment are the loader's business.
template <class M, BatchSource Source, class Step>
LoopResult run_loop(M& model, Source& loader, const LoopOptions& o, Step&& step, const LoopHooks& h = {}) {
  using T = typename M::T;
  check(o.steps >= 0, o.label, ": expected steps >= 0, found ", o.steps);
  check(o.start_step >= 0 && o.start_step <= o.steps, o.label, ": expected a start step in [0, ", o.steps,
        "], found ", o.start_step);
  AdamW<T> opt({.lr = o.lr, .weight_decay = o.weight_decay}, model.params_info(), model.param_count());
  opt.set_steps(o.start_step);
  // A device model (on_device<M>) keeps its arena on the device: the batches are uploaded by
  // `step`, and the checks, the clip and AdamW run there (its decay mask uploaded once).
  constexpr bool device = on_device<M>();
  Buffer<std::uint8_t, std::conditional_t<device, backend::Cuda, backend::Host>> decay, trainable;
  if constexpr (device) {
    check(!h.comm || h.comm->size() == 1, o.label, ": data-parallel training of a device model is not supported yet");
    decay.upload(opt.decay_mask().data(), opt.decay_mask().size());
    if (h.mask) trainable.upload(h.mask, model.param_count());  // a host mask, copied once
  }
  const CosineSchedule sched{o.lr, o.min_lr, o.warmup_steps, o.steps};
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  const long tail_from = tail_start(o.steps);
  long tail_n = 0, seen = 0;
  double tail_loss = 0, comm_seconds = 0;
  const int ranks = h.comm ? h.comm->size() : 1, rank = h.comm ? h.comm->rank() : 0;
  io::Progress local(o.label, o.steps, o.progress_interval_s, o.quiet || h.progress != nullptr || rank != 0);
  if constexpr (requires { loader.seek(o.start_step); })
    loader.seek(o.start_step);  // a stream that can start at any batch (io::ImageFolderLoader)
  else
    for (long s = 0; s < o.start_step; ++s) loader.next_cycling(images, labels);
  local.set_base(o.start_step);
  const index_t E = loader.image_numel();
  for (long s = o.start_step; s < o.steps; ++s) {
    const index_t n = loader.next_cycling(images, labels);
    model.zero_grad();
    double loss = 0;
    if (ranks == 1) {
      loss = step(s, images.data(), labels.data(), n);
    } else {
      const auto [lo, hi] = batch_slice(n, rank, ranks);
      const double share = double(hi - lo) / double(n);
      if (hi > lo) loss = share * step(s, images.data() + lo * E, labels.data() + lo, index_t(hi - lo));
      auto g = model.grads();
      if (share != 1.0)
        for (std::size_t i = 0; i < g.size; ++i) g.data[i] = T(double(g.data[i]) * share);
      const auto t0 = std::chrono::steady_clock::now();
      h.comm->allreduce_sum(g.data, g.size);
      h.comm->allreduce_sum(&loss, 1);  // NaN on any rank is NaN on all: every rank stops alike
      comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    // A non-finite loss, gradient or parameter stops the run here, before anything is saved
    // from it: the caller's last checkpoint stays the last good one.
    check(std::isfinite(loss), o.label, ": step ", s + 1, " of ", o.steps, ": the loss is not finite (", loss,
          "); check the learning rate and the data");
    if (const auto bad = first_non_finite_any(model, model.grads()); !bad.empty())
      fail(o.label, ": step ", s + 1, " of ", o.steps, ": a gradient is not finite: ", bad);
    if constexpr (device) {
      const std::uint8_t* mask = h.mask ? trainable.data() : nullptr;
      auto g = model.grads();
      if (mask) ops::device::copy_kept_rows(g.data, g.data, static_cast<index_t>(g.size), index_t(1), mask);
      clip_and_step_device(model, opt, decay.data(), sched.at(s), o.clip_norm, mask);
    } else {
      if (h.mask) {
        auto g = model.grads();
        for (std::size_t i = 0; i < g.size; ++i)
          if (!h.mask[i]) g.data[i] = T(0);
      }
      clip_and_step(model, opt, sched.at(s), o.clip_norm, h.mask);
    }
    if (const auto bad = first_non_finite_any(model, model.params()); !bad.empty())
      fail(o.label, ": step ", s + 1, " of ", o.steps, ": the optimizer step left a parameter not finite: ", bad,
           " (learning rate ", sched.at(s), ", weight decay ", o.weight_decay, ")");
    if (s >= tail_from) {
      tail_loss += loss;
      ++tail_n;
    }
    seen += n;
    char extra[64];
    std::snprintf(extra, sizeof extra, "loss %.5f", loss);
    (h.progress ? h.progress : &local)->update(s + 1, seen, h.note ? std::string(extra) + " " + h.note() : extra);
    if (h.after_step) h.after_step(s);
  }
  LoopResult r;
  r.steps = o.steps;
  r.seconds = local.elapsed();
  r.comm_seconds = comm_seconds;
  if (tail_n > 0) r.final_loss = tail_loss / double(tail_n);
  return r;
}

// The same over an in-memory dataset: shuffled (o.seed) batches of o.batch with o.augment,
// normalised with the dataset's own normalisation.
template <class M, class Step>
LoopResult run_loop(M& model, const io::ImageDataset& data, const LoopOptions& o, Step&& step, const LoopHooks& h = {}) {
  io::BatchLoader loader(data, o.batch, /*shuffle=*/true, o.seed, std::nullopt, o.augment);
  return run_loop(model, loader, o, std::forward<Step>(step), h);
}

}  // namespace seqswap::train
