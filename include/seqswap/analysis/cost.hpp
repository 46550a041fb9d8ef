// What a model costs: forward FLOPs per image from every layer's own count (Layer::flops),
// scaled per block by a halting teacher's keep ratios, and a timing rig for one mixer that the
// benchmarks and the study share (the same initialisation, inputs and warm-up everywhere).
#pragma once
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "seqswap/analysis/stats.hpp"
#include "seqswap/backend/host.hpp"
#include "seqswap/core/rng.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

namespace seqswap::analysis {

// Forward FLOPs (2 per multiply-add) of one image through `vit` (any VitNet: Repeat, Chain or
// Halting body). keep (optional, one per block): the fraction of patch tokens entering block l
// under halting; block l then runs on n = 1 + keep·(N − 1) tokens (CLS always), its cost
// interpolated linearly between the two whole token counts around n.
template <class Net>
double vit_flops_per_image(const Net& vit, const model::VitConfig& cfg, const std::vector<double>& keep = {}) {
  check(keep.empty() || keep.size() == vit.depth(), "vit_flops_per_image: expected ", vit.depth(),
        " keep ratios, found ", keep.size());
  const index_t N = cfg.tokens(), D = cfg.width;
  const Layout image = Layout::dense(1, 1, cfg.channels * cfg.image_size * cfg.image_size);
  const Layout tokens = Layout::dense(1, N, D);
  double f = vit.patch_embed().flops(image) + vit.cls_pos_embed().flops(Layout::dense(1, cfg.num_patches(), D));
  for (std::size_t l = 0; l < vit.depth(); ++l) {
    const double n = keep.empty() ? double(N) : 1.0 + keep[l] * double(N - 1);
    const auto lo = static_cast<index_t>(std::floor(n));
    const double w = n - double(lo);
    vit.visit_block(l, [&](const auto& block, std::size_t) {
      f += (1.0 - w) * block.flops(Layout::dense(1, lo, D));
      if (w > 0) f += w * block.flops(Layout::dense(1, lo + 1, D));
    });
  }
  return f + vit.norm().flops(tokens) + vit.head().flops(tokens);
}

// One mixer as a model on B sequences of N tokens of width D: parameters initialised as in
// training (SSM decays, Hedgehog identity), random inputs, one untimed step first so that
// every context buffer is sized and the timed calls measure the steady state.
template <class M>
class MixerRig {
 public:
  using T = typename M::scalar_type;
  MixerRig(M mixer, index_t batch, index_t tokens, index_t dim, std::uint64_t seed = 0)
      : m_(std::move(mixer)), layout_(Layout::dense(batch, tokens, dim)) {
    Layout out;
    m_.net().plan(layout_, out);  // a clear error for sizes the mixer cannot take
    m_.init(seed);
    Rng r(seed + 1);
    x_.resize(layout_.size());
    dy_.resize(layout_.size());
    dx_.resize(layout_.size());
    for (auto& v : x_) v = T(r.normal());
    for (auto& v : dy_) v = T(r.normal());
  }
  const model::Model<M>& model() const { return m_; }
  const Layout& layout() const { return layout_; }

  // One forward (and backward); returns the output's data pointer (to defeat dead-code removal).
  const T* forward() { return m_.forward(view_of<const T>(x_.data(), layout_)).data; }
  const T* forward_backward() {
    const T* y = forward();
    m_.backward(dy_.data(), dx_.data());
    return y;
  }
  // Median milliseconds of `reps` forwards (after one untimed warm-up).
  double forward_ms(int reps) {
    return median_ms([&] { forward(); }, 1, reps);
  }

 private:
  model::Model<M> m_;
  Layout layout_;
  std::vector<T> x_, dy_, dx_;
};

// The machine a measured latency belongs to: the CPU's model name, family and model (Linux
// /proc/cpuinfo; one name can cover several generations) and the threads the host backend runs
// with, e.g. "AMD EPYC (family 26, model 2), 2 threads". Latencies cached under one machine's
// name are not reused on another.
inline std::string machine_name() {
  std::string name = "unknown CPU", family, model;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const auto value = [&] {
      const auto b = line.find_first_not_of(' ', colon + 1);
      return b == std::string::npos ? std::string() : line.substr(b);
    };
    const std::string key = line.substr(0, line.find_last_not_of(" \t", colon - 1) + 1);
    if (key == "model name" && name == "unknown CPU") name = value();
    else if (key == "cpu family" && family.empty()) family = value();
    else if (key == "model" && model.empty()) model = value();
    if (name != "unknown CPU" && !family.empty() && !model.empty()) break;
  }
  if (!family.empty()) name += " (family " + family + ", model " + model + ")";
  const int threads = host::max_threads();
  return name + ", " + std::to_string(threads) + (threads == 1 ? " thread" : " threads");
}

}  // namespace seqswap::analysis
