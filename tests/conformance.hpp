// The generic layer conformance test (dlib's test_layer, in double precision):
//  - backward against central finite differences of f = Σ y ∘ dy, on inputs and parameters;
//  - dx is ASSIGNED: it is pre-filled with NaN sentinels that must all be overwritten;
//  - g is ACCUMULATED: it is pre-filled with a sentinel that must survive, and a second
//    backward must add the same gradient again;
//  - masked tokens (keep = 0): for token-to-token layers their output rows equal their input
//    rows' image under no mixing (mixers: zero), and changing a masked token changes nothing
//    else.
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include "seqswap/core/concepts.hpp"
#include "seqswap/core/rng.hpp"

namespace conformance {

using seqswap::index_t;
using seqswap::Layout;

struct Options {
  double h = 1e-6;                 // finite-difference step
  double tol = 1e-6;               // relative to the gradient's largest entry
  std::size_t max_checks = 400;    // coordinates checked per tensor (sampled when larger)
  bool check_dx = true;            // whether the layer's input gradient is checked
  double param_std = 0.5;
  std::uint64_t seed = 1;
  std::vector<std::uint8_t> keep;  // per input token; empty = no mask
  bool mixer = false;              // masked rows of the output must be exactly zero
};

template <class L>
struct Harness {
  const L& layer;
  Layout in, out;
  const std::vector<std::uint8_t>* keep;

  std::vector<double> forward(const std::vector<double>& p, const std::vector<double>& x) {
    using B = seqswap::backend::Host;
    typename L::template Ctx<B> ctx;
    std::vector<double> y(out.size());
    layer.forward(seqswap::ParamsView<const double, B>{p.data(), p.size()},
                  seqswap::view_of<const double, B>(x.data(), in, kp()),
                  seqswap::view_of<double, B>(y.data(), out, kp_out()), ctx);
    return y;
  }
  const std::uint8_t* kp() const { return keep && !keep->empty() ? keep->data() : nullptr; }
  const std::uint8_t* kp_out() const { return out.same_tokens(in) ? kp() : nullptr; }
};

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Runs every check on `layer` (a double-precision layer) with input layout `in`.
template <class L>
void check_layer(const L& layer, const Layout& in, const Options& o = {}) {
  using B = seqswap::backend::Host;
  static_assert(seqswap::Layer<L, B>);
  seqswap::Rng rng(o.seed);
  Harness<L> hz{layer, in, {}, &o.keep};
  layer.plan(in, hz.out);
  if (!o.keep.empty()) REQUIRE(o.keep.size() == static_cast<std::size_t>(in.total()));

  std::vector<double> p(layer.param_count()), x(in.size()), dy(hz.out.size());
  for (auto& v : p) v = rng.normal() * o.param_std;
  for (auto& v : x) v = rng.normal();
  for (auto& v : dy) v = rng.normal();

  // forward + backward with sentinels
  typename L::template Ctx<B> ctx;
  std::vector<double> y(hz.out.size());
  layer.forward(seqswap::ParamsView<const double, B>{p.data(), p.size()},
                seqswap::view_of<const double, B>(x.data(), in, hz.kp()),
                seqswap::view_of<double, B>(y.data(), hz.out, hz.kp_out()), ctx);
  const double sentinel = 3.25;
  std::vector<double> g(p.size(), sentinel);
  std::vector<double> dx(x.size(), std::numeric_limits<double>::quiet_NaN());
  auto run_backward = [&](std::vector<double>& gg, std::vector<double>& dd) {
    layer.backward(seqswap::ParamsView<const double, B>{p.data(), p.size()}, ctx,
                   seqswap::view_of<const double, B>(dy.data(), hz.out, hz.kp_out()),
                   seqswap::view_of<double, B>(dd.data(), in, hz.kp()),
                   seqswap::ParamsView<double, B>{gg.data(), gg.size()});
  };
  run_backward(g, dx);
  for (std::size_t i = 0; i < dx.size(); ++i) {
    INFO("dx[" << i << "] was not assigned (still the NaN sentinel)");
    REQUIRE(!std::isnan(dx[i]));
  }
  std::vector<double> grad(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) grad[i] = g[i] - sentinel;

  // A second backward accumulates the same gradient again (and re-assigns dx).
  std::vector<double> dx2(x.size(), std::numeric_limits<double>::quiet_NaN());
  run_backward(g, dx2);
  for (std::size_t i = 0; i < p.size(); ++i) {
    INFO("parameter gradient " << i << " does not accumulate");
    REQUIRE(g[i] - sentinel == Approx(2 * grad[i]).margin(1e-9));
  }
  for (std::size_t i = 0; i < dx.size(); ++i) REQUIRE(dx2[i] == Approx(dx[i]).margin(1e-12));

  // Finite differences of f = Σ y ∘ dy.
  auto f_at = [&](const std::vector<double>& pp, const std::vector<double>& xx) {
    return dot(hz.forward(pp, xx), dy);
  };
  auto fd_check = [&](std::vector<double>& v, const std::vector<double>& analytic, bool is_param,
                      const char* what) {
    double scale = 1e-12;
    for (double a : analytic) scale = std::max(scale, std::abs(a));
    const std::size_t n = v.size();
    const std::size_t stride = n > o.max_checks ? n / o.max_checks + 1 : 1;
    double worst = 0;
    std::size_t worst_i = 0;
    for (std::size_t i = 0; i < n; i += stride) {
      const double keep_v = v[i];
      v[i] = keep_v + o.h;
      const double fp = is_param ? f_at(v, x) : f_at(p, v);
      v[i] = keep_v - o.h;
      const double fm = is_param ? f_at(v, x) : f_at(p, v);
      v[i] = keep_v;
      const double num = (fp - fm) / (2 * o.h);
      const double err = std::abs(num - analytic[i]) / scale;
      if (err > worst) {
        worst = err;
        worst_i = i;
      }
    }
    INFO(what << ": worst relative error " << worst << " at index " << worst_i << " (analytic "
              << analytic[worst_i] << ", scale " << scale << ")");
    REQUIRE(worst <= o.tol);
  };
  if (!p.empty()) fd_check(p, grad, true, "parameter gradient");
  if (o.check_dx) fd_check(x, dx, false, "input gradient");

  // Mixers: backward_pre (from a gradient w.r.t. the pre-projection output) against finite
  // differences of f = Σ pre ∘ dpre, with the same sentinels.
  if constexpr (requires { typename L::template Ctx<B>; } &&
                requires(const typename L::template Ctx<B>& cc) { cc.pre_projection(); }) {
    if (o.mixer) {
      typename L::template Ctx<B> pc;
      std::vector<double> y3(hz.out.size());
      layer.forward(seqswap::ParamsView<const double, B>{p.data(), p.size()},
                    seqswap::view_of<const double, B>(x.data(), in, hz.kp()),
                    seqswap::view_of<double, B>(y3.data(), hz.out, hz.kp_out()), pc);
      const auto pre = pc.pre_projection();
      const auto pre_size = static_cast<std::size_t>(pre.total() * pre.dim);
      std::vector<double> dpre(pre_size);
      for (auto& v : dpre) v = rng.normal();
      std::vector<double> gp(p.size(), sentinel), dxp(x.size(), std::numeric_limits<double>::quiet_NaN());
      Layout pre_layout{pre.batch, pre.dim, {pre.offsets, pre.offsets + pre.batch + 1}};
      layer.backward_pre(seqswap::ParamsView<const double, B>{p.data(), p.size()}, pc,
                         seqswap::view_of<const double, B>(dpre.data(), pre_layout, hz.kp()),
                         seqswap::view_of<double, B>(dxp.data(), in, hz.kp()),
                         seqswap::ParamsView<double, B>{gp.data(), gp.size()});
      for (std::size_t i = 0; i < dxp.size(); ++i) {
        INFO("backward_pre: dx[" << i << "] was not assigned");
        REQUIRE(!std::isnan(dxp[i]));
      }
      std::vector<double> gpre(p.size());
      for (std::size_t i = 0; i < p.size(); ++i) gpre[i] = gp[i] - sentinel;
      // Masked rows of dpre carry no meaning (pre is zero there): the objective ignores them.
      std::vector<double> dpre_kept = dpre;
      if (hz.kp())
        for (index_t t = 0; t < pre.total(); ++t)
          if (!o.keep[t]) std::fill(dpre_kept.begin() + t * pre.dim, dpre_kept.begin() + (t + 1) * pre.dim, 0.0);
      auto pre_at = [&](const std::vector<double>& pp, const std::vector<double>& xx) {
        typename L::template Ctx<B> c2;
        std::vector<double> yy(hz.out.size());
        layer.forward(seqswap::ParamsView<const double, B>{pp.data(), pp.size()},
                      seqswap::view_of<const double, B>(xx.data(), in, hz.kp()),
                      seqswap::view_of<double, B>(yy.data(), hz.out, hz.kp_out()), c2);
        const auto pr = c2.pre_projection();
        double s2 = 0;
        for (std::size_t i = 0; i < pre_size; ++i) s2 += pr.data[i] * dpre_kept[i];
        return s2;
      };
      auto fd_pre = [&](std::vector<double>& v, const std::vector<double>& analytic, bool is_param,
                        const char* what) {
        double scale = 1e-12;
        for (double a : analytic) scale = std::max(scale, std::abs(a));
        const std::size_t n = v.size();
        const std::size_t stride = n > o.max_checks ? n / o.max_checks + 1 : 1;
        double worst = 0;
        for (std::size_t i = 0; i < n; i += stride) {
          const double keep_v = v[i];
          v[i] = keep_v + o.h;
          const double fp = is_param ? pre_at(v, x) : pre_at(p, v);
          v[i] = keep_v - o.h;
          const double fm = is_param ? pre_at(v, x) : pre_at(p, v);
          v[i] = keep_v;
          worst = std::max(worst, std::abs((fp - fm) / (2 * o.h) - analytic[i]) / scale);
        }
        INFO("backward_pre " << what << ": worst relative error " << worst);
        REQUIRE(worst <= o.tol);
      };
      if (!p.empty()) fd_pre(p, gpre, true, "parameter gradient");
      if (o.check_dx) fd_pre(x, dxp, false, "input gradient");
    }
  }

  // Masks: masked rows of a mixer's output are zero; masked inputs influence nothing.
  if (!o.keep.empty() && hz.out.same_tokens(in)) {
    const index_t D = hz.out.dim;
    if (o.mixer)
      for (index_t t = 0; t < in.total(); ++t)
        if (!o.keep[t])
          for (index_t j = 0; j < D; ++j) REQUIRE(y[t * D + j] == 0.0);
    std::vector<double> x2 = x;
    for (index_t t = 0; t < in.total(); ++t)
      if (!o.keep[t])
        for (index_t j = 0; j < in.dim; ++j) x2[t * in.dim + j] += 10.0 * rng.normal();
    const auto y2 = hz.forward(p, x2);
    for (index_t t = 0; t < in.total(); ++t) {
      if (!o.keep[t]) continue;  // kept tokens must not see the masked ones
      for (index_t j = 0; j < D; ++j) REQUIRE(y2[t * D + j] == Approx(y[t * D + j]).margin(1e-12));
    }
  }
}

// The sizes every token layer is checked at: N = 1, 17, 50 and a ragged batch.
inline std::vector<Layout> standard_layouts(index_t dim) {
  return {Layout::dense(2, 1, dim), Layout::dense(2, 17, dim), Layout::dense(1, 50, dim),
          Layout::ragged({3, 17, 1, 6}, dim)};
}

// A keep-mask over `l`'s tokens: token 0 of each sequence kept, roughly a third of the rest
// dropped (deterministic).
inline std::vector<std::uint8_t> some_mask(const Layout& l) {
  std::vector<std::uint8_t> keep(static_cast<std::size_t>(l.total()), 1);
  for (index_t b = 0; b < l.batch; ++b)
    for (index_t t = 1; t < l.length(b); ++t)
      if ((t * 7 + b) % 3 == 0) keep[static_cast<std::size_t>(l.offsets[b] + t)] = 0;
  return keep;
}

}  // namespace conformance
