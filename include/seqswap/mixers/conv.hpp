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
#pragma once
#include "seqswap/layers/output_projection.hpp"
#include "seqswap/ops/mask.hpp"
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/mixers/scan_order.hpp"

namespace seqswap::mixers {

namespace conv {
struct Grid2d {};  // k×k over the CLS + G×G patch grid
struct Seq1d {};   // k over the tokens in scan order
}  // namespace conv

template <class Kind>
struct ConvKindTraits {
  static_assert(dependent_false<Kind>,
                "ConvMixer: unknown kind; use seqswap::mixers::conv::Grid2d or conv::Seq1d");
};
template <>
struct ConvKindTraits<conv::Grid2d> {
  static constexpr bool kGrid = true;
  static constexpr const char* kind_name = "conv_mixer";
};
template <>
struct ConvKindTraits<conv::Seq1d> {
  static constexpr bool kGrid = false;
  static constexpr const char* kind_name = "conv_mixer_1d";
};

struct ConvMixerOptions {
  index_t dim = 0;
  index_t kernel = 3;        // odd: the filter is centred on its token
  order::ScanOrder order{};  // Seq1d only: the order the 1D filter runs along
  std::string name = "attn";
};

template <class T = float, class Kind = conv::Grid2d>
class ConvMixer : public layers::ProjectedMixer<ConvMixer<T, Kind>, T> {
  using Traits = ConvKindTraits<Kind>;
  static_assert(sizeof(Traits) > 0);
  static constexpr bool kGrid = Traits::kGrid;

 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    typename layers::Linear<T>::template Ctx<B> pw_ctx, proj_ctx;
    Layout layout;                      // (T, D) with the input's offsets
    const T* x = nullptr;               // (T, D) the forward input
    const std::uint8_t* keep = nullptr;  // (T) or null
    std::vector<index_t> perm;          // Seq1d: (T) row at scan position k; empty = identity
    std::vector<index_t> seq;           // (T) sequence of row (Grid2d) / scan position (Seq1d)
    std::vector<index_t> grid;          // Grid2d: (B) G of each sequence
    Buffer<T> wt;     // (K, D) the filters transposed: one row per tap, channels contiguous
    Buffer<T> mean;   // Grid2d: (B, D) mean of kept patch rows of x
    Buffer<T> count;  // Grid2d: (B) kept patches
    Buffer<T> z;      // (T, D) depthwise output
    Buffer<T> pre;    // (T, D) pre-projection output
    // backward
    Buffer<T> dy_masked, dpre, dz, acc;  // acc: (threads, K + 3, D) per-thread partial sums

    TokensView<const T, B> pre_projection() const {
      return {pre.data(), layout.offsets.data(), layout.batch, layout.dim, keep};
    }
  };

  ConvMixer() = default;
  explicit ConvMixer(ConvMixerOptions o) : o_(std::move(o)) {
    check(o_.dim > 0, "ConvMixer '", o_.name, "': expected width > 0, found ", o_.dim);
    check(o_.kernel > 0 && o_.kernel % 2 == 1, "ConvMixer '", o_.name,
          "': expected an odd kernel size (centred filter), found ", o_.kernel);
    pointwise_ = layers::Linear<T>({.in = o_.dim, .out = o_.dim, .bias = true, .name = "pointwise"});
    proj_ = layers::Linear<T>({.in = o_.dim, .out = o_.dim, .bias = true, .name = "proj"});
  }
  const ConvMixerOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return Traits::kind_name; }

  // dw.weight (D·K) + dw.bias (D) [+ cls_weight, cls_mix (2D)] + pointwise + proj
  std::size_t param_count() const {
    return dw_count() + pointwise_.param_count() + proj_.param_count();
  }
  std::size_t proj_param_offset() const { return dw_count() + pointwise_.param_count(); }

  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.dim, "ConvMixer '", o_.name, "': expected width ", o_.dim, ", found ",
          in.dim);
    if constexpr (kGrid)
      for (index_t b = 0; b < in.batch; ++b) grid_side(in.length(b), b);
    out = in;
  }

  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const std::string base = join_name(prefix, o_.name);
    const index_t D = o_.dim, k = o_.kernel, K = taps();
    const auto Du = static_cast<std::size_t>(D), DK = static_cast<std::size_t>(D * K);
    // torch's Conv default: U(-1/√fan_in, 1/√fan_in), fan_in = K for a depthwise filter
    const double bound = 1.0 / std::sqrt(double(K));
    std::vector<index_t> shape = kGrid ? std::vector<index_t>{D, 1, k, k} : std::vector<index_t>{D, 1, k};
    f(ParamInfo{join_name(base, "dw.weight"), shape, offset, DK, true, Init::uniform, bound});
    f(ParamInfo{join_name(base, "dw.bias"), {D}, offset + DK, Du, false, Init::uniform, bound});
    if constexpr (kGrid) {
      // z_cls = x_cls + mean(patches) at initialisation
      f(ParamInfo{join_name(base, "cls_weight"), {D}, offset + DK + Du, Du, false, Init::ones, 0.0});
      f(ParamInfo{join_name(base, "cls_mix"), {D}, offset + DK + 2 * Du, Du, false, Init::ones, 0.0});
    }
    pointwise_.visit_params(f, base, offset + dw_count());
    proj_.visit_params(f, base, offset + proj_param_offset());
  }

  // x (T, D) -> y (T, D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const index_t D = o_.dim, K = taps(), rows = x.total();
    check(x.dim == D, "ConvMixer '", o_.name, "': expected width ", D, ", found ", x.dim);
    c.x = x.data;
    c.keep = x.keep;
    c.layout = Layout{x.batch, D, {x.offsets, x.offsets + x.batch + 1}};
    c.seq.resize(static_cast<std::size_t>(rows));
    for (index_t b = 0; b < x.batch; ++b)
      std::fill(c.seq.begin() + x.offsets[b], c.seq.begin() + x.offsets[b + 1], b);
    if constexpr (kGrid) {
      c.grid.resize(static_cast<std::size_t>(x.batch));
      for (index_t b = 0; b < x.batch; ++b) c.grid[b] = grid_side(x.length(b), b);
    } else if (!o_.order.is_identity()) {
      order::batch_permutation(o_.order, x.offsets, x.batch, c.perm);
    } else {
      c.perm.clear();
    }
    // wt[tap][ch] = w[ch][tap], so that the inner loops run over contiguous channels
    c.wt.resize(static_cast<std::size_t>(K * D));
    for (index_t ch = 0; ch < D; ++ch)
      for (index_t q = 0; q < K; ++q) c.wt[q * D + ch] = p.data[ch * K + q];
    c.z.resize(static_cast<std::size_t>(rows * D));
    c.pre.resize(static_cast<std::size_t>(rows * D));

    if constexpr (kGrid) {
      c.mean.assign(static_cast<std::size_t>(x.batch * D), T(0));
      c.count.assign(static_cast<std::size_t>(x.batch), T(0));
#pragma omp parallel for schedule(static) if (x.batch > 1)
      for (index_t b = 0; b < x.batch; ++b) {
        const index_t t0 = x.offsets[b], n = x.length(b);
        T* m = c.mean.data() + b * D;  // (D)
        index_t kept = 0;
        for (index_t t = t0 + 1; t < t0 + n; ++t) {
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
      if constexpr (kGrid) {
        T* zt = c.z.data() + t * D;  // (D)
        if (!x.kept(t)) {
          std::fill(zt, zt + D, T(0));
          continue;
        }
        const index_t b = c.seq[t], t0 = x.offsets[b];
        if (t == t0) {  // CLS: z = cls_weight ⊙ x_cls + cls_mix ⊙ mean
          const T* cw = bias + D;
          const T* cm = bias + 2 * D;
          const T* m = c.mean.data() + b * D;
          for (index_t ch = 0; ch < D; ++ch) zt[ch] = cw[ch] * x.data[t * D + ch] + cm[ch] * m[ch];
          continue;
        }
        std::copy(bias, bias + D, zt);
        for_grid_taps(c.grid[c.seq[t]], t - t0 - 1, [&](index_t q, index_t src) {
          const index_t ts = t0 + 1 + src;
          if (!x.kept(ts)) return;
          const T* w = c.wt.data() + q * D;
          const T* xs = x.data + ts * D;
          for (index_t ch = 0; ch < D; ++ch) zt[ch] += w[ch] * xs[ch];
        });
      } else {
        // scan position t -> row at(t); neighbours are scan positions of the same sequence
        const index_t row = at(c, t);
        T* zr = c.z.data() + row * D;
        if (!x.kept(row)) {
          std::fill(zr, zr + D, T(0));
          continue;
        }
        const index_t b = c.seq[t], t0 = x.offsets[b], n = x.length(b);
        std::copy(bias, bias + D, zr);
        for_seq_taps(n, t - t0, [&](index_t q, index_t src) {
          const index_t rs = at(c, t0 + src);
          if (!x.kept(rs)) return;
          const T* w = c.wt.data() + q * D;
          const T* xs = x.data + rs * D;
          for (index_t ch = 0; ch < D; ++ch) zr[ch] += w[ch] * xs[ch];
        });
      }
    }

    // pre = keep ∘ pointwise(z)
    pointwise_.forward(pw_params(p), TokensView<const T, B>(view_of<T, B>(c.z.data(), c.layout, x.keep)),
                       view_of<T, B>(c.pre.data(), c.layout, x.keep), c.pw_ctx);
    if (x.keep) ops::zero_masked_rows(c.pre.data(), rows, D, x.keep);
    proj_.forward(proj_params(p), TokensView<const T, B>(view_of<T, B>(c.pre.data(), c.layout, x.keep)),
                  y, c.proj_ctx);
    if (x.keep) ops::zero_masked_rows(y.data, rows, D, x.keep);
  }

  // backward / backward_pre come from layers::ProjectedMixer; both land here, starting from dy
  // (through the projection) or from dpre_in (the pre-projection gradient).
  template <class B>
  void backward_impl(ParamsView<const T, B> p, Ctx<B>& c, const T* dy_data, const T* dpre_in,
                     TokensView<T, B> dx, ParamsView<T, B> g) const {
    const index_t D = o_.dim, K = taps(), rows = c.layout.total();
    const index_t* offsets = c.layout.offsets.data();
    const std::uint8_t* keep = c.keep;
    auto kept = [keep](index_t t) { return keep == nullptr || keep[t] != 0; };

    c.dz.resize(static_cast<std::size_t>(rows * D));
    layers::projection_backward(proj_, proj_params(p), proj_params(g), c.proj_ctx, dy_data, dpre_in, c.layout,
                                keep, o_.dim, c.dy_masked, c.dpre);
    // pre = keep ∘ pointwise(z): dpre's masked rows are zero already, hence so are dz's
    pointwise_.backward(pw_params(p), c.pw_ctx,
                        TokensView<const T, B>(view_of<T, B>(c.dpre.data(), c.layout, keep)),
                        view_of<T, B>(c.dz.data(), c.layout), pw_params(g));

    // Filter gradients: per-thread partial sums over output rows, reduced afterwards.
    // acc rows: K taps, then bias, then (Grid2d) cls_weight, cls_mix.
    const int threads = host::max_threads();
    const index_t A = K + 3;
    c.acc.assign(static_cast<std::size_t>(threads * A * D), T(0));
    const T* x = c.x;
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      T* acc = c.acc.data() + host::thread_id() * A * D;  // (A, D)
      if constexpr (kGrid) {
        if (!kept(t)) continue;
        const T* dzt = c.dz.data() + t * D;
        const index_t b = c.seq[t], t0 = offsets[b];
        if (t == t0) {  // z_cls = cls_weight ⊙ x_cls + cls_mix ⊙ mean
          const T* m = c.mean.data() + b * D;
          for (index_t ch = 0; ch < D; ++ch) {
            acc[(K + 1) * D + ch] += dzt[ch] * x[t * D + ch];
            acc[(K + 2) * D + ch] += dzt[ch] * m[ch];
          }
          continue;
        }
        // z_p = b + Σ_q w_q ⊙ x_{p+q}  =>  db += dz_p,  dw_q += dz_p ⊙ x_{p+q}
        for (index_t ch = 0; ch < D; ++ch) acc[K * D + ch] += dzt[ch];
        for_grid_taps(c.grid[b], t - t0 - 1, [&](index_t q, index_t src) {
          const index_t ts = t0 + 1 + src;
          if (!kept(ts)) return;
          for (index_t ch = 0; ch < D; ++ch) acc[q * D + ch] += dzt[ch] * x[ts * D + ch];
        });
      } else {
        const index_t row = at(c, t);
        if (!kept(row)) continue;
        const T* dzr = c.dz.data() + row * D;
        const index_t b = c.seq[t], t0 = offsets[b], n = offsets[b + 1] - t0;
        for (index_t ch = 0; ch < D; ++ch) acc[K * D + ch] += dzr[ch];
        for_seq_taps(n, t - t0, [&](index_t q, index_t src) {
          const index_t rs = at(c, t0 + src);
          if (!kept(rs)) return;
          for (index_t ch = 0; ch < D; ++ch) acc[q * D + ch] += dzr[ch] * x[rs * D + ch];
        });
      }
    }
    for (int th = 0; th < threads; ++th) {
      const T* acc = c.acc.data() + th * A * D;
      for (index_t ch = 0; ch < D; ++ch) {
        for (index_t q = 0; q < K; ++q) g.data[ch * K + q] += acc[q * D + ch];
        g.data[D * K + ch] += acc[K * D + ch];
        if constexpr (kGrid) {
          g.data[D * K + D + ch] += acc[(K + 1) * D + ch];
          g.data[D * K + 2 * D + ch] += acc[(K + 2) * D + ch];
        }
      }
    }
    if (!dx.data) return;

    // dx: the transposed filter, gathered per input row (a masked input row gets exactly 0).
    const T* cw = p.data + D * K + D;      // (D) Grid2d
    const T* cm = p.data + D * K + 2 * D;  // (D) Grid2d
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      if constexpr (kGrid) {
        T* dxt = dx.data + t * D;
        if (!kept(t)) {
          std::fill(dxt, dxt + D, T(0));
          continue;
        }
        const index_t b = c.seq[t], t0 = offsets[b], G = c.grid[b];
        const T* dzc = c.dz.data() + t0 * D;  // (D) the CLS row's gradient
        if (t == t0) {  // dx_cls = cls_weight ⊙ dz_cls
          for (index_t ch = 0; ch < D; ++ch) dxt[ch] = cw[ch] * dzc[ch];
          continue;
        }
        // z_cls = … + cls_mix ⊙ Σ_kept x_patch / count  =>  dx_patch = cls_mix ⊙ dz_cls / count
        const T inv = T(1) / c.count[b];
        for (index_t ch = 0; ch < D; ++ch) dxt[ch] = cm[ch] * dzc[ch] * inv;
        // z_p = Σ_q w_q ⊙ x_{p+q}  =>  dx_s = Σ_q w_q ⊙ dz_{s-q}  (masked dz rows are zero)
        for_grid_taps_transposed(G, t - t0 - 1, [&](index_t q, index_t dst) {
          const T* w = c.wt.data() + q * D;
          const T* dzp = c.dz.data() + (t0 + 1 + dst) * D;
          for (index_t ch = 0; ch < D; ++ch) dxt[ch] += w[ch] * dzp[ch];
        });
      } else {
        const index_t row = at(c, t);
        T* dxr = dx.data + row * D;
        std::fill(dxr, dxr + D, T(0));
        if (!kept(row)) continue;
        const index_t b = c.seq[t], t0 = offsets[b], n = offsets[b + 1] - t0;
        for_seq_taps_transposed(n, t - t0, [&](index_t q, index_t dst) {
          const T* w = c.wt.data() + q * D;
          const T* dzr = c.dz.data() + at(c, t0 + dst) * D;
          for (index_t ch = 0; ch < D; ++ch) dxr[ch] += w[ch] * dzr[ch];
        });
      }
    }
  }

  template <class P>
  P pw_params(P p) const { return p.sub(dw_count(), pointwise_.param_count()); }
  template <class P>
  P proj_params(P p) const { return p.sub(proj_param_offset(), proj_.param_count()); }

 private:
  index_t taps() const { return kGrid ? o_.kernel * o_.kernel : o_.kernel; }
  std::size_t dw_count() const {
    return static_cast<std::size_t>(o_.dim * taps() + o_.dim + (kGrid ? 2 * o_.dim : 0));
  }

  // G for a sequence of n = 1 + G² tokens; anything else is an error naming the length.
  index_t grid_side(index_t n, index_t b) const {
    const auto G = static_cast<index_t>(std::llround(std::sqrt(double(n > 0 ? n - 1 : 0))));
    check(n >= 1 && G * G == n - 1, "ConvMixer '", o_.name,
          "' (Grid2d): expected every sequence to be a CLS token plus a square patch grid "
          "(length 1 + G²), found length ",
          n, " in sequence ", b, "; drop tokens with a keep-mask rather than packing them");
    return G;
  }

  // Scan position k (Seq1d) -> row.
  template <class C>
  static index_t at(const C& c, index_t k) {
    return c.perm.empty() ? k : c.perm[static_cast<std::size_t>(k)];
  }

  // f(q, src) for every tap q = u·k + v whose source patch (i+u-r, j+v-r) of output patch
  // p = i·G + j lies on the G×G grid (cross-correlation, like torch's conv2d).
  template <class F>
  void for_grid_taps(index_t G, index_t p, F&& f) const {
    const index_t k = o_.kernel, r = k / 2, i = p / G, j = p % G;
    for (index_t u = 0; u < k; ++u) {
      const index_t ii = i + u - r;
      if (ii < 0 || ii >= G) continue;
      for (index_t v = 0; v < k; ++v) {
        const index_t jj = j + v - r;
        if (jj >= 0 && jj < G) f(u * k + v, ii * G + jj);
      }
    }
  }
  // f(q, dst) for every output patch dst that reads source patch s through tap q.
  template <class F>
  void for_grid_taps_transposed(index_t G, index_t s, F&& f) const {
    const index_t k = o_.kernel, r = k / 2, i = s / G, j = s % G;
    for (index_t u = 0; u < k; ++u) {
      const index_t ii = i - u + r;
      if (ii < 0 || ii >= G) continue;
      for (index_t v = 0; v < k; ++v) {
        const index_t jj = j - v + r;
        if (jj >= 0 && jj < G) f(u * k + v, ii * G + jj);
      }
    }
  }
  // f(q, src): source position m + q - r of output position m in a sequence of n.
  template <class F>
  void for_seq_taps(index_t n, index_t m, F&& f) const {
    const index_t r = o_.kernel / 2;
    for (index_t q = 0; q < o_.kernel; ++q) {
      const index_t src = m + q - r;
      if (src >= 0 && src < n) f(q, src);
    }
  }
  // f(q, dst): output position s - q + r that reads source position s through tap q.
  template <class F>
  void for_seq_taps_transposed(index_t n, index_t s, F&& f) const {
    const index_t r = o_.kernel / 2;
    for (index_t q = 0; q < o_.kernel; ++q) {
      const index_t dst = s - q + r;
      if (dst >= 0 && dst < n) f(q, dst);
    }
  }


  ConvMixerOptions o_;
  layers::Linear<T> pointwise_, proj_;
};

static_assert(Mixer<ConvMixer<float, conv::Grid2d>, backend::Host>);
static_assert(Mixer<ConvMixer<double, conv::Grid2d>, backend::Host>);
static_assert(Mixer<ConvMixer<float, conv::Seq1d>, backend::Host>);
static_assert(Mixer<ConvMixer<double, conv::Seq1d>, backend::Host>);

}  // namespace seqswap::mixers
