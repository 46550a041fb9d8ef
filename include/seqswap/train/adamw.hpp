// AdamW (decoupled weight decay, as torch.optim.AdamW) as one loop over the arena, plus
// global-norm gradient clipping. Weight decay applies only where ParamInfo::decay is set
// (matrices; not biases, norms, cls/pos embeddings).
#pragma once
#include <cmath>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/params.hpp"
#include "seqswap/ops/rows.hpp"

namespace seqswap::train {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.05;
};

template <class T>
class AdamW {
 public:
  // infos: the model's parameter tensors (for the decay mask); n: arena size.
  AdamW(AdamWOptions o, const std::vector<ParamInfo>& infos, std::size_t n) : o_(o) {
    decay_.assign(n, 0);
    for (const auto& i : infos)
      if (i.decay) std::fill(decay_.begin() + long(i.offset), decay_.begin() + long(i.offset + i.count), 1);
  }
  AdamWOptions& options() { return o_; }
  long steps() const { return t_; }
  void set_steps(long t) { t_ = t; }

  // p -= lr (m̂ / (√v̂ + eps) + wd p) on decayed entries; `trainable` (optional, per element)
  // freezes entries that are 0.
  void step(T* p, const T* g, T* m, T* v, std::size_t n, double lr,
            const std::uint8_t* trainable = nullptr) {
    check(n == decay_.size(), "AdamW: arena has ", n, " values, the optimizer was built for ",
          decay_.size(), " (re-create it after a relayout)");
    const ops::rows::AdamWCoefs<T> k = next_step(lr);
    const std::uint8_t* dm = decay_.data();
#pragma omp parallel for schedule(static) if (n > 65536)
    for (std::size_t i = 0; i < n; ++i) {
      if (trainable && !trainable[i]) continue;
      ops::rows::adamw_element(p[i], g[i], m[i], v[i], dm[i] != 0, k);
    }
  }

  // Counts a step and returns its coefficients: what step() applies on the host and the device
  // kernel (ops/cuda/rows.cuh) takes.
  ops::rows::AdamWCoefs<T> next_step(double lr) {
    ++t_;
    const double bc1 = 1.0 - std::pow(o_.beta1, double(t_));
    const double bc2 = 1.0 - std::pow(o_.beta2, double(t_));
    return {T(o_.beta1), T(o_.beta2), T(lr / bc1), T(1.0 / std::sqrt(bc2)), T(o_.eps), T(1.0 - lr * o_.weight_decay)};
  }
  // The decay mask per arena element (1: decayed), for a device copy.
  const std::vector<std::uint8_t>& decay_mask() const { return decay_; }

 private:
  AdamWOptions o_;
  std::vector<std::uint8_t> decay_;
  long t_ = 0;
};

// Scales g so that its global L2 norm is at most max_norm; returns the norm before clipping.
template <class T>
double clip_grad_norm(T* g, std::size_t n, double max_norm) {
  double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static) if (n > 65536)
  for (std::size_t i = 0; i < n; ++i) ss += double(g[i]) * double(g[i]);
  const double norm = std::sqrt(ss);
  if (max_norm > 0 && norm > max_norm) {
    const T s = T(max_norm / (norm + 1e-6));
    for (std::size_t i = 0; i < n; ++i) g[i] *= s;
  }
  return norm;
}

}  // namespace seqswap::train
