// Layer-wise distillation (FAR-style), METHOD.md "Layer-wise distillation".
//
// Stage 1 trains only the replaced layers' new mixers M_l (the projection, reused from the
// teacher by name, stays frozen unless asked otherwise), in one of two protocols:
//  - teacher-forced (default): M_l reads the teacher's own mixer input LN1(x_l) and is trained
//    to reproduce the teacher's pre-projection output a_l:
//      loss = w_mse Σ_l mean_{kept tokens, channels} (M_l(LN1 x_l) − a_l)²  (+ w_ce CE)
//  - free-running (FAR's code): the student runs end to end on its own activations x̃, and
//      loss = w_mse Σ_l mean (M_l(LN1 x̃_l) − a_l)² + w_ce CE(student logits, y)
//    with the gradient of every layer term flowing back through the whole student (the layer
//    terms enter at each mixer's pre-projection output; see layers/output_projection.hpp).
// (Either: 1 − cosine per token instead of MSE, or, teacher-forced, matched after the projection.)
// Stage 2 (global): every parameter trains on cross-entropy, optionally + KL to the teacher's
// logits at a temperature. Budgets are optimizer steps, identical for everything compared.
#pragma once
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <variant>
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
  double ce_weight = 0.0;         // + CE on the student's logits (weight 1 in FAR's code)
  double mse_weight = 1.0;        // weight of the layer terms
  bool free_running = false;      // the student runs end to end (FAR); else teacher-forced
  double label_smoothing = 0.1;
  std::uint64_t seed = 0;
  // Data parallel over R ranks (train::LoopHooks::comm): each rank runs its slice of every
  // global batch `batch`; nullptr = one process.
  train::Communicator* comm = nullptr;
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
  train::Communicator* comm = nullptr;  // as in Stage1Options
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

// One row of a match loss, on the host or the device: writes the row's gradient WITHOUT the
// mean's scale (MSE: 2 (out − target); cosine: d(1 − cos)/d out) and returns its loss without
// that scale (Σ (out − target)²; 1 − cos).
template <class T>
SEQSWAP_HD double match_row(const T* out, const T* target, index_t D, bool cosine, T* d) {
  if (!cosine) {
    double loss = 0;
    for (index_t j = 0; j < D; ++j) {
      const double diff = double(out[j]) - double(target[j]);
      loss += diff * diff;
      d[j] = T(2.0 * diff);
    }
    return loss;
  }
  double oo = 0, tt = 0, ot = 0;
  for (index_t j = 0; j < D; ++j) {
    oo += double(out[j]) * double(out[j]);
    tt += double(target[j]) * double(target[j]);
    ot += double(out[j]) * double(target[j]);
  }
  const double no = std::sqrt(oo) + 1e-12, nt = std::sqrt(tt) + 1e-12, c = ot / (no * nt);
  // d(1 − c)/d out = −(target/(no nt) − c out/no²)
  for (index_t j = 0; j < D; ++j) d[j] = T(-(double(target[j]) / (no * nt) - c * double(out[j]) / (no * no)));
  return 1.0 - c;
}
// match_row over the rows, as a device functor: row t's loss and kept flag land in
// stats[2t], stats[2t + 1] (a masked row: gradient zero, loss 0, flag 0).
template <class T>
struct MatchRows {
  const T* out;
  const T* target;
  const std::uint8_t* keep;
  index_t D;
  bool cosine;
  T* dout;
  double* stats;
  SEQSWAP_HD void operator()(index_t t) const {
    T* d = dout + t * D;
    const bool kept = !keep || keep[t];
    if (!kept)
      for (index_t j = 0; j < D; ++j) d[j] = T(0);
    stats[2 * t] = kept ? match_row(out + t * D, target + t * D, D, cosine, d) : 0.0;
    stats[2 * t + 1] = kept ? 1.0 : 0.0;
  }
};
// The mean's scale: MSE over kept rows × channels, cosine over kept rows.
inline double match_scale(MatchLoss kind, index_t kept, index_t D) {
  return kind == MatchLoss::mse ? 1.0 / double(kept * D) : 1.0 / double(kept);
}

// The backend a model runs on (its arena, contexts and activations).
template <class M>
using backend_of = std::conditional_t<train::on_device<M>(), backend::Cuda, backend::Host>;

// What a layer term keeps between steps on backend B (sized by the first step; none after).
template <class T, class B>
struct TermScratch {
  Buffer<T, B> y, dout;  // the mixer's output; its term's gradient
  Buffer<double, B> stats;  // device: each row's loss and kept flag (MatchRows)
  std::vector<double> host_stats;
};

// The (rows, D) match loss between `out` and `target` over kept rows (MSE or 1 − cosine, a mean
// over kept rows), where the rows live (B): returns the loss and ASSIGNS weight × its gradient
// to dout (zero on masked rows). On the device each row is reduced there (MatchRows) and only
// two numbers per row come back; the host sums them in order.
template <class T, class B>
double match_term(const T* out, const T* target, index_t rows, index_t D, const std::uint8_t* keep, MatchLoss kind,
                  double weight, T* dout, TermScratch<T, B>& s) {
  const bool cosine = kind == MatchLoss::cosine;
  double loss = 0;
  index_t kept = 0;
  if constexpr (backend::is_cuda<B>) {
    s.stats.resize(std::size_t(2 * rows));
    ops::device::for_each(rows, MatchRows<T>{out, target, keep, D, cosine, dout, s.stats.data()}, "match_loss");
    s.host_stats.resize(std::size_t(2 * rows));
    s.stats.download(s.host_stats.data(), s.host_stats.size());
    for (index_t t = 0; t < rows; ++t) {
      loss += s.host_stats[std::size_t(2 * t)];
      kept += s.host_stats[std::size_t(2 * t + 1)] > 0 ? 1 : 0;
    }
  } else {
    for (index_t t = 0; t < rows; ++t) {
      if (keep && !keep[t]) {
        std::fill(dout + t * D, dout + (t + 1) * D, T(0));
        continue;
      }
      ++kept;
      loss += match_row(out + t * D, target + t * D, D, cosine, dout + t * D);
    }
  }
  const double scale = kept ? match_scale(kind, kept, D) : 0.0;
  if constexpr (backend::is_cuda<B>) {
    ops::device::scale(dout, rows * D, T(scale * weight));
  } else {
    for (index_t i = 0; i < rows * D; ++i) dout[i] = T(double(dout[i]) * scale * weight);
  }
  return loss * scale;
}

// One context per replaced layer for the student's mixer there, at the mixer's own type (a
// Slot's, or a typed student's concrete mixer's) on backend B; kept across steps so nothing
// reallocates.
template <class B = backend::Host>
class MixerContexts {
 public:
  explicit MixerContexts(std::size_t layers) : ctx_(layers) {}
  template <class Mx>
  typename Mx::template Ctx<B>& get(std::size_t k) {
    using C = typename Mx::template Ctx<B>;
    auto& h = ctx_.at(k);
    if (!h.p || h.type != &typeid(C)) {
      h.p = std::make_shared<C>();
      h.type = &typeid(C);
    }
    return *static_cast<C*>(h.p.get());
  }

 private:
  struct Holder {
    std::shared_ptr<void> p;
    const std::type_info* type = nullptr;
  };
  std::vector<Holder> ctx_;
};

// Block l's student mixer runs on `x` (the teacher's LN1 output for that layer) and is scored
// against the teacher's pre-projection output `tpre` (or, with after_projection, its mixer
// output `tpost`, rows x D) over x's kept tokens; with `backward`, its gradient is accumulated
// into the student's gradient arena. Returns the loss. ctxs.get(k): the mixer's context. On a
// device student every view and pointer is device memory (B = backend::Cuda).
template <class SM, class B, class T = typename SM::T>
double layer_loss_on(SM& student, std::size_t l, MixerContexts<B>& ctxs, std::size_t k, const Stage1Options& o,
                     TokensView<const T, B> x, TokensView<const T, B> tpre, const T* tpost, TermScratch<T, B>& s,
                     bool backward) {
  double loss = 0;
  student.net().visit_mixer(l, [&](const auto& mixer, std::size_t off) {
    auto& ctx = ctxs.template get<std::remove_cvref_t<decltype(mixer)>>(k);
    const std::size_t cnt = mixer.param_count();
    const ParamsView<const T, B> p{student.params().data + off, cnt};
    const ParamsView<T, B> g{student.grads().data + off, cnt};
    const index_t rows = x.total(), D = x.dim;
    s.y.resize(std::size_t(rows * D));
    mixer.forward(p, x, TokensView<T, B>{s.y.data(), x.offsets, x.batch, D, x.keep}, ctx);
    if (o.after_projection) {
      s.dout.resize(s.y.size());
      loss = match_term(static_cast<const T*>(s.y.data()), tpost, rows, D, x.keep, o.loss, o.mse_weight, s.dout.data(), s);
      if (backward)
        mixer.backward(p, ctx, TokensView<const T, B>{s.dout.data(), x.offsets, x.batch, D, x.keep}, TokensView<T, B>{},
                       g);
      return;
    }
    const auto pre = ctx.pre_projection();
    check(pre.dim == tpre.dim, "stage 1: layer ", l, ": the student's pre-projection width ", pre.dim,
          " differs from the teacher's ", tpre.dim, "; match after the projection instead");
    s.dout.resize(std::size_t(rows * pre.dim));
    loss = match_term(pre.data, tpre.data, rows, pre.dim, x.keep, o.loss, o.mse_weight, s.dout.data(), s);
    if (backward)
      mixer.backward_pre(p, ctx, TokensView<const T, B>{s.dout.data(), x.offsets, x.batch, pre.dim, x.keep},
                         TokensView<T, B>{}, g);
  });
  return loss;
}

// The same after teacher.forward (a dense Vit, or a HaltingVit over kept tokens): the teacher's
// layer-l input and outputs.
template <class TM, class SM, class B, class T = typename SM::T>
double layer_loss(TM& teacher, SM& student, std::size_t l, MixerContexts<B>& ctxs, std::size_t k,
                  const Stage1Options& o, TermScratch<T, B>& s, bool backward) {
  const auto x = model::mixer_input(teacher, l);  // (rows, D) LN1(x_l), teacher-forced
  const auto tpre = model::mixer_context(teacher, l).pre_projection();
  return layer_loss_on(student, l, ctxs, k, o, TokensView<const T, B>(x), TokensView<const T, B>(tpre),
                       static_cast<const T*>(model::mixer_output(teacher, l)), s, backward);
}

// Points a mixer context's pre-projection gradient tap at g (nullptr: off), through a Slot.
template <class C, class T>
void tap_pre_gradient(C& c, const T* g) {
  if constexpr (requires { c.v.index(); })
    std::visit([&](auto& x) { tap_pre_gradient(x, g); }, c.v);
  else
    c.pre_grad = g;
}

// The free-running layer terms after student.forward and teacher.forward on the same batch:
// per replaced layer k, the (unweighted) loss of the student's own pre-projection output
// against the teacher's, its gradient (× mse_weight) left in taps[k] and tapped into the
// student's mixer context, so that the next student.backward carries it. The losses land in
// `loss` (kept by the caller across steps, like taps) and are returned.
template <class TM, class SM, class B, class T = typename SM::T>
const std::vector<double>& tap_layer_terms(TM& teacher, SM& student, const Plan& plan, const Stage1Options& o,
                                           std::vector<TermScratch<T, B>>& taps, std::vector<double>& loss) {
  check(!o.after_projection, "stage 1: free-running matches the pre-projection output; after_projection "
        "is a teacher-forced option");
  loss.assign(plan.layers.size(), 0.0);
  taps.resize(plan.layers.size());
  for (std::size_t k = 0; k < plan.layers.size(); ++k) {
    const auto l = std::size_t(plan.layers[k]);
    const auto tpre = TokensView<const T, B>(model::mixer_context(teacher, l).pre_projection());
    model::visit_mixer_context(student, l, [&](auto& sc) {
      const auto spre = sc.pre_projection();
      check(spre.dim == tpre.dim && spre.total() == tpre.total(), "stage 1: layer ", l,
            ": the student's pre-projection output (", spre.total(), " x ", spre.dim, ") differs from the teacher's (",
            tpre.total(), " x ", tpre.dim, "); free-running needs the same width and tokens");
      auto& tap = taps[k];
      tap.dout.resize(std::size_t(spre.total() * spre.dim));
      loss[k] = match_term(spre.data, tpre.data, spre.total(), spre.dim, spre.keep, o.loss, o.mse_weight,
                           tap.dout.data(), tap);
      tap_pre_gradient(sc, static_cast<const T*>(tap.dout.data()));
    });
  }
  return loss;
}
template <class SM>
void untap_layer_terms(SM& student, const Plan& plan) {
  using T = typename SM::T;
  for (index_t l : plan.layers)
    model::visit_mixer_context(student, std::size_t(l), [](auto& sc) { tap_pre_gradient(sc, static_cast<const T*>(nullptr)); });
}

// Σ (out − target)² and Σ (target − its mean over the sequence's kept tokens)², per channel,
// over the kept rows: their ratio is the normalised error (1 = no better than predicting each
// sequence's mean target token; the scale of the target drops out).
struct ErrorSums {
  double sse = 0, sst = 0, n = 0;  // n: kept rows × channels
  void add(const ErrorSums& o) {
    sse += o.sse;
    sst += o.sst;
    n += o.n;
  }
};
template <class T>
ErrorSums error_sums(TokensView<const T> out, TokensView<const T> target) {
  ErrorSums e;
  const index_t E = target.dim;
  std::vector<double> mean(static_cast<std::size_t>(E));
  for (index_t b = 0; b < target.batch; ++b) {
    std::fill(mean.begin(), mean.end(), 0.0);
    index_t kept = 0;
    for (index_t t = target.offsets[b]; t < target.offsets[b + 1]; ++t) {
      if (target.keep && !target.keep[t]) continue;
      ++kept;
      e.n += double(E);
      for (index_t j = 0; j < E; ++j) mean[std::size_t(j)] += double(target.data[t * E + j]);
    }
    for (auto& m : mean) m /= double(std::max<index_t>(kept, 1));
    for (index_t t = target.offsets[b]; t < target.offsets[b + 1]; ++t) {
      if (target.keep && !target.keep[t]) continue;
      for (index_t j = 0; j < E; ++j) {
        const double a = double(target.data[t * E + j]), d = double(out.data[t * E + j]) - a, c = a - mean[std::size_t(j)];
        e.sse += d * d;
        e.sst += c * c;
      }
    }
  }
  return e;
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

// The shared loop's options for a stage's budget.
template <class O>
train::LoopOptions loop_options(const char* label, const O& o) {
  return {.steps = o.steps, .batch = o.batch, .lr = o.lr, .min_lr = o.min_lr,
          .warmup_steps = long(o.warmup_fraction * double(o.steps)), .weight_decay = o.weight_decay,
          .clip_norm = o.clip_norm, .seed = o.seed, .label = label,
          .quiet = true};  // a stage reports through the caller's progress meter only
}
inline StageResult stage_result(const train::LoopResult& r) {
  StageResult res;
  res.steps = r.steps;
  res.seconds = r.seconds;
  res.final_loss = r.final_loss;
  return res;
}
// A stage's edges for models on backend B: the batch's images up, the logits down, their
// gradient up (device models); on the host the pointers pass through. Sized by the first
// step; none after.
template <class T, class B>
struct StageIo {
  Buffer<float, B> images;
  Buffer<T, B> dlogits;
  std::vector<T> logits;

  const float* put_images(const float* host, index_t n, index_t numel) {
    if constexpr (backend::is_cuda<B>) {
      images.upload(host, std::size_t(n * numel));
      return images.data();
    } else {
      return host;
    }
  }
  // (n, C) logits where the host can read them.
  const T* host_logits(TokensView<const T, B> l) {
    if constexpr (backend::is_cuda<B>) {
      logits.resize(std::size_t(l.total() * l.dim));
      Buffer<T, B>::download_from(l.data, logits.data(), logits.size());
      return logits.data();
    } else {
      return l.data;
    }
  }
  // The logits' gradient (host memory) where the model's backward reads it.
  const T* put_dlogits(const std::vector<T>& host) {
    if constexpr (backend::is_cuda<B>) {
      dlogits.upload(host.data(), host.size());
      return dlogits.data();
    } else {
      return host.data();
    }
  }
};

// Teacher and student on one backend (the stages move no activations between them).
template <class TM, class SM>
constexpr void check_backends() {
  static_assert(train::on_device<TM>() == train::on_device<SM>(),
                "distill: the teacher and the student must run on the same backend (both host or both device models)");
}

// Per-layer losses summed over the tail steps -> their means.
inline void average_tail(std::vector<double>& layer_loss, long steps) {
  const long n = steps - std::max(0L, train::tail_start(steps));
  if (n > 0)
    for (auto& v : layer_loss) v /= double(n);
}
}  // namespace detail

// Stage 1. `teacher` and `student` are ViT models of the same config; the student's slots in
// `plan.layers` hold the new mixers (others are copies of the teacher's). Trains in place.
template <class TM, class SM>
StageResult stage1(TM& teacher, SM& student, const Plan& plan, const io::ImageDataset& data,
                   const Stage1Options& o, io::Progress* progress = nullptr) {
  using T = typename SM::T;
  using B = detail::backend_of<SM>;
  detail::check_backends<TM, SM>();
  check(o.steps >= 0, "stage 1: expected steps >= 0, found ", o.steps);
  std::vector<double> layer_loss(plan.layers.size(), 0.0);
  // Only the replaced mixers move: the clip runs over their gradients alone.
  const auto mask = detail::mixer_mask(student, plan, o.train_projection);
  detail::MixerContexts<B> ctxs(plan.layers.size());
  detail::TermScratch<T, B> scratch;
  detail::StageIo<T, B> io;
  std::vector<T> dlogits;
  std::vector<detail::TermScratch<T, B>> taps;
  std::vector<double> terms;
  const long tail_from = train::tail_start(o.steps);
  // Over R ranks each layer term is a mean over this rank's slice: the tail sums weight it by the
  // slice and are all-reduced at the end (one process keeps the plain mean of the step means).
  const bool parallel = o.comm != nullptr && o.comm->size() > 1;
  double tail_images = 0;
  const auto step = [&](long s, const float* images, const std::int32_t* labels, index_t n) {
    const double w = parallel ? double(n) : 1.0;
    if (parallel && s >= tail_from) tail_images += double(n);
    const float* x = io.put_images(images, n, data.image_numel());
    teacher.forward(x, n, data.image_numel());
    double total = 0;
    // The student end to end (CE, and free-running: every layer term through one backward);
    // only the mask's entries will move.
    if (o.free_running || o.ce_weight > 0) {
      const auto logits = student.forward(x, n, data.image_numel());
      const T* hl = io.host_logits(logits);
      dlogits.assign(std::size_t(n * logits.dim), T(0));
      if (o.ce_weight > 0) {
        const auto r = train::cross_entropy(hl, labels, n, logits.dim, o.label_smoothing, dlogits.data());
        for (auto& v : dlogits) v *= T(o.ce_weight);
        total += o.ce_weight * r.loss;
      }
      if (o.free_running) detail::tap_layer_terms(teacher, student, plan, o, taps, terms);
      student.backward(io.put_dlogits(dlogits));
      if (o.free_running) {
        detail::untap_layer_terms(student, plan);
        for (std::size_t k = 0; k < terms.size(); ++k) {
          total += o.mse_weight * terms[k];
          if (s >= tail_from) layer_loss[k] += w * terms[k];
        }
        return total;
      }
    }
    for (std::size_t k = 0; k < plan.layers.size(); ++k) {
      const double loss = detail::layer_loss(teacher, student, std::size_t(plan.layers[k]), ctxs, k, o, scratch,
                                             /*backward=*/true);
      total += o.mse_weight * loss;
      if (s >= tail_from) layer_loss[k] += w * loss;
    }
    return total;
  };
  auto res = detail::stage_result(train::run_loop(student, data, detail::loop_options("stage1", o), step,
                                                  {.mask = mask.data(), .progress = progress, .comm = o.comm}));
  if (parallel) {
    o.comm->allreduce_sum(layer_loss.data(), layer_loss.size());
    o.comm->allreduce_sum(&tail_images, 1);
    for (auto& v : layer_loss) v = tail_images > 0 ? v / tail_images : 0.0;
  } else {
    detail::average_tail(layer_loss, o.steps);
  }
  res.layer_loss = std::move(layer_loss);
  return res;
}

// The stage-1 loss of every replaced layer on `data` (fixed order, no training): how well each
// new mixer reproduces its teacher layer, teacher-forced.
template <class TM, class SM>
std::vector<double> layer_losses(TM& teacher, SM& student, const Plan& plan, const io::ImageDataset& data,
                                 index_t batch, const Stage1Options& o = {}) {
  using T = typename SM::T;
  using B = detail::backend_of<SM>;
  detail::check_backends<TM, SM>();
  detail::MixerContexts<B> ctxs(plan.layers.size());
  std::vector<double> sum(plan.layers.size(), 0.0);
  io::BatchLoader loader(data, batch, false, 0);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  detail::TermScratch<T, B> scratch;
  detail::StageIo<T, B> io;
  index_t seen = 0;
  while (index_t n = loader.next(images, labels)) {
    teacher.forward(io.put_images(images.data(), n, data.image_numel()), n, data.image_numel());
    for (std::size_t k = 0; k < plan.layers.size(); ++k)
      sum[k] += double(n) * detail::layer_loss(teacher, student, std::size_t(plan.layers[k]), ctxs, k, o, scratch,
                                               /*backward=*/false);
    seen += n;
  }
  for (auto& v : sum) v /= double(std::max<index_t>(seen, 1));
  return sum;
}

// How well each replaced layer's new mixer reproduces its teacher layer on `data` (fixed
// order, no training), as MSE and normalised error (sse / sst, detail::error_sums) of the
// pre-projection output, two ways: teacher-forced (the mixer reads the teacher's input) and
// free-running (the student's own forward).
struct LayerErrors {
  std::vector<double> mse, nmse, mse_free, nmse_free;  // per replaced layer
};
template <class TM, class SM>
LayerErrors layer_errors(TM& teacher, SM& student, const Plan& plan, const io::ImageDataset& data, index_t batch) {
  using T = typename SM::T;
  static_assert(!train::on_device<SM>() && !train::on_device<TM>(), "layer_errors: host models (it reads the "
                "activations on the host)");
  const std::size_t L = plan.layers.size();
  detail::MixerContexts<backend::Host> ctxs(L);
  std::vector<detail::ErrorSums> forced(L), free(L);
  io::BatchLoader loader(data, batch, false, 0);
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  detail::TermScratch<T, backend::Host> scratch;
  const Stage1Options o{};
  while (index_t n = loader.next(images, labels)) {
    teacher.forward(images.data(), n, data.image_numel());
    student.forward(images.data(), n, data.image_numel());
    for (std::size_t k = 0; k < L; ++k) {
      const auto l = std::size_t(plan.layers[k]);
      const auto tpre = TokensView<const T>(model::mixer_context(teacher, l).pre_projection());
      model::visit_mixer_context(student, l, [&](auto& sc) {
        free[k].add(detail::error_sums(TokensView<const T>(sc.pre_projection()), tpre));
      });
      // teacher-forced: the student's mixer on the teacher's input, in its own context
      detail::layer_loss(teacher, student, l, ctxs, k, o, scratch, /*backward=*/false);
      student.net().visit_mixer(l, [&](const auto& mixer, std::size_t) {
        const auto& c = ctxs.template get<std::remove_cvref_t<decltype(mixer)>>(k);
        forced[k].add(detail::error_sums(TokensView<const T>(c.pre_projection()), tpre));
      });
    }
  }
  LayerErrors e;
  for (std::size_t k = 0; k < L; ++k) {
    e.mse.push_back(forced[k].sse / std::max(forced[k].n, 1.0));
    e.mse_free.push_back(free[k].sse / std::max(free[k].n, 1.0));
    e.nmse.push_back(forced[k].sst > 0 ? forced[k].sse / forced[k].sst : std::nan(""));
    e.nmse_free.push_back(free[k].sst > 0 ? free[k].sse / free[k].sst : std::nan(""));
  }
  return e;
}

// Stage 2: every parameter of the student trains on CE (+ KL to the teacher's logits).
template <class TM, class SM>
StageResult stage2(TM& teacher, SM& student, const io::ImageDataset& data, const Stage2Options& o,
                   io::Progress* progress = nullptr) {
  using T = typename SM::T;
  using B = detail::backend_of<SM>;
  detail::check_backends<TM, SM>();
  check(o.steps >= 0, "stage 2: expected steps >= 0, found ", o.steps);
  std::vector<T> dlogits, tprob;
  detail::StageIo<T, B> io;
  const double Tk = o.temperature;
  // The logits (n x classes) are the only activations that cross to the host on a device model.
  const auto step = [&](long, const float* images, const std::int32_t* labels, index_t n) {
    const float* x = io.put_images(images, n, data.image_numel());
    if (o.kl_weight > 0) {  // teacher probabilities at temperature Tk
      const auto tl = teacher.forward(x, n, data.image_numel());
      detail::softmax_at(io.host_logits(tl), n, tl.dim, Tk, tprob);
    }
    const auto logits = student.forward(x, n, data.image_numel());
    const index_t C = logits.dim;
    const T* hl = io.host_logits(logits);
    dlogits.resize(std::size_t(n * C));
    const auto r = train::cross_entropy(hl, labels, n, C, o.label_smoothing, dlogits.data());
    double loss = r.loss;
    if (o.kl_weight > 0) loss += detail::add_logit_kl(tprob.data(), hl, n, C, Tk, o.kl_weight, dlogits.data());
    student.backward(io.put_dlogits(dlogits));
    return loss;
  };
  return detail::stage_result(
      train::run_loop(student, data, detail::loop_options("stage2", o), step, {.progress = progress, .comm = o.comm}));
}

}  // namespace seqswap::distill
