// Layer-wise distillation (FAR-style), METHOD.md "Layer-wise distillation".
//
// Stage 1 (local, teacher-forced): for every replaced layer l, the student's new mixer M_l
// reads the teacher's own mixer input LN1(x_l) and is trained to reproduce the teacher's
// pre-projection output a_l:  loss = Σ_l mean_{kept tokens, channels} (M_l(LN1 x_l) − a_l)²
// (or 1 − cosine per token; or matched after the projection). Only M_l's parameters train;
// the projection (reused from the teacher by name) stays frozen unless asked otherwise.
// Stage 2 (global): every parameter trains on cross-entropy, optionally + KL to the teacher's
// logits at a temperature. Budgets are optimizer steps, identical for everything compared.
#pragma once
#include <cmath>
#include <cstdio>
#include <type_traits>
#include <string>
#include <vector>

#include "seqswap/distill/plan.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/train/loop.hpp"
#include "seqswap/train/schedule.hpp"

namespace seqswap::distill {

enum class MatchLoss { mse, cosine };

struct Stage1Options {
  long steps = 500;               // optimizer steps (the budget)
  index_t batch = 64;
  double lr = 5e-4;               // FAR: 5e-4 · B/512 on ImageNet; small data tolerates more
  double min_lr = 1e-5;
  double warmup_fraction = 0.05;  // of the steps
  double weight_decay = 0.05;
  double clip_norm = 1.0;
  MatchLoss loss = MatchLoss::mse;
  bool after_projection = false;  // match the mixer output (after proj) instead of pre-projection
  bool train_projection = false;  // let the (teacher-initialised) projection train too
  double ce_weight = 0.0;         // + CE on the student's logits (weight 1 in FAR's option)
  double label_smoothing = 0.1;
  std::uint64_t seed = 0;
};

struct Stage2Options {
  long steps = 500;
  index_t batch = 64;
  double lr = 5e-5 * 8;  // FAR: 5e-5 · B/512; scaled up for the small data here
  double min_lr = 1e-6;
  double warmup_fraction = 0.05;
  double weight_decay = 0.05;
  double clip_norm = 1.0;
  double label_smoothing = 0.1;
  double kl_weight = 0.0;     // + KL(teacher ‖ student) on logits
  double temperature = 1.0;   // of that KL
  std::uint64_t seed = 0;
};

struct StageResult {
  long steps = 0;
  double seconds = 0;
  double final_loss = 0;               // mean over the last 10% of steps
  std::vector<double> layer_loss;      // stage 1: per replaced layer, mean over the last 10%
};

namespace detail {
// Per-element trainable mask over the student's arena: the replaced layers' mixers, minus
// their projection unless it trains too.
template <class M>
std::vector<std::uint8_t> mixer_mask(const M& student, const Plan& plan, bool with_projection) {
  std::vector<std::uint8_t> mask(student.param_count(), 0);
  for (index_t l : plan.layers) {
    const std::string prefix = "blocks." + std::to_string(l) + ".attn.";
    for (const auto& i : student.params_info()) {
      if (i.name.rfind(prefix, 0) != 0) continue;
      if (!with_projection && i.name.rfind(prefix + "proj.", 0) == 0) continue;
      std::fill(mask.begin() + long(i.offset), mask.begin() + long(i.offset + i.count), 1);
    }
  }
  return mask;
}

// (rows, D) loss between `out` and `target` over kept rows; writes d out (ASSIGNED, zero on
// masked rows) and returns the loss.
template <class T>
double match_loss(const T* out, const T* target, index_t rows, index_t D, const std::uint8_t* keep,
                  MatchLoss kind, T* dout) {
  index_t kept = 0;
  for (index_t t = 0; t < rows; ++t) kept += (!keep || keep[t]) ? 1 : 0;
  if (kept == 0) {
    std::fill(dout, dout + rows * D, T(0));
    return 0;
  }
  double loss = 0;
  if (kind == MatchLoss::mse) {
    const double scale = 1.0 / double(kept * D);
    for (index_t t = 0; t < rows; ++t) {
      const bool k = !keep || keep[t];
      for (index_t j = 0; j < D; ++j) {
        const double diff = k ? double(out[t * D + j]) - double(target[t * D + j]) : 0.0;
        loss += diff * diff * scale;
        dout[t * D + j] = T(2.0 * diff * scale);  // d/dout of mean (out − target)²
      }
    }
  } else {  // 1 − cos(out_t, target_t), mean over kept tokens
    for (index_t t = 0; t < rows; ++t) {
      T* d = dout + t * D;
      if (keep && !keep[t]) {
        std::fill(d, d + D, T(0));
        continue;
      }
      double oo = 0, tt = 0, ot = 0;
      for (index_t j = 0; j < D; ++j) {
        oo += double(out[t * D + j]) * out[t * D + j];
        tt += double(target[t * D + j]) * target[t * D + j];
        ot += double(out[t * D + j]) * target[t * D + j];
      }
      const double no = std::sqrt(oo) + 1e-12, nt = std::sqrt(tt) + 1e-12, c = ot / (no * nt);
      loss += (1.0 - c) / double(kept);
      // d(1 − c)/d out = −(target/(no nt) − c out/no²)
      for (index_t j = 0; j < D; ++j)
        d[j] = T(-(double(target[t * D + j]) / (no * nt) - c * double(out[t * D + j]) / (no * no)) / double(kept));
    }
  }
  return loss;
}

// Block l's student mixer runs on `x` (the teacher's LN1 output for that layer) and is scored
// against the teacher's pre-projection output `tpre` (or, with after_projection, its mixer
// output `tpost`, rows x D) over x's kept tokens; with `backward`, its gradient is accumulated
// into the student's gradient arena. Returns the loss.
template <class SM, class Ctx, class T = typename SM::T>
double layer_loss_on(SM& student, std::size_t l, Ctx& ctx, const Stage1Options& o, TokensView<const T> x,
                     TokensView<const T> tpre, const T* tpost, std::vector<T>& y, std::vector<T>& dout,
                     bool backward) {
  const auto& slot = model::mixer_slot(student.net(), l);
  const std::size_t off = model::mixer_param_offset(student.net(), l), cnt = slot.param_count();
  const ParamsView<const T> p{student.params().data + off, cnt};
  const ParamsView<T> g{student.grads().data + off, cnt};
  const index_t rows = x.total(), D = x.dim;
  y.resize(std::size_t(rows * D));
  slot.forward(p, x, TokensView<T>{y.data(), x.offsets, x.batch, D, x.keep}, ctx);
  if (o.after_projection) {
    dout.resize(y.size());
    const double loss = match_loss(y.data(), tpost, rows, D, x.keep, o.loss, dout.data());
    if (backward)
      slot.backward(p, ctx, TokensView<const T>{dout.data(), x.offsets, x.batch, D, x.keep}, TokensView<T>{}, g);
    return loss;
  }
  const auto pre = ctx.pre_projection();
  check(pre.dim == tpre.dim, "stage 1: layer ", l, ": the student's pre-projection width ", pre.dim,
        " differs from the teacher's ", tpre.dim, "; match after the projection instead");
  dout.resize(std::size_t(rows * pre.dim));
  const double loss = match_loss(pre.data, tpre.data, rows, pre.dim, x.keep, o.loss, dout.data());
  if (backward)
    slot.backward_pre(p, ctx, TokensView<const T>{dout.data(), x.offsets, x.batch, pre.dim, x.keep}, TokensView<T>{},
                      g);
  return loss;
}

// The same after teacher.forward (a dense Vit): the teacher's layer-l input and outputs.
template <class TM, class SM, class Ctx, class T = typename SM::T>
double layer_loss(TM& teacher, SM& student, std::size_t l, Ctx& ctx, const Stage1Options& o, std::vector<T>& y,
                  std::vector<T>& dout, bool backward) {
  auto x = model::mixer_input<T>(teacher.context(), l);  // (rows, D) LN1(x_l), teacher-forced
  const auto tpre = model::mixer_context(teacher.context(), l).pre_projection();
  // The teacher's mixer output is its residual branch's f buffer.
  const T* tpost = std::get<0>(model::block_context(teacher.context(), l).ctx).f.data();
  return layer_loss_on(student, l, ctx, o, x, TokensView<const T>(tpre), tpost, y, dout, backward);
}

// Row-wise softmax of logits / Tk into p (n, C).
template <class T>
void softmax_at(const T* logits, index_t n, index_t C, double Tk, std::vector<T>& p) {
  p.resize(std::size_t(n * C));
  for (index_t b = 0; b < n; ++b) {
    double mx = -1e300, s = 0;
    for (index_t c = 0; c < C; ++c) mx = std::max(mx, double(logits[b * C + c]) / Tk);
    for (index_t c = 0; c < C; ++c) s += std::exp(double(logits[b * C + c]) / Tk - mx);
    for (index_t c = 0; c < C; ++c) p[b * C + c] = T(std::exp(double(logits[b * C + c]) / Tk - mx) / s);
  }
}
// weight · Tk² · KL(p_t ‖ p_s) averaged over the batch; ADDS its gradient
// weight · Tk · (p_s − p_t) / n to dlogits and returns the loss.
template <class T>
double add_logit_kl(const T* tprob, const T* logits, index_t n, index_t C, double Tk, double weight, T* dlogits) {
  double loss = 0;
  for (index_t b = 0; b < n; ++b) {
    double mx = -1e300, s = 0;
    for (index_t c = 0; c < C; ++c) mx = std::max(mx, double(logits[b * C + c]) / Tk);
    for (index_t c = 0; c < C; ++c) s += std::exp(double(logits[b * C + c]) / Tk - mx);
    for (index_t c = 0; c < C; ++c) {
      const double ls = double(logits[b * C + c]) / Tk - mx - std::log(s);
      const double pt = tprob[b * C + c];
      if (pt > 0) loss += weight * Tk * Tk * pt * (std::log(pt) - ls) / double(n);
      dlogits[b * C + c] += T(weight * Tk * (std::exp(ls) - pt) / double(n));
    }
  }
  return loss;
}

inline train::CosineSchedule schedule(double lr, double min_lr, double warmup_fraction, long steps) {
  return {lr, min_lr, long(warmup_fraction * double(steps)), steps};
}
}  // namespace detail

// Stage 1. `teacher` and `student` are ViT models of the same config; the student's slots in
// `plan.layers` hold the new mixers (others are copies of the teacher's). Trains in place.
template <class TM, class SM>
StageResult stage1(TM& teacher, SM& student, const Plan& plan, const train::ImageDataset& data,
                   const Stage1Options& o, train::Progress* progress = nullptr) {
  using T = typename SM::T;
  check(o.steps >= 0, "stage 1: expected steps >= 0, found ", o.steps);
  StageResult res;
  res.layer_loss.assign(plan.layers.size(), 0.0);
  const auto mask = detail::mixer_mask(student, plan, o.train_projection);
  train::AdamW<T> opt({.lr = o.lr, .weight_decay = o.weight_decay}, student.params_info(),
                      student.param_count());
  const auto sched = detail::schedule(o.lr, o.min_lr, o.warmup_fraction, o.steps);
  train::BatchLoader loader(data, o.batch, true, o.seed);
  using SlotT = std::remove_cvref_t<decltype(model::mixer_slot(student.net(), 0))>;
  std::vector<typename SlotT::template Ctx<backend::Host>> ctxs(plan.layers.size());
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::vector<T> y, dout, dlogits;
  const long tail_from = o.steps - std::max(1L, o.steps / 10);
  long tail_n = 0;
  double tail_loss = 0;
  train::Progress local("stage1", o.steps, 10.0, progress == nullptr);
  for (long step = 0; step < o.steps; ++step) {
    const index_t n = loader.next_cycling(images, labels);
    teacher.forward(images.data(), n, data.image_numel());
    student.zero_grad();
    double total = 0;
    if (o.ce_weight > 0) {  // student end to end; only the mask's entries will move
      auto logits = student.forward(images.data(), n, data.image_numel());
      dlogits.resize(std::size_t(n * logits.dim));
      const auto r = train::cross_entropy(logits.data, labels.data(), n, logits.dim, o.label_smoothing,
                                          dlogits.data());
      for (auto& v : dlogits) v *= T(o.ce_weight);
      student.backward(dlogits.data());
      total += o.ce_weight * r.loss;
    }
    auto sg = student.grads();
    for (std::size_t k = 0; k < plan.layers.size(); ++k) {
      const double loss = detail::layer_loss(teacher, student, std::size_t(plan.layers[k]), ctxs[k], o, y, dout,
                                             /*backward=*/true);
      total += loss;
      if (step >= tail_from) res.layer_loss[k] += loss;
    }
    if (step >= tail_from) {
      tail_loss += total;
      ++tail_n;
    }
    // Only the replaced mixers move: clip over their gradients alone.
    for (std::size_t i = 0; i < mask.size(); ++i)
      if (!mask[i]) sg.data[i] = T(0);
    train::clip_and_step(student, opt, sched.at(step), o.clip_norm, mask.data());
    char extra[64];
    std::snprintf(extra, sizeof extra, "loss %.5f", total);
    (progress ? progress : &local)->update(step + 1, (step + 1) * long(n), extra);
  }
  res.steps = o.steps;
  res.seconds = local.elapsed();
  if (tail_n > 0) {
    res.final_loss = tail_loss / double(tail_n);
    for (auto& v : res.layer_loss) v /= double(tail_n);
  }
  return res;
}

// The stage-1 loss of every replaced layer on `data` (fixed order, no training): how well each
// new mixer reproduces its teacher layer, teacher-forced.
template <class TM, class SM>
std::vector<double> layer_losses(TM& teacher, SM& student, const Plan& plan, const train::ImageDataset& data,
                                 index_t batch, const Stage1Options& o = {}) {
  using T = typename SM::T;
  using SlotT = std::remove_cvref_t<decltype(model::mixer_slot(student.net(), 0))>;
  std::vector<typename SlotT::template Ctx<backend::Host>> ctxs(plan.layers.size());
  std::vector<double> sum(plan.layers.size(), 0.0);
  train::BatchLoader loader(data, batch, false, 0);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::vector<T> y, dout;
  index_t seen = 0;
  while (index_t n = loader.next(images, labels)) {
    teacher.forward(images.data(), n, data.image_numel());
    for (std::size_t k = 0; k < plan.layers.size(); ++k)
      sum[k] += double(n) * detail::layer_loss(teacher, student, std::size_t(plan.layers[k]), ctxs[k], o, y, dout,
                                               /*backward=*/false);
    seen += n;
  }
  for (auto& v : sum) v /= double(std::max<index_t>(seen, 1));
  return sum;
}

// Stage 2: every parameter of the student trains on CE (+ KL to the teacher's logits).
template <class TM, class SM>
StageResult stage2(TM& teacher, SM& student, const train::ImageDataset& data, const Stage2Options& o,
                   train::Progress* progress = nullptr) {
  using T = typename SM::T;
  StageResult res;
  train::AdamW<T> opt({.lr = o.lr, .weight_decay = o.weight_decay}, student.params_info(),
                      student.param_count());
  const auto sched = detail::schedule(o.lr, o.min_lr, o.warmup_fraction, o.steps);
  train::BatchLoader loader(data, o.batch, true, o.seed);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::vector<T> dlogits, tprob;
  const long tail_from = o.steps - std::max(1L, o.steps / 10);
  long tail_n = 0;
  double tail_loss = 0;
  const double Tk = o.temperature;
  train::Progress local("stage2", o.steps, 10.0, progress == nullptr);
  for (long step = 0; step < o.steps; ++step) {
    const index_t n = loader.next_cycling(images, labels);
    index_t C = 0;
    if (o.kl_weight > 0) {  // teacher probabilities at temperature Tk
      auto tl = teacher.forward(images.data(), n, data.image_numel());
      C = tl.dim;
      detail::softmax_at(tl.data, n, C, Tk, tprob);
    }
    auto logits = student.forward(images.data(), n, data.image_numel());
    C = logits.dim;
    dlogits.resize(std::size_t(n * C));
    auto r = train::cross_entropy(logits.data, labels.data(), n, C, o.label_smoothing, dlogits.data());
    double loss = r.loss;
    if (o.kl_weight > 0) loss += detail::add_logit_kl(tprob.data(), logits.data, n, C, Tk, o.kl_weight, dlogits.data());
    student.zero_grad();
    student.backward(dlogits.data());
    train::clip_and_step(student, opt, sched.at(step), o.clip_norm);
    if (step >= tail_from) {
      tail_loss += loss;
      ++tail_n;
    }
    char extra[64];
    std::snprintf(extra, sizeof extra, "loss %.4f", loss);
    (progress ? progress : &local)->update(step + 1, (step + 1) * long(n), extra);
  }
  res.steps = o.steps;
  res.seconds = local.elapsed();
  if (tail_n > 0) res.final_loss = tail_loss / double(tail_n);
  return res;
}

}  // namespace seqswap::distill
