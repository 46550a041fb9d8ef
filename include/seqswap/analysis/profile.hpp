// The sparsity profile of a ViT over a dataset: forward every batch, stream every attention
// block's maps into a SparsityAccumulator. Shared by sparsity_profile and the study drivers.
#pragma once
#include <string>

#include "seqswap/analysis/sparsity_report.hpp"
#include "seqswap/io/plot.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/io/dataset.hpp"
#include "seqswap/io/progress.hpp"

namespace seqswap::analysis {

// `data` in fixed order, `batch` images per forward; `progress` (optional) gets one update per
// batch. The grid side is taken from the config when the options leave it at 0.
template <class M>
SparsityProfile profile_model(M& vit, const model::VitConfig& cfg, const io::ImageDataset& data,
                              index_t batch, SparsityOptions opt = {},
                              io::Progress* progress = nullptr) {
  if (opt.grid_side == 0) opt.grid_side = cfg.image_size / cfg.patch;
  SparsityAccumulator acc(cfg.depth, cfg.heads, opt);
  io::BatchLoader loader(data, batch, /*shuffle=*/false, 0);
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

// s_ent_by_layer.png (mean ± std per layer, both variants) and s_ent_heads.png (L×H heat-map),
// with their data files and plots.gp in `dir`.
inline void write_profile_plots(const std::filesystem::path& dir, const SparsityProfile& p,
                                const std::string& who) {
  std::string layers = "# layer  s_ent_mean s_ent_std (all keys)  s_ent_mean s_ent_std (drop CLS)\n";
  std::string heads = "# S_ent mean (all keys, all rows): one line per layer, one column per head\n";
  for (index_t l = 0; l < p.layers; ++l) {
    const auto& a = p.layer_summary(l, Metric::entropy_sparsity, Variant::all_keys);
    const auto& d = p.layer_summary(l, Metric::entropy_sparsity, Variant::drop_cls);
    layers += std::to_string(l) + " " + io::plot_number(a.mean) + " " + io::plot_number(a.std) + " " +
              io::plot_number(d.mean) + " " + io::plot_number(d.std) + "\n";
    for (index_t h = 0; h < p.heads; ++h)
      heads += (h ? " " : "") + io::plot_number(p.at(l, h, Metric::entropy_sparsity).mean);
    heads += "\n";
  }
  io::write_file_atomic(dir / "s_ent_layers.dat", layers);
  io::write_file_atomic(dir / "s_ent_heads.dat", heads);
  io::run_gnuplot(dir, "plots.gp", std::string(R"(# Run from this folder: gnuplot plots.gp
set terminal pngcairo size 900,520 noenhanced
set output 's_ent_by_layer.png'
set title 'Attention sparsity per layer: S_ent = 1 - normalised entropy (mean +- std over heads, queries, images)'
set xlabel 'layer'
set ylabel 'S_ent'
set xtics 1
set key top left
set offsets 0.5, 0.5, 0, 0
plot 's_ent_layers.dat' using 1:2:3 with yerrorlines pt 7 title 'all keys', \
     '' using ($1+0.08):4:5 with yerrorlines pt 5 title 'drop CLS key, renormalised'
set output 's_ent_heads.png'
set title 'S_ent per layer and head (mean over queries and images)'
set xlabel 'head'
set ylabel 'layer'
set ytics 1
set offsets 0, 0, 0, 0
set autoscale fix
set palette rgbformulae 21,22,23
set cblabel 'S_ent'
plot 's_ent_heads.dat' matrix with image notitle
)"), who);
}

}  // namespace seqswap::analysis
