// The sparsity profile of a ViT over a dataset: forward every batch, stream every attention
// block's maps into a SparsityAccumulator. Shared by sparsity_profile and the study drivers.
#pragma once
#include <string>

#include "seqswap/analysis/sparsity.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/data.hpp"
#include "seqswap/train/loop.hpp"

namespace seqswap::analysis {

// `data` in fixed order, `batch` images per forward; `progress` (optional) gets one update per
// batch. The grid side is taken from the config when the options leave it at 0.
template <class M>
SparsityProfile profile_model(M& vit, const model::VitConfig& cfg, const train::ImageDataset& data,
                              index_t batch, SparsityOptions opt = {},
                              train::Progress* progress = nullptr) {
  if (opt.grid_side == 0) opt.grid_side = cfg.image_size / cfg.patch;
  SparsityAccumulator acc(cfg.depth, cfg.heads, opt);
  train::BatchLoader loader(data, batch, /*shuffle=*/false, 0);
  std::vector<float> x;
  std::vector<std::int32_t> labels;
  long done = 0, batches = 0;
  while (index_t n = loader.next(x, labels)) {
    vit.forward(x.data(), n, data.image_numel());
    acc.add_model(vit);
    done += long(n);
    if (progress) progress->update(++batches, done, "images " + std::to_string(done));
  }
  return acc.profile();
}

// Per-layer score for replacement plans: mean S_ent over heads and rows (higher = sparser);
// layers that were not measured get NaN.
inline std::vector<double> layer_scores(const SparsityProfile& p, Metric m = Metric::entropy_sparsity,
                                        Variant v = Variant::all_keys) {
  std::vector<double> s(static_cast<std::size_t>(p.layers));
  for (index_t l = 0; l < p.layers; ++l) s[std::size_t(l)] = direction(m) * p.layer_summary(l, m, v).mean;
  return s;
}

}  // namespace seqswap::analysis
