// A model of what replacing one layer costs: the accuracy drop d(l, m) of replacing layer l's
// attention with mixer m, fitted to measured single-layer drops, with its uncertainty and its
// validation on held-out (layer, mixer) pairs (issue 18; docs/planner.md, "Predictors").
//
// The study's single-layer sweeps show one structure across mixers: the layers that are costly
// to replace are costly for every mixer, and a mixer that loses less loses less everywhere (on the
// shipped teacher layer 1 costs 0.025 with minGRU and the LSTM and 0.012 with linear attention,
// layer 7 0.003 and 0.001). So the model is a product
//
//     d(l, m) = s_m · e_l,
//
// a per-layer effect e_l times a per-mixer scale s_m (a rank-1 factorisation of the layer × mixer
// table with missing cells), fitted by alternating weighted least squares on the measured means
// (weights: seeds per cell), normalised so that the scales of the measured mixers have mean 1.
// A mixer the sweep never ran needs only a few probe layers to get its scale; a layer no mixer
// was measured in gets its effect from a per-layer feature (e.g. the layer's 3×3 local attention
// mass, which the study found predictive), e_l ≈ a + b·z_l, fitted on the measured layers.
//
// Uncertainty: σ² = Σ r² / (cells − parameters), r the residual of a cell's mean; a prediction's
// standard error adds the uncertainty of s_m and e_l to first order,
//     se² = σ² + e_l²·σ²/Σ_{l'∈L(m)} e_l'² + s_m²·σ²/Σ_{m'∈M(l)} s_m'²,
// (for a feature-predicted layer, s_m²·σ_z² with σ_z the feature fit's residual instead of the
// last term). Validation refits without the held-out cells and compares the prediction with the
// held-out measurement: mean absolute error, against the baseline a user would use without the
// model, and how often the measurement falls inside prediction ± 1.96 se.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/analysis/stats.hpp"
#include "seqswap/core/error.hpp"

namespace seqswap::analysis {

// One measured cell: the mean single-layer drop of `mixer` in `layer` over `n` seeds.
struct DropCell {
  std::size_t layer = 0;
  std::string mixer;
  double drop = 0;
  std::size_t n = 1;
};

struct DropPrediction {
  double drop = 0;
  double se = std::numeric_limits<double>::quiet_NaN();  // NaN when the fit has no residual freedom
  bool measured = false;  // the cell itself was in the fit
};

class DropModel {
 public:
  // Fits the model for `layers` layers. `layer_feature`, when given, holds one number per layer
  // (finite) from which layers without measurements get their effect (needs >= 3 measured layers).
  static DropModel fit(std::size_t layers, std::span<const DropCell> cells, std::span<const double> layer_feature = {}) {
    check(layers > 0, "drop model: expected at least one layer, found none");
    check(!cells.empty(), "drop model: expected at least one measured (layer, mixer) drop, found none");
    check(layer_feature.empty() || layer_feature.size() == layers, "drop model: expected one feature per layer (",
          layers, "), found ", layer_feature.size());
    for (double z : layer_feature) check(std::isfinite(z), "drop model: expected finite layer features, found ", z);
    DropModel m;
    m.e_.assign(layers, 0.0);
    m.layer_seen_.assign(layers, false);
    m.feature_.assign(layer_feature.begin(), layer_feature.end());
    for (const auto& c : cells) {
      check(c.layer < layers, "drop model: a measurement of layer ", c.layer, " in a model of ", layers, " layers");
      check(std::isfinite(c.drop) && c.n > 0, "drop model: expected a finite drop over >= 1 seed, found ", c.drop,
            " over ", c.n, " (layer ", c.layer, ", ", c.mixer, ")");
      if (!m.s_.contains(c.mixer)) m.s_[c.mixer] = 1.0;
      m.layer_seen_[c.layer] = true;
    }
    m.cells_.assign(cells.begin(), cells.end());
    // Start: e_l = the layer's weighted mean drop; then alternate the two weighted LS updates.
    for (std::size_t l = 0; l < layers; ++l) {
      double num = 0, den = 0;
      for (const auto& c : cells)
        if (c.layer == l) num += double(c.n) * c.drop, den += double(c.n);
      if (den > 0) m.e_[l] = num / den;
    }
    for (int it = 0; it < 500; ++it) {
      for (auto& [name, s] : m.s_) {
        double num = 0, den = 0;
        for (const auto& c : cells)
          if (c.mixer == name) num += double(c.n) * c.drop * m.e_[c.layer], den += double(c.n) * m.e_[c.layer] * m.e_[c.layer];
        s = den > 0 ? num / den : 0.0;
      }
      for (std::size_t l = 0; l < layers; ++l) {
        if (!m.layer_seen_[l]) continue;
        double num = 0, den = 0;
        for (const auto& c : cells)
          if (c.layer == l) num += double(c.n) * c.drop * m.s_[c.mixer], den += double(c.n) * m.s_[c.mixer] * m.s_[c.mixer];
        m.e_[l] = den > 0 ? num / den : 0.0;
      }
      double mean_s = 0;  // the scale is arbitrary between s and e: mean of s = 1
      for (const auto& [name, s] : m.s_) mean_s += s / double(m.s_.size());
      if (mean_s != 0) {
        for (auto& [name, s] : m.s_) s /= mean_s;
        for (std::size_t l = 0; l < layers; ++l) m.e_[l] *= mean_s;
      }
    }
    // Residual spread of the cells' means.
    double ss = 0;
    for (const auto& c : cells) ss += std::pow(c.drop - m.s_[c.mixer] * m.e_[c.layer], 2);
    std::size_t seen = 0;
    for (bool b : m.layer_seen_) seen += b;
    const std::ptrdiff_t dof = std::ptrdiff_t(cells.size()) - std::ptrdiff_t(m.s_.size() + seen - 1);
    m.dof_ = dof;
    m.sigma_ = dof > 0 ? std::sqrt(ss / double(dof)) : std::numeric_limits<double>::quiet_NaN();
    // The feature's line through the measured layers' effects.
    if (!m.feature_.empty() && seen >= 3) {
      std::vector<double> z, e;
      for (std::size_t l = 0; l < layers; ++l)
        if (m.layer_seen_[l]) z.push_back(m.feature_[l]), e.push_back(m.e_[l]);
      const double zm = mean(z), em = mean(e);
      double szz = 0, sze = 0;
      for (std::size_t i = 0; i < z.size(); ++i) szz += (z[i] - zm) * (z[i] - zm), sze += (z[i] - zm) * (e[i] - em);
      if (szz > 0) {
        m.slope_ = sze / szz;
        m.intercept_ = em - m.slope_ * zm;
        double sr = 0;
        for (std::size_t i = 0; i < z.size(); ++i) sr += std::pow(e[i] - m.intercept_ - m.slope_ * z[i], 2);
        m.feature_sigma_ = std::sqrt(sr / double(z.size() - 2));
        m.feature_fit_ = true;
      }
    }
    return m;
  }

  std::size_t layers() const { return e_.size(); }
  bool knows_mixer(const std::string& mixer) const { return s_.contains(mixer); }
  // Whether layer l's effect is known: measured, or predicted from the layer feature.
  bool knows_layer(std::size_t l) const { return l < e_.size() && (layer_seen_[l] || feature_fit_); }
  bool layer_measured(std::size_t l) const { return l < e_.size() && layer_seen_[l]; }
  double scale(const std::string& mixer) const { return s_.at(mixer); }
  double layer_effect(std::size_t l) const {
    check(knows_layer(l), "drop model: layer ", l, " was not measured and there is no layer feature to predict it");
    return layer_seen_[l] ? e_[l] : intercept_ + slope_ * feature_[l];
  }
  double sigma() const { return sigma_; }
  std::ptrdiff_t residual_dof() const { return dof_; }
  std::size_t cells() const { return cells_.size(); }

  DropPrediction predict(std::size_t l, const std::string& mixer) const {
    check(l < e_.size(), "drop model: layer ", l, " outside a model of ", e_.size(), " layers");
    check(knows_mixer(mixer), "drop model: no measurement of mixer '", mixer, "' in any layer (probe it in a few "
          "layers first)");
    const double s = s_.at(mixer), e = layer_effect(l);
    DropPrediction p{.drop = s * e};
    p.measured = std::any_of(cells_.begin(), cells_.end(), [&](const DropCell& c) { return c.layer == l && c.mixer == mixer; });
    if (std::isnan(sigma_)) return p;
    const double v2 = sigma_ * sigma_;
    double se_l = 0, ss_m = 0;  // Σ e² over the mixer's measured layers, Σ s² over the layer's mixers
    for (const auto& c : cells_) {
      if (c.mixer == mixer) se_l += e_[c.layer] * e_[c.layer];
      if (c.layer == l) ss_m += s_.at(c.mixer) * s_.at(c.mixer);
    }
    double var = v2 + (se_l > 0 ? e * e * v2 / se_l : 0.0);
    if (layer_seen_[l]) var += ss_m > 0 ? s * s * v2 / ss_m : 0.0;
    else var += s * s * feature_sigma_ * feature_sigma_;
    p.se = std::sqrt(var);
    return p;
  }

  nlohmann::json to_json() const {
    nlohmann::json j{{"model", "d(l, m) = s_m * e_l"}, {"cells", cells_.size()}, {"residual_dof", dof_},
                     {"sigma", std::isnan(sigma_) ? nlohmann::json() : nlohmann::json(sigma_)}};
    for (const auto& [name, s] : s_) j["mixer_scale"][name] = s;
    for (std::size_t l = 0; l < e_.size(); ++l)
      j["layer_effect"].push_back({{"layer", l}, {"measured", bool(layer_seen_[l])},
                                   {"effect", knows_layer(l) ? nlohmann::json(layer_effect(l)) : nlohmann::json()}});
    if (feature_fit_)
      j["feature_line"] = {{"intercept", intercept_}, {"slope", slope_}, {"residual_sigma", feature_sigma_}};
    return j;
  }

 private:
  std::map<std::string, double> s_;
  std::vector<double> e_, feature_;
  std::vector<bool> layer_seen_;
  std::vector<DropCell> cells_;
  double sigma_ = std::numeric_limits<double>::quiet_NaN();
  std::ptrdiff_t dof_ = 0;
  bool feature_fit_ = false;
  double intercept_ = 0, slope_ = 0, feature_sigma_ = 0;
};

// The outcome of a held-out validation: per held-out cell the model's prediction and the
// baseline's, and summaries over them.
struct DropValidation {
  std::string scheme, baseline;
  struct Case {
    std::size_t layer = 0;
    std::string mixer;
    double measured = 0, predicted = 0, se = 0, baseline = 0;
  };
  std::vector<Case> cases;
  double mae = 0, baseline_mae = 0, spearman = 0, baseline_spearman = 0;
  double coverage95 = std::numeric_limits<double>::quiet_NaN();  // among cases with a finite se

  void summarise() {
    std::vector<double> meas, pred, base;
    double covered = 0, with_se = 0;
    mae = baseline_mae = 0;
    for (const auto& c : cases) {
      meas.push_back(c.measured), pred.push_back(c.predicted), base.push_back(c.baseline);
      mae += std::abs(c.predicted - c.measured) / double(cases.size());
      baseline_mae += std::abs(c.baseline - c.measured) / double(cases.size());
      if (std::isfinite(c.se)) {
        with_se += 1;
        covered += std::abs(c.predicted - c.measured) <= 1.96 * c.se ? 1 : 0;
      }
    }
    spearman = cases.size() > 2 ? analysis::spearman(pred, meas) : std::numeric_limits<double>::quiet_NaN();
    baseline_spearman = cases.size() > 2 ? analysis::spearman(base, meas) : std::numeric_limits<double>::quiet_NaN();
    coverage95 = with_se > 0 ? covered / with_se : std::numeric_limits<double>::quiet_NaN();
  }

  nlohmann::json to_json() const {
    const auto num = [](double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); };
    nlohmann::json j{{"scheme", scheme}, {"baseline", baseline}, {"cases", cases.size()}, {"mae", mae},
                     {"baseline_mae", baseline_mae}, {"spearman", num(spearman)},
                     {"baseline_spearman", num(baseline_spearman)}, {"coverage95", num(coverage95)}};
    for (const auto& c : cases)
      j["held_out"].push_back({{"layer", c.layer}, {"mixer", c.mixer}, {"measured", c.measured},
                               {"predicted", c.predicted}, {"se", num(c.se)}, {"baseline", c.baseline}});
    return j;
  }
};

namespace detail {
inline double mixer_mean(std::span<const DropCell> cells, const std::string& mixer) {
  double num = 0, den = 0;
  for (const auto& c : cells)
    if (c.mixer == mixer) num += double(c.n) * c.drop, den += double(c.n);
  return den > 0 ? num / den : std::numeric_limits<double>::quiet_NaN();
}
}  // namespace detail

// Each cell held out in turn (its mixer and layer keep their other cells). Baseline: the mean of
// the mixer's other layers (what one would guess knowing nothing about the layer).
inline DropValidation validate_leave_one_cell_out(std::size_t layers, std::span<const DropCell> cells) {
  DropValidation v{.scheme = "leave one (layer, mixer) cell out", .baseline = "the mixer's mean over its other layers"};
  for (std::size_t i = 0; i < cells.size(); ++i) {
    std::vector<DropCell> rest(cells.begin(), cells.end());
    rest.erase(rest.begin() + std::ptrdiff_t(i));
    const auto& c = cells[i];
    const bool mixer_left = std::any_of(rest.begin(), rest.end(), [&](const DropCell& r) { return r.mixer == c.mixer; });
    const bool layer_left = std::any_of(rest.begin(), rest.end(), [&](const DropCell& r) { return r.layer == c.layer; });
    if (!mixer_left || !layer_left) continue;  // nothing to predict it from
    const auto m = DropModel::fit(layers, rest);
    const auto p = m.predict(c.layer, c.mixer);
    v.cases.push_back({c.layer, c.mixer, c.drop, p.drop, p.se, detail::mixer_mean(rest, c.mixer)});
  }
  v.summarise();
  return v;
}

// Every layer held out in turn (all its cells): its effect comes from the layer feature. Baseline:
// the mixer's mean over the other layers.
inline DropValidation validate_leave_one_layer_out(std::size_t layers, std::span<const DropCell> cells,
                                                   std::span<const double> layer_feature) {
  DropValidation v{.scheme = "leave one layer out (its effect from the layer feature)",
                   .baseline = "the mixer's mean over the other layers"};
  for (std::size_t l = 0; l < layers; ++l) {
    std::vector<DropCell> rest, held;
    for (const auto& c : cells) (c.layer == l ? held : rest).push_back(c);
    if (held.empty() || rest.empty()) continue;
    const auto m = DropModel::fit(layers, rest, layer_feature);
    if (!m.knows_layer(l)) continue;
    for (const auto& c : held)
      if (m.knows_mixer(c.mixer)) {
        const auto p = m.predict(l, c.mixer);
        v.cases.push_back({l, c.mixer, c.drop, p.drop, p.se, detail::mixer_mean(rest, c.mixer)});
      }
  }
  v.summarise();
  return v;
}

// The probe rule the planner uses for a mixer nobody swept: `k` probe layers chosen among the
// candidate layers so that they spread over the layers' effects (the layers at the quantiles
// (i + 0.5)/k of the effects' order; ties to the lower layer).
inline std::vector<std::size_t> probe_layers(const DropModel& m, std::size_t k) {
  std::vector<std::size_t> known;
  for (std::size_t l = 0; l < m.layers(); ++l)
    if (m.knows_layer(l)) known.push_back(l);
  check(k >= 1 && k <= known.size(), "probe layers: expected between 1 and ", known.size(), " probes, found ", k);
  std::stable_sort(known.begin(), known.end(), [&](std::size_t a, std::size_t b) { return m.layer_effect(a) < m.layer_effect(b); });
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < k; ++i) {
    std::size_t at = std::size_t((double(i) + 0.5) / double(k) * double(known.size()));
    at = std::min(at, known.size() - 1);
    while (std::find(out.begin(), out.end(), known[at]) != out.end()) at = (at + 1) % known.size();
    out.push_back(known[at]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A mixer as if nobody had swept it: each mixer in turn keeps only `k` probe layers (chosen by
// probe_layers on the model of the other mixers), and its other layers are predicted. Baseline:
// the probes' mean (what one would use for every layer from the probes alone).
inline DropValidation validate_held_out_mixer(std::size_t layers, std::span<const DropCell> cells, std::size_t k) {
  DropValidation v{.scheme = "each mixer held out but for " + std::to_string(k) + " probe layers",
                   .baseline = "the mean of the mixer's probes"};
  std::vector<std::string> mixers;
  for (const auto& c : cells)
    if (std::find(mixers.begin(), mixers.end(), c.mixer) == mixers.end()) mixers.push_back(c.mixer);
  for (const auto& mixer : mixers) {
    std::vector<DropCell> others, mine;
    for (const auto& c : cells) (c.mixer == mixer ? mine : others).push_back(c);
    if (others.empty() || mine.size() <= k) continue;
    const auto probes = probe_layers(DropModel::fit(layers, others), k);
    std::vector<DropCell> train = others, held;
    double probe_sum = 0, probe_n = 0;
    for (const auto& c : mine) {
      if (std::find(probes.begin(), probes.end(), c.layer) != probes.end()) {
        train.push_back(c);
        probe_sum += double(c.n) * c.drop, probe_n += double(c.n);
      } else {
        held.push_back(c);
      }
    }
    if (probe_n == 0) continue;  // the mixer was not measured in the probe layers
    const auto m = DropModel::fit(layers, train);
    for (const auto& c : held) {
      if (!m.knows_layer(c.layer)) continue;  // no other mixer measured that layer either
      const auto p = m.predict(c.layer, mixer);
      v.cases.push_back({c.layer, mixer, c.drop, p.drop, p.se, probe_sum / probe_n});
    }
  }
  v.summarise();
  return v;
}

}  // namespace seqswap::analysis
