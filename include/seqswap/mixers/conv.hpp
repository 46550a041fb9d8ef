// Depthwise convolution mixer (METHOD.md, "Replacement modules": depthwise convolution over
// the patch grid (k×k) or the token sequence (1D) + pointwise):
//
//   z   = dwconv(keep ∘ x) + b_dw       (T, D)   "dw": one k×k (or k) filter per channel
//   pre = z W_pwᵀ + b_pw                (T, D)   "pointwise"
//   y   = pre W_projᵀ + b_proj          (T, D)   "proj" (reuses the teacher's projection)
//
// conv::Grid2d: every sequence is a CLS token (row 0) plus a G×G patch grid in raster order
// (n = 1 + G²; n = 1 is CLS alone). The k×k filter runs over the grid, centred, zero padded,
// exactly torch's F.conv2d(padding=k/2, groups=D). The CLS token is not on the grid, so it
// gets its own rule: z_cls = cls_weight ⊙ x_cls + cls_mix ⊙ mean_{kept patches} x_patch
// (the mean is 0 when no patch is kept). Ragged or packed batches (other lengths) are an
// error: drop tokens with the keep-mask instead.
// conv::Seq1d: a centred odd-k filter over each sequence in scan order (any length), zero
// padded at both ends: torch's F.conv1d(padding=k/2, groups=D) on the permuted sequence.
//
// Masked tokens count as zeros in every neighbourhood (so a masked batch is not the same as
// the packed batch of its kept tokens: positions keep their place) and their rows of z, pre
// and y are exactly zero.
//
// A composition (mixers/projected.hpp): ConvMixer<T, Kind> = Projected<ConvCore<T, Kind>>
// (Grid2d) or Projected<Ordered<ConvCore<T, Kind>>> (Seq1d: the filter runs along the scan
// order). The Kind tag selects the filter's delegate class, conv::Filter<Kind> (its taps, its
// extra parameters, its neighbourhoods, its CLS rule), CUB style: a new kind is a new tag and
// a new Filter specialisation, not a branch inside the core.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/mixers/ordered.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/mixers/scan_order.hpp"
#include "seqswap/ops/conv_rows.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/mask.hpp"

namespace seqswap::mixers {

struct ConvMixerOptions {
  index_t dim = 0;
  index_t kernel = 3;        // odd: the filter is centred on its token
  order::ScanOrder order{};  // Seq1d only: the order the 1D filter runs along
  std::string name = "attn";
};

namespace conv {
struct Grid2d {};  // k×k over the CLS + G×G patch grid
struct Seq1d {};   // k over the tokens in scan order

// Filter<Kind>: the delegate class of a kind. It names the kind, counts its taps and extra
// parameters, checks a layout, and walks neighbourhoods:
//   for_taps(s, b, t, f)             f(q, src row) for every tap q of output row t (sequence b)
//   for_taps_transposed(s, b, t, f)  f(q, dst row) for every output row that reads row t via q
// where s is the per-forward state (Filter::State) set by prepare(). Grid2d adds CLS's rule.
template <class Kind>
struct Filter {
  static_assert(dependent_false<Kind>, "ConvMixer: unknown kind; use seqswap::mixers::conv::Grid2d or conv::Seq1d");
};

template <>
struct Filter<Grid2d> {
  static constexpr const char* kind_name = "conv_mixer";
  static constexpr bool kOrdered = false;  // runs on the grid, not along a scan order
  static constexpr bool kCls = true;       // CLS has its own rule (cls_weight, cls_mix)
  struct State {
    std::vector<index_t> grid;  // (B) G of each sequence
  };
  static index_t taps(index_t k) { return k * k; }
  static std::vector<index_t> shape(index_t D, index_t k) { return {D, 1, k, k}; }
  // G for a sequence of n = 1 + G² tokens; anything else is an error naming the length.
  static index_t grid_side(const std::string& name, index_t n, index_t b) {
    const auto G = static_cast<index_t>(std::llround(std::sqrt(double(n > 0 ? n - 1 : 0))));
    check(n >= 1 && G * G == n - 1, "ConvMixer '", name,
          "' (Grid2d): expected every sequence to be a CLS token plus a square patch grid "
          "(length 1 + G²), found length ",
          n, " in sequence ", b, "; drop tokens with a keep-mask rather than packing them");
    return G;
  }
  static void check_layout(const std::string& name, const Layout& in) {
    for (index_t b = 0; b < in.batch; ++b) grid_side(name, in.length(b), b);
  }
  static void prepare(State& s, const std::string& name, const index_t* offsets, index_t batch) {
    s.grid.resize(static_cast<std::size_t>(batch));
    for (index_t b = 0; b < batch; ++b) s.grid[b] = grid_side(name, offsets[b + 1] - offsets[b], b);
  }
  // Patch p = i·G + j of a sequence starting at row t0 (row t0 + 1 + p); tap q = u·k + v reads
  // patch (i+u-r, j+v-r) when on the grid (cross-correlation, like torch's conv2d).
  template <class F>
  static void for_taps(const State& s, index_t k, index_t t0, index_t b, index_t t, F&& f) {
    const index_t G = s.grid[b], r = k / 2, p = t - t0 - 1, i = p / G, j = p % G;
    for (index_t u = 0; u < k; ++u) {
      const index_t ii = i + u - r;
      if (ii < 0 || ii >= G) continue;
      for (index_t v = 0; v < k; ++v) {
        const index_t jj = j + v - r;
        if (jj >= 0 && jj < G) f(u * k + v, t0 + 1 + ii * G + jj);
      }
    }
  }
  template <class F>
  static void for_taps_transposed(const State& s, index_t k, index_t t0, index_t b, index_t t, F&& f) {
    const index_t G = s.grid[b], r = k / 2, p = t - t0 - 1, i = p / G, j = p % G;
    for (index_t u = 0; u < k; ++u) {
      const index_t ii = i - u + r;
      if (ii < 0 || ii >= G) continue;
      for (index_t v = 0; v < k; ++v) {
        const index_t jj = j - v + r;
        if (jj >= 0 && jj < G) f(u * k + v, t0 + 1 + ii * G + jj);
      }
    }
  }
};

template <>
struct Filter<Seq1d> {
  static constexpr const char* kind_name = "conv_mixer_1d";
  static constexpr bool kOrdered = true;  // Ordered<> hands it the tokens in scan order
  static constexpr bool kCls = false;
  struct State {
    const index_t* offsets = nullptr;
  };
  static index_t taps(index_t k) { return k; }
  static std::vector<index_t> shape(index_t D, index_t k) { return {D, 1, k}; }
  static void check_layout(const std::string&, const Layout&) {}
  static void prepare(State& s, const std::string&, const index_t* offsets, index_t) { s.offsets = offsets; }
  // Position m = t - t0 of a sequence of n: tap q reads position m + q - r when inside.
  template <class F>
  static void for_taps(const State& s, index_t k, index_t t0, index_t b, index_t t, F&& f) {
    const index_t n = s.offsets[b + 1] - t0, r = k / 2, m = t - t0;
    for (index_t q = 0; q < k; ++q) {
      const index_t src = m + q - r;
      if (src >= 0 && src < n) f(q, t0 + src);
    }
  }
  template <class F>
  static void for_taps_transposed(const State& s, index_t k, index_t t0, index_t b, index_t t, F&& f) {
    const index_t n = s.offsets[b + 1] - t0, r = k / 2, m = t - t0;
    for (index_t q = 0; q < k; ++q) {
      const index_t dst = m - q + r;
      if (dst >= 0 && dst < n) f(q, t0 + dst);
    }
  }
};
}  // namespace conv

// The depthwise filter and the pointwise mix: x (rows, D) -> pre (rows, D).
template <class T = float, class Kind = conv::Grid2d>
class ConvCore {
  using Filter = conv::Filter<Kind>;
  static_assert(sizeof(Filter) > 0);

 public:
  using scalar_type = T;
  using Options = ConvMixerOptions;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> pw_ctx;
    typename Filter::State filter;
    Layout layout;                       // (rows, D) with the input's offsets
    const T* x = nullptr;                // (rows, D) the forward input
    const std::uint8_t* keep = nullptr;  // (rows) or null
    std::vector<index_t> seq;            // (rows) sequence of each row
    Buffer<T, B> wt;     // (K, D) the filters transposed: one row per tap, channels contiguous
    Buffer<T, B> mean;   // CLS rule: (B, D) mean of kept patch rows of x
    Buffer<T, B> count;  // CLS rule: (B) kept patches
    Buffer<T, B> z;      // (rows, D) depthwise output
    Buffer<T, B> dz, acc;  // backward; acc: (threads, K + 3, D) per-thread partial sums
    Buffer<index_t, B> dev_offsets;  // backend::Cuda: the offsets there, uploaded when they change
    Offsets dev_offsets_of;
  };

  ConvCore() = default;
  explicit ConvCore(ConvMixerOptions o) : o_(std::move(o)) {
    check(o_.dim > 0, "ConvMixer '", o_.name, "': expected width > 0, found ", o_.dim);
    check(o_.kernel > 0 && o_.kernel % 2 == 1, "ConvMixer '", o_.name,
          "': expected an odd kernel size (centred filter), found ", o_.kernel);
    pointwise_ = layers::Linear<T>({.in = o_.dim, .out = o_.dim, .bias = true, .name = "pointwise"});
  }
  const ConvMixerOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return Filter::kind_name; }
  index_t width() const { return o_.dim; }
  // dw.weight (D·K) + dw.bias (D) [+ cls_weight, cls_mix (2D)] + pointwise
  std::size_t param_count() const { return dw_count() + pointwise_.param_count(); }
  // Every tap and the pointwise mix are applied once per token.
  double flops(const Layout& in) const { return 2.0 * double(param_count()) * double(in.total()); }
  void check_layout(const Layout& in) const { Filter::check_layout(o_.name, in); }

  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    const index_t D = o_.dim, K = taps();
    const auto Du = static_cast<std::size_t>(D), DK = static_cast<std::size_t>(D * K);
    // torch's Conv default: U(-1/√fan_in, 1/√fan_in), fan_in = K for a depthwise filter
    const double bound = 1.0 / std::sqrt(double(K));
    f(ParamInfo{join_name(base, "dw.weight"), Filter::shape(D, o_.kernel), offset, DK, true, Init::uniform, bound});
    f(ParamInfo{join_name(base, "dw.bias"), {D}, offset + DK, Du, false, Init::uniform, bound});
    if constexpr (Filter::kCls) {
      // z_cls = x_cls + mean(patches) at initialisation
      f(ParamInfo{join_name(base, "cls_weight"), {D}, offset + DK + Du, Du, false, Init::ones, 0.0});
      f(ParamInfo{join_name(base, "cls_mix"), {D}, offset + DK + 2 * Du, Du, false, Init::ones, 0.0});
    }
    pointwise_.visit_params(f, base, offset + dw_count());
  }

  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    if constexpr (backend::is_cuda<B>)
      forward_device(p, x, pre, c);
    else
      forward_host(p, x, pre, c);
  }
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(p, c, dpre, dx, g);
    else
      backward_host(p, c, dpre, dx, g);
  }

 private:
  // The device path (backend::Cuda): the neighbourhoods and sums of the host path below as the
  // functors of ops/conv_rows.hpp, one thread per output element or per parameter, every sum
  // over rows in order. The layout is checked on the host (Filter::prepare), as there.
  ops::conv::Geometry device_geometry(const index_t* dev_offsets, index_t batch) const {
    return {Filter::kCls, o_.kernel, taps(), o_.dim, batch, dev_offsets};
  }
  template <class B>
  void forward_device(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, rows = x.total();
    c.x = x.data;
    c.keep = x.keep;
    c.layout = Layout{x.batch, D, {x.offsets, x.offsets + x.batch + 1}};
    Filter::prepare(c.filter, o_.name, x.offsets, x.batch);  // checks the lengths (Grid2d)
    const auto geo = device_geometry(ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of),
                                     x.batch);
    c.z.resize(static_cast<std::size_t>(rows * D));
    if constexpr (Filter::kCls) {
      c.mean.resize(static_cast<std::size_t>(x.batch * D));
      c.count.resize(static_cast<std::size_t>(x.batch));
      ops::device::for_each(x.batch * D, ops::conv::PatchMean<T>{geo, x.data, x.keep, c.mean.data(), c.count.data()},
                            "conv mixer: patch means");
    }
    ops::device::for_each(rows * D, ops::conv::Forward<T>{geo, x.data, p.data, Filter::kCls ? c.mean.data() : nullptr,
                                                          x.keep, c.z.data()}, "conv mixer: depthwise filter");
    pointwise_.forward(pw_params(p), TokensView<const T, B>(view_of<T, B>(c.z.data(), c.layout, x.keep)), pre,
                       c.pw_ctx);
    ops::device::zero_masked_rows(pre.data, rows, D, x.keep);
  }
  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                       ParamsView<T, B> g) const {
    const index_t D = o_.dim, K = taps(), rows = c.layout.total();
    const auto geo = device_geometry(c.dev_offsets.data(), c.layout.batch);
    c.dz.resize(static_cast<std::size_t>(rows * D));
    pointwise_.backward(pw_params(p), c.pw_ctx, dpre, view_of<T, B>(c.dz.data(), c.layout), pw_params(g));
    const T* mean = Filter::kCls ? c.mean.data() : nullptr;
    ops::device::for_each(D * (K + 3), ops::conv::ParamGrad<T>{geo, c.x, c.dz.data(), mean, c.keep, g.data},
                          "conv mixer: filter gradients");
    if (dx.data)
      ops::device::for_each(rows * D, ops::conv::InputGrad<T>{geo, p.data, c.dz.data(),
                                                              Filter::kCls ? c.count.data() : nullptr, c.keep, dx.data},
                            "conv mixer: input gradient");
  }

  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = o_.dim, K = taps(), rows = x.total();
    c.x = x.data;
    c.keep = x.keep;
    c.layout = Layout{x.batch, D, {x.offsets, x.offsets + x.batch + 1}};
    Filter::prepare(c.filter, o_.name, x.offsets, x.batch);
    c.seq.resize(static_cast<std::size_t>(rows));
    for (index_t b = 0; b < x.batch; ++b) std::fill(c.seq.begin() + x.offsets[b], c.seq.begin() + x.offsets[b + 1], b);
    // wt[tap][ch] = w[ch][tap], so that the inner loops run over contiguous channels
    c.wt.resize(static_cast<std::size_t>(K * D));
    for (index_t ch = 0; ch < D; ++ch)
      for (index_t q = 0; q < K; ++q) c.wt[q * D + ch] = p.data[ch * K + q];
    c.z.resize(static_cast<std::size_t>(rows * D));
    if constexpr (Filter::kCls) {
      c.mean.assign(static_cast<std::size_t>(x.batch * D), T(0));
      c.count.assign(static_cast<std::size_t>(x.batch), T(0));
#pragma omp parallel for schedule(static) if (x.batch > 1)
      for (index_t b = 0; b < x.batch; ++b) {
        T* m = c.mean.data() + b * D;  // (D)
        index_t kept = 0;
        for (index_t t = x.offsets[b] + 1; t < x.offsets[b + 1]; ++t) {
          if (!x.kept(t)) continue;
          ++kept;
          for (index_t ch = 0; ch < D; ++ch) m[ch] += x.data[t * D + ch];
        }
        c.count[b] = T(kept);
        if (kept > 0)
          for (index_t ch = 0; ch < D; ++ch) m[ch] /= T(kept);
      }
    }
    // z: one output row per task, gathered from its neighbourhood
    const T* bias = p.data + D * K;  // (D)
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      T* zt = c.z.data() + t * D;  // (D)
      if (!x.kept(t)) {
        std::fill(zt, zt + D, T(0));
        continue;
      }
      const index_t b = c.seq[t], t0 = x.offsets[b];
      if constexpr (Filter::kCls) {
        if (t == t0) {  // CLS: z = cls_weight ⊙ x_cls + cls_mix ⊙ mean
          const T *cw = bias + D, *cm = bias + 2 * D, *m = c.mean.data() + b * D;
          for (index_t ch = 0; ch < D; ++ch) zt[ch] = cw[ch] * x.data[t * D + ch] + cm[ch] * m[ch];
          continue;
        }
      }
      std::copy(bias, bias + D, zt);
      Filter::for_taps(c.filter, o_.kernel, t0, b, t, [&](index_t q, index_t src) {
        if (!x.kept(src)) return;
        const T* w = c.wt.data() + q * D;
        const T* xs = x.data + src * D;
        for (index_t ch = 0; ch < D; ++ch) zt[ch] += w[ch] * xs[ch];
      });
    }
    // pre = keep ∘ pointwise(z)
    pointwise_.forward(pw_params(p), TokensView<const T, B>(view_of<T, B>(c.z.data(), c.layout, x.keep)), pre,
                       c.pw_ctx);
    if (x.keep) ops::zero_masked_rows(pre.data, rows, D, x.keep);
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    const index_t D = o_.dim, K = taps(), rows = c.layout.total();
    const index_t* offsets = c.layout.offsets.data();
    const std::uint8_t* keep = c.keep;
    auto kept = [keep](index_t t) { return keep == nullptr || keep[t] != 0; };
    c.dz.resize(static_cast<std::size_t>(rows * D));
    // pre = keep ∘ pointwise(z): dpre's masked rows are zero already, hence so are dz's
    pointwise_.backward(pw_params(p), c.pw_ctx, dpre, view_of<T, B>(c.dz.data(), c.layout), pw_params(g));

    // Filter gradients: per-thread partial sums over output rows, reduced afterwards.
    // acc rows: K taps, then bias, then (CLS rule) cls_weight, cls_mix.
    const int threads = host::max_threads();
    const index_t A = K + 3;
    c.acc.assign(static_cast<std::size_t>(threads * A * D), T(0));
    const T* x = c.x;
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      T* acc = c.acc.data() + host::thread_id() * A * D;  // (A, D)
      if (!kept(t)) continue;
      const T* dzt = c.dz.data() + t * D;
      const index_t b = c.seq[t], t0 = offsets[b];
      if constexpr (Filter::kCls) {
        if (t == t0) {  // z_cls = cls_weight ⊙ x_cls + cls_mix ⊙ mean
          const T* m = c.mean.data() + b * D;
          for (index_t ch = 0; ch < D; ++ch) {
            acc[(K + 1) * D + ch] += dzt[ch] * x[t * D + ch];
            acc[(K + 2) * D + ch] += dzt[ch] * m[ch];
          }
          continue;
        }
      }
      // z_t = b + Σ_q w_q ⊙ x_src(q)  =>  db += dz_t,  dw_q += dz_t ⊙ x_src(q)
      for (index_t ch = 0; ch < D; ++ch) acc[K * D + ch] += dzt[ch];
      Filter::for_taps(c.filter, o_.kernel, t0, b, t, [&](index_t q, index_t src) {
        if (!kept(src)) return;
        for (index_t ch = 0; ch < D; ++ch) acc[q * D + ch] += dzt[ch] * x[src * D + ch];
      });
    }
    for (int th = 0; th < threads; ++th) {
      const T* acc = c.acc.data() + th * A * D;
      for (index_t ch = 0; ch < D; ++ch) {
        for (index_t q = 0; q < K; ++q) g.data[ch * K + q] += acc[q * D + ch];
        g.data[D * K + ch] += acc[K * D + ch];
        if constexpr (Filter::kCls) {
          g.data[D * K + D + ch] += acc[(K + 1) * D + ch];
          g.data[D * K + 2 * D + ch] += acc[(K + 2) * D + ch];
        }
      }
    }
    if (!dx.data) return;

    // dx: the transposed filter, gathered per input row (a masked input row gets exactly 0).
    const T* cw = p.data + D * K + D;      // (D) CLS rule
    const T* cm = p.data + D * K + 2 * D;  // (D) CLS rule
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      T* dxt = dx.data + t * D;
      std::fill(dxt, dxt + D, T(0));
      if (!kept(t)) continue;
      const index_t b = c.seq[t], t0 = offsets[b];
      if constexpr (Filter::kCls) {
        const T* dzc = c.dz.data() + t0 * D;  // (D) the CLS row's gradient
        if (t == t0) {  // dx_cls = cls_weight ⊙ dz_cls
          for (index_t ch = 0; ch < D; ++ch) dxt[ch] = cw[ch] * dzc[ch];
          continue;
        }
        // z_cls = … + cls_mix ⊙ Σ_kept x_patch / count  =>  dx_patch = cls_mix ⊙ dz_cls / count
        const T inv = T(1) / c.count[b];
        for (index_t ch = 0; ch < D; ++ch) dxt[ch] = cm[ch] * dzc[ch] * inv;
      }
      // z_dst = Σ_q w_q ⊙ x_src  =>  dx_t = Σ_q w_q ⊙ dz_dst(q)  (masked dz rows are zero)
      Filter::for_taps_transposed(c.filter, o_.kernel, t0, b, t, [&](index_t q, index_t dst) {
        const T* w = c.wt.data() + q * D;
        const T* dzd = c.dz.data() + dst * D;
        for (index_t ch = 0; ch < D; ++ch) dxt[ch] += w[ch] * dzd[ch];
      });
    }
    (void)cw;
    (void)cm;
  }

  index_t taps() const { return Filter::taps(o_.kernel); }
  std::size_t dw_count() const {
    return static_cast<std::size_t>(o_.dim * taps() + o_.dim + (Filter::kCls ? 2 * o_.dim : 0));
  }
  template <class P>
  P pw_params(P p) const { return p.sub(dw_count(), pointwise_.param_count()); }

  ConvMixerOptions o_;
  layers::Linear<T> pointwise_;
};

static_assert(MixerCore<ConvCore<double, conv::Grid2d>>);
static_assert(MixerCore<ConvCore<double, conv::Seq1d>>);

template <class T = float, class Kind = conv::Grid2d>
using ConvMixer = Projected<std::conditional_t<conv::Filter<Kind>::kOrdered, Ordered<ConvCore<T, Kind>>,
                                               ConvCore<T, Kind>>>;

static_assert(Mixer<ConvMixer<float, conv::Grid2d>, backend::Host>);
static_assert(Mixer<ConvMixer<double, conv::Grid2d>, backend::Host>);
static_assert(Mixer<ConvMixer<float, conv::Seq1d>, backend::Host>);
static_assert(Mixer<ConvMixer<double, conv::Seq1d>, backend::Host>);

}  // namespace seqswap::mixers
