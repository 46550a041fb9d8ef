// A-ViT token halting arithmetic (METHOD.md, "A-ViT token halting"), independent of the network:
// given each block's output channel 0 for the tokens still active, it decides which tokens halt
// where, the weights of the halted output, the ponder and distribution-prior losses, and the
// gradients of those (and of the output weights) with respect to channel 0.
//
//   h_k^l = σ(γ t^l_{k,0} - β), h^{L-1} = 1, CLS (token 0) h = 0 before the last layer;
//   c_k += h_k^l; token k halts at the first layer N_k with c_k ≥ 1 - ε;
//   r_k = 1 - Σ_{l<N_k} h_k^l; o_k = Σ_{l<N_k} h_k^l t_k^l + r_k t_k^{N_k};
//   ponder = α_p · mean over non-CLS tokens of (N_k + 1 + r_k)   [N_k is 0-based here];
//   prior  = α_d · KL(target ‖ clamp(H̄ / ΣH̄, 0.01, 0.99)), H̄_l = mean over the batch and the
//            non-CLS tokens of σ(γ t^l_{k,0} - β) (halted tokens count as 0; the last layer's
//            computed score, not the forced 1, as in A-ViT).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap::halting {

struct HaltingOptions {
  double gamma = 10.0;          // γ
  double beta = 30.0;           // β (A-ViT: 30 for tiny, 75 for small models)
  double eps = 0.01;            // ε
  double ponder_weight = 5e-4;  // α_p
  double prior_weight = 1e-3;   // α_d
  double prior_mean = -1.0;     // target layer of the Gaussian prior (0-based); < 0: 2/3 of depth
  double prior_std = 1.0;       // its σ in layers
  bool packed = true;           // halted tokens leave the batch (ragged); false: keep-masks only
  // Reproduce the public A-ViT code's H̄: it averages h[1:] over the BATCH axis (drops image 0
  // and keeps CLS) and KLDivLoss('batchmean') divides the KL by the depth.
  bool public_prior_bug = false;

  void validate() const {
    check(gamma > 0 && std::isfinite(beta), "halting: expected gamma > 0 and a finite beta, found "
          "gamma=", gamma, " beta=", beta);
    check(eps > 0 && eps < 1, "halting: expected 0 < eps < 1, found ", eps);
    check(ponder_weight >= 0 && prior_weight >= 0, "halting: expected non-negative loss weights, "
          "found ponder ", ponder_weight, ", prior ", prior_weight);
    check(prior_std > 0, "halting: expected prior_std > 0, found ", prior_std);
  }
};

inline double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

// The prior's target over layers 0..L-1: a Gaussian density at the layer indices, normalised to
// sum 1 (the public code scales it so that its first `mean` entries sum to 0.98 instead).
inline std::vector<double> prior_target(index_t layers, double mean, double std) {
  if (mean < 0) mean = 2.0 * double(layers) / 3.0;
  std::vector<double> p(static_cast<std::size_t>(layers));
  double s = 0;
  for (index_t l = 0; l < layers; ++l) s += p[l] = std::exp(-0.5 * std::pow((double(l) - mean) / std, 2));
  check(s > 0, "halting: the prior (mean ", mean, ", std ", std, ") has no mass on layers 0..",
        layers - 1);
  for (auto& v : p) v /= s;
  return p;
}

// Per-token halting state over one forward. Token k = b*N + i (i = 0 is CLS).
class Halter {
 public:
  void reset(index_t batch, index_t tokens, index_t layers, const HaltingOptions& o) {
    o.validate();
    check(batch > 0 && tokens > 0 && layers > 0, "Halter: expected a non-empty batch, found B=",
          batch, " N=", tokens, " L=", layers);
    o_ = o;
    B_ = batch;
    N_ = tokens;
    L_ = layers;
    const auto K = static_cast<std::size_t>(batch * tokens);
    active_.assign(static_cast<std::size_t>(layers + 1), std::vector<std::uint8_t>(K, 0));
    std::fill(active_[0].begin(), active_[0].end(), 1);
    h_.assign(static_cast<std::size_t>(layers), std::vector<double>(K, 0.0));
    raw_ = h_;
    w_ = h_;
    c_.assign(K, 0.0);
    R_.assign(K, 1.0);
    halt_.assign(K, -1);
    rem_.assign(K, 0.0);
    next_ = 0;
  }

  index_t batch() const { return B_; }
  index_t tokens() const { return N_; }
  index_t layers() const { return L_; }
  // Tokens entering block l (1 = active); active(L) is all zeros after the last step.
  const std::vector<std::uint8_t>& active(index_t l) const { return active_.at(l); }
  // After block l: u[k * stride] = t^l_{k,0} for every token k active at l (others are not read).
  // `next_active` (nullable): an external decision of which tokens go on (guided distillation);
  // tokens active now and not in it halt here whatever their cumulative score.
  template <class T>
  void step(index_t l, const T* u, index_t stride, const std::uint8_t* next_active = nullptr) {
    check(l == next_ && l < L_, "Halter::step: expected layer ", next_, ", found ", l);
    ++next_;
    const bool last = l + 1 == L_;
    const double thr = 1.0 - o_.eps;
    auto& act = active_[l];
    auto& nxt = active_[l + 1];
    for (std::size_t k = 0; k < act.size(); ++k) {
      if (!act[k]) continue;
      const bool cls = k % static_cast<std::size_t>(N_) == 0;
      const double raw = cls ? 0.0 : sigmoid(o_.gamma * double(u[k * stride]) - o_.beta);
      raw_[l][k] = raw;
      const double h = last ? 1.0 : raw;
      h_[l][k] = h;
      c_[k] += h;
      bool stop = c_[k] >= thr;
      if (next_active) stop = last || !next_active[k];
      if (stop) {
        w_[l][k] = R_[k];
        halt_[k] = l;
        rem_[k] = R_[k];
        nxt[k] = 0;
      } else {
        w_[l][k] = h;
        R_[k] -= h;
        nxt[k] = 1;
      }
    }
  }

  // Score h (after forcing), the computed σ (before forcing), the output weight of t^l_k.
  double h(index_t l, std::size_t k) const { return h_[l][k]; }
  double raw(index_t l, std::size_t k) const { return raw_[l][k]; }
  double weight(index_t l, std::size_t k) const { return w_[l][k]; }
  index_t halt_layer(std::size_t k) const { return halt_[k]; }  // 0-based
  double remainder(std::size_t k) const { return rem_[k]; }
  double cumulative(std::size_t k) const { return c_[k]; }

  // Fraction of non-CLS tokens entering block l.
  double keep_ratio(index_t l) const {
    if (N_ < 2) return 1.0;
    std::size_t n = 0;
    for (std::size_t k = 0; k < active_[l].size(); ++k)
      if (k % static_cast<std::size_t>(N_) != 0) n += active_[l][k];
    return double(n) / double(B_ * (N_ - 1));
  }
  // Mean keep ratio over layers (= mean depth / L for the patch tokens).
  double mean_keep_ratio() const {
    double s = 0;
    for (index_t l = 0; l < L_; ++l) s += keep_ratio(l);
    return s / double(L_);
  }

  // Unweighted ponder: mean over non-CLS tokens of (layers run + remainder).
  double ponder() const {
    if (N_ < 2) return 0.0;
    double s = 0;
    for (std::size_t k = 0; k < halt_.size(); ++k)
      if (k % static_cast<std::size_t>(N_) != 0) s += double(halt_[k] + 1) + rem_[k];
    return s / double(B_ * (N_ - 1));
  }

  // H̄ (L) as the prior sees it.
  std::vector<double> mean_scores() const {
    std::vector<double> m(static_cast<std::size_t>(L_), 0.0);
    const auto [n, from_b, with_cls] = prior_set();
    if (n == 0) return m;
    for (index_t l = 0; l < L_; ++l) {
      double s = 0;
      for (index_t b = from_b; b < B_; ++b)
        for (index_t i = with_cls ? 0 : 1; i < N_; ++i) s += raw_[l][b * N_ + i];
      m[l] = s / double(n);
    }
    return m;
  }
  // Unweighted prior: KL(target ‖ q) (divided by L with public_prior_bug).
  double prior() const {
    std::vector<double> q, dq;
    return prior_and_grad(q, dq, false);
  }
  // α_p · ponder + α_d · prior.
  double loss() const { return o_.ponder_weight * ponder() + o_.prior_weight * prior(); }

  // Backward. dots[l][k] = <dL/do_k, t^l_k> for tokens active at l (others ignored). Returns
  // du[l][k] = dL/dt^l_{k,0} through the scores, the output weights and (with their weights)
  // the ponder and prior losses. Extra per-score gradients (e.g. a distillation loss on raw
  // scores) can be passed in draw[l][k] (nullable).
  void backward(const std::vector<std::vector<double>>& dots, std::vector<std::vector<double>>& du,
                const std::vector<std::vector<double>>* draw = nullptr) const {
    const auto K = static_cast<std::size_t>(B_ * N_);
    du.assign(static_cast<std::size_t>(L_), std::vector<double>(K, 0.0));
    // dL/dh for the unforced scores (l < halting layer), in du for now.
    const double dp = N_ > 1 ? o_.ponder_weight / double(B_ * (N_ - 1)) : 0.0;
    for (std::size_t k = 0; k < K; ++k) {
      if (k % static_cast<std::size_t>(N_) == 0) continue;  // CLS: constant scores
      const index_t m = halt_[k];
      const double dr = dots[m][k] + dp;  // r_k = 1 - Σ_{l<m} h^l
      for (index_t l = 0; l < m; ++l) du[l][k] = dots[l][k] - dr;
    }
    // The prior, on raw scores of every layer.
    std::vector<double> dhbar(static_cast<std::size_t>(L_), 0.0);
    if (o_.prior_weight > 0) {
      std::vector<double> q, dq;
      prior_and_grad(q, dq, true);
      const auto [n, from_b, with_cls] = prior_set();
      for (index_t l = 0; l < L_; ++l) dhbar[l] = n ? o_.prior_weight * dq[l] / double(n) : 0.0;
      for (index_t l = 0; l < L_; ++l)
        for (index_t b = from_b; b < B_; ++b)
          for (index_t i = with_cls ? 0 : 1; i < N_; ++i) {
            const auto k = static_cast<std::size_t>(b * N_ + i);
            if (active_[l][k] && i != 0) du[l][k] += dhbar[l];
          }
    }
    // Through σ: dh/du = γ σ (1 - σ), for non-CLS tokens active at l.
    for (index_t l = 0; l < L_; ++l)
      for (std::size_t k = 0; k < K; ++k) {
        if (!active_[l][k] || k % static_cast<std::size_t>(N_) == 0) {
          du[l][k] = 0;
          continue;
        }
        double g = du[l][k];
        if (draw) g += (*draw)[l][k];
        const double s = raw_[l][k];
        du[l][k] = g * o_.gamma * s * (1.0 - s);
      }
  }

  const HaltingOptions& options() const { return o_; }

 private:
  struct PriorSet {
    index_t count, from_batch;
    bool with_cls;
  };
  PriorSet prior_set() const {
    if (o_.public_prior_bug) return {(B_ - 1) * N_, 1, true};
    return {B_ * (N_ - 1), 0, false};
  }
  // KL(p ‖ q) with q = clamp(H̄/ΣH̄, 0.01, 0.99); dq receives dKL/dH̄ when `grad`.
  double prior_and_grad(std::vector<double>& q, std::vector<double>& dhbar, bool grad) const {
    const auto p = prior_target(L_, o_.prior_mean, o_.prior_std);
    const auto hbar = mean_scores();
    double S = 0;
    for (double v : hbar) S += v;
    const double Ssafe = std::max(S, 1e-30);
    q.assign(p.size(), 0.0);
    std::vector<bool> clamped(p.size());
    double kl = 0;
    for (std::size_t l = 0; l < p.size(); ++l) {
      const double raw = hbar[l] / Ssafe;
      q[l] = std::clamp(raw, 0.01, 0.99);
      clamped[l] = raw != q[l];
      if (p[l] > 0) kl += p[l] * (std::log(p[l]) - std::log(q[l]));
    }
    const double scale = o_.public_prior_bug ? 1.0 / double(L_) : 1.0;
    if (grad) {
      // dKL/dq_l = -p_l/q_l (0 where clamped); dq_l/dH̄_m = (δ_lm - q_l)/S.
      std::vector<double> g(p.size(), 0.0);
      for (std::size_t l = 0; l < p.size(); ++l) g[l] = clamped[l] ? 0.0 : -p[l] / q[l];
      double gq = 0;  // Σ_l g_l H̄_l / S
      for (std::size_t l = 0; l < p.size(); ++l) gq += g[l] * hbar[l] / Ssafe;
      dhbar.assign(p.size(), 0.0);
      if (S > 0)
        for (std::size_t m = 0; m < p.size(); ++m) dhbar[m] = scale * (g[m] - gq) / Ssafe;
    }
    return scale * kl;
  }

  HaltingOptions o_;
  index_t B_ = 0, N_ = 0, L_ = 0, next_ = 0;
  std::vector<std::vector<std::uint8_t>> active_;  // (L+1, B*N)
  std::vector<std::vector<double>> h_, raw_, w_;    // (L, B*N)
  std::vector<double> c_, R_, rem_;
  std::vector<index_t> halt_;
};

}  // namespace seqswap::halting
