// minGRU mixer (METHOD.md "Replacement modules", minGRU; Feng et al. 2024, "Were RNNs All We
// Needed?"), per direction:
//   z_t = σ(W_z x_t + b_z),  h̃_t = W_h x_t + b_h,  h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
// i.e. the linear recurrence h_t = a_t ⊙ h_{t-1} + b_t with a_t = 1 - z_t = σ(-u_t) and
// b_t = z_t ⊙ h̃_t, run by ops::linear_scan over the tokens in a ScanOrder. Bidirectional: a
// second direction with its own parameters scans the same order reversed; the two hidden
// sequences are summed (default) or concatenated, then projected back to D by "proj".
//
// Parameters, per direction "fwd" / "bwd": one Linear(D, 2E) whose output rows are
//   [0, E)  -> u   (gate pre-activation, z = σ(u))
//   [E, 2E) -> h̃  (candidate state)
// with E = expand · D. "proj" is Linear(E_total, D), E_total = 2E for a concatenated
// bidirectional mixer and E otherwise; only E_total == D gives proj the teacher attention's
// shape [D, D], so that only then does relayout-by-name reuse the teacher's projection.
//
// Stability: a_t ∈ [0, 1] and h_t is a convex combination of h_{t-1} and h̃_t, so |h_t| <= max|h̃|
// for any N; σ(u) = 1 / (1 + e^{-u}) saturates to 0 or 1 without NaN, and 1 - σ(u) is computed
// as σ(-u) so that it keeps its relative precision when z_t is close to 1.
//
// Masked tokens are identity steps of the recurrence (a = 1, b = 0), and their rows of the
// pre-projection output and of the output are zero.
//
// The mixer is a composition (mixers/projected.hpp): MinGru<T> = Projected<Ordered<MinGruCore<T>>>,
// the output projection over the scan order over the recurrence below.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/mixers/ordered.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/mixers/scan_order.hpp"
#include "seqswap/ops/scan.hpp"

namespace seqswap::mixers {

struct MinGruOptions {
  // How the two directions of a bidirectional mixer are combined before proj.
  enum class Combine { sum, concat };

  index_t dim = 0;
  index_t expand = 1;          // hidden width E = expand · dim
  bool bidirectional = true;   // forward scan + the same scan reversed, separate parameters
  Combine combine = Combine::sum;
  order::ScanOrder order{};    // which token the scan visits k-th
  std::string name = "attn";
  index_t chunk = 256;         // tokens per chunk of ops::linear_scan; 0 = sequential reference
};

// The recurrence over tokens already in scan order: x (rows, D) -> pre (rows, E_total).
template <class T = float>
class MinGruCore {
 public:
  using scalar_type = T;
  using Options = MinGruOptions;
  template <class B>
  struct Ctx {
    std::array<typename layers::Linear<T>::template Ctx<B>, 2> dir_ctx;
    Layout zh_layout;
    std::array<Buffer<T, B>, 2> zh;  // (rows, 2E) [u | h̃] per direction
    std::array<Buffer<T, B>, 2> a;   // (rows, E) decays σ(-u) (1 at masked)
    std::array<Buffer<T, B>, 2> h;   // (rows, E) states
    // backward scratch
    Buffer<T, B> dh, da, db;         // (rows, E)
    Buffer<T, B> dzh;                // (rows, 2E)
    Buffer<T, B> dx_dir;             // (rows, D)
    const std::uint8_t* keep = nullptr;  // (rows); nullable
    const index_t* offsets = nullptr;    // (batch+1)
    index_t batch = 0;
    // backend::Cuda: the scan's inputs b (rows, E) apart from its output, and the offsets there
    Buffer<T, B> b;
    Buffer<index_t, B> dev_offsets;
    Offsets dev_offsets_of;
  };

  MinGruCore() = default;
  explicit MinGruCore(MinGruOptions o) : o_(std::move(o)) {
    check(o_.dim > 0, "MinGru '", o_.name, "': expected dim > 0, found ", o_.dim);
    check(o_.expand > 0, "MinGru '", o_.name, "': expected expand > 0, found ", o_.expand);
    check(o_.chunk >= 0, "MinGru '", o_.name, "': expected chunk >= 0, found ", o_.chunk);
    const index_t E = hidden();
    dir_[0] = layers::Linear<T>({.in = o_.dim, .out = 2 * E, .bias = true, .name = "fwd"});
    dir_[1] = layers::Linear<T>({.in = o_.dim, .out = 2 * E, .bias = true, .name = "bwd"});
  }
  const MinGruOptions& options() const { return o_; }
  static constexpr const char* kind_name() { return "min_gru"; }

  // Hidden width E of one direction, and the width E_total entering proj.
  index_t hidden() const { return o_.expand * o_.dim; }
  index_t width() const { return concat() ? 2 * hidden() : hidden(); }
  int directions() const { return o_.bidirectional ? 2 : 1; }

  // directions · (2E·D + 2E)
  std::size_t param_count() const { return static_cast<std::size_t>(directions()) * dir_[0].param_count(); }
  // The gate/candidate projections per token, plus the scan h = a·h + b per channel and direction.
  double flops(const Layout& in) const {
    return (2.0 * double(param_count()) + 2.0 * double(hidden() * directions())) * double(in.total());
  }
  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    for (int d = 0; d < directions(); ++d)
      dir_[d].visit_params(f, base, offset + static_cast<std::size_t>(d) * dir_[0].param_count());
  }

  // x (rows, D) -> pre (rows, E_total), both in scan order
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre_out, Ctx<B>& c) const {
    if constexpr (backend::is_cuda<B>)
      forward_device(p, x, pre_out, c);
    else
      forward_host(p, x, pre_out, c);
  }

  // dpre (rows, E_total), zero at masked rows (the gradient of pre = keep ∘ h) -> dx, g
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre_v, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(p, c, dpre_v, dx, g);
    else
      backward_host(p, c, dpre_v, dx, g);
  }

  template <class P>
  P dir_params(P p, int d) const {
    return p.sub(static_cast<std::size_t>(d) * dir_[0].param_count(), dir_[0].param_count());
  }

 private:
  // The device path: the same steps through ops/device.hpp (gates per element, the device scan).
  template <class B>
  void forward_device(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t E = hidden(), rows = x.total();
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.zh_layout = Layout{x.batch, 2 * E, {x.offsets, x.offsets + x.batch + 1}};
    const index_t* offsets = ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of);
    c.b.resize(static_cast<std::size_t>(rows * E));
    for (int d = 0; d < directions(); ++d) {
      c.zh[d].resize(static_cast<std::size_t>(rows * 2 * E));
      c.a[d].resize(static_cast<std::size_t>(rows * E));
      c.h[d].resize(static_cast<std::size_t>(rows * E));
      dir_[d].forward(dir_params(p, d), x, view_of<T, B>(c.zh[d].data(), c.zh_layout), c.dir_ctx[d]);
      ops::device::min_gru_gates(c.zh[d].data(), x.keep, rows, E, c.a[d].data(), c.b.data());
      ops::device::linear_scan(c.a[d].data(), c.b.data(), c.h[d].data(), offsets, x.batch, E, d == 1);
    }
    ops::device::combine_directions(c.h[0].data(), o_.bidirectional ? c.h[1].data() : nullptr, x.keep, rows, E,
                                    concat(), pre.data);
  }
  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                       ParamsView<T, B> g) const {
    const index_t D = o_.dim, E = hidden(), Et = width(), rows = dpre.total();
    c.da.resize(static_cast<std::size_t>(rows * E));
    c.db.resize(static_cast<std::size_t>(rows * E));
    c.dzh.resize(static_cast<std::size_t>(rows * 2 * E));
    for (int d = 0; d < directions(); ++d) {
      const T* dh = dpre.data;
      if (concat()) {
        c.dh.resize(static_cast<std::size_t>(rows * E));
        ops::device::copy_columns(dpre.data, rows, Et, d * E, E, c.dh.data());
        dh = c.dh.data();
      }
      ops::device::linear_scan_backward(c.a[d].data(), c.h[d].data(), dh, c.da.data(), c.db.data(),
                                        c.dev_offsets.data(), c.batch, E, d == 1);
      ops::device::min_gru_gates_backward(c.zh[d].data(), c.da.data(), c.db.data(), c.keep, rows, E, c.dzh.data());
      T* dx_dir = nullptr;
      if (dx.data) {
        if (d == 0) {
          dx_dir = dx.data;
        } else {
          c.dx_dir.resize(static_cast<std::size_t>(rows * D));
          dx_dir = c.dx_dir.data();
        }
      }
      dir_[d].backward(dir_params(p, d), c.dir_ctx[d], TokensView<const T, B>(view_of<T, B>(c.dzh.data(), c.zh_layout)),
                       TokensView<T, B>{dx_dir, c.offsets, c.batch, D, c.keep}, dir_params(g, d));
      if (dx.data && d == 1) ops::device::add_into(dx.data, dx_dir, rows * D);
    }
  }

  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre_out, Ctx<B>& c) const {
    SEQSWAP_HOST_ONLY(B, "mixers/min_gru.hpp (host path)");
    const index_t E = hidden(), Et = width(), rows = x.total();
    c.keep = x.keep;
    c.offsets = x.offsets;
    c.batch = x.batch;
    c.zh_layout = Layout{x.batch, 2 * E, {x.offsets, x.offsets + x.batch + 1}};
    const std::uint8_t* keep = x.keep;
    for (int d = 0; d < directions(); ++d) {
      c.zh[d].resize(static_cast<std::size_t>(rows * 2 * E));
      c.a[d].resize(static_cast<std::size_t>(rows * E));
      c.h[d].resize(static_cast<std::size_t>(rows * E));
      dir_[d].forward(dir_params(p, d), x, view_of<T, B>(c.zh[d].data(), c.zh_layout), c.dir_ctx[d]);
      const T* zh = c.zh[d].data();  // (rows, 2E)
      T* a = c.a[d].data();          // (rows, E)
      T* h = c.h[d].data();          // (rows, E): b_t first, scanned in place into h_t
#pragma omp parallel for schedule(static) if (rows > 1)
      for (index_t t = 0; t < rows; ++t) {
        const T* u = zh + t * 2 * E;  // (E)
        const T* hc = u + E;          // (E) h̃_t
        if (keep && !keep[t]) {       // identity step: the state passes through unchanged
          std::fill(a + t * E, a + (t + 1) * E, T(1));
          std::fill(h + t * E, h + (t + 1) * E, T(0));
          continue;
        }
        // Whole rows through Eigen's vectorised logistic; σ(-u) is computed, not 1 - σ(u),
        // so a decay near 1 keeps its precision.
        const CArr U(u, E);
        Arr(a + t * E, E) = (-U).logistic();            // 1 - z_t
        Arr(h + t * E, E) = U.logistic() * CArr(hc, E);  // z_t h̃_t
      }
      ops::linear_scan(B{}, a, h, h, x.offsets, x.batch, E, {.chunk = o_.chunk, .reverse = d == 1});
    }

    // pre = keep ∘ (h_fwd + h_bwd)  or  keep ∘ [h_fwd | h_bwd]
    T* pre = pre_out.data;
#pragma omp parallel for schedule(static) if (rows > 1)
    for (index_t t = 0; t < rows; ++t) {
      T* out = pre + t * Et;  // (E_total)
      if (keep && !keep[t]) {
        std::fill(out, out + Et, T(0));
        continue;
      }
      const T* h0 = c.h[0].data() + t * E;
      std::copy(h0, h0 + E, out);
      if (o_.bidirectional) {
        const T* h1 = c.h[1].data() + t * E;
        if (concat())
          std::copy(h1, h1 + E, out + E);
        else
          for (index_t e = 0; e < E; ++e) out[e] += h1[e];
      }
    }
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre_v, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    SEQSWAP_HOST_ONLY(B, "mixers/min_gru.hpp (host path)");
    const index_t D = o_.dim, E = hidden(), Et = width(), rows = dpre_v.total();
    const T* dpre = dpre_v.data;
    const bool want_dx = dx.data != nullptr;
    const std::uint8_t* keep = c.keep;
    c.da.resize(static_cast<std::size_t>(rows * E));
    c.db.resize(static_cast<std::size_t>(rows * E));
    c.dzh.resize(static_cast<std::size_t>(rows * 2 * E));
    for (int d = 0; d < directions(); ++d) {
      // pre = h_fwd + h_bwd: both get dpre;  pre = [h_fwd | h_bwd]: each gets its columns.
      const T* dh = dpre;  // (rows, E)
      if (concat()) {
        c.dh.resize(static_cast<std::size_t>(rows * E));
        for (index_t t = 0; t < rows; ++t)
          std::copy(dpre + t * Et + d * E, dpre + t * Et + (d + 1) * E, c.dh.data() + t * E);
        dh = c.dh.data();
      }
      // h_t = a_t h_{t-1} + b_t  =>  da, db (rows, E)
      ops::linear_scan_backward(B{}, c.a[d].data(), c.h[d].data(), dh, c.da.data(), c.db.data(),
                                c.offsets, c.batch, E, {.chunk = o_.chunk, .reverse = d == 1});
      const T* zh = c.zh[d].data();
      T* dzh = c.dzh.data();
#pragma omp parallel for schedule(static) if (rows > 1)
      for (index_t t = 0; t < rows; ++t) {
        T* du = dzh + t * 2 * E;  // (E)
        T* dhc = du + E;          // (E)
        if (keep && !keep[t]) {   // a = 1, b = 0 are constants at masked tokens
          std::fill(du, du + 2 * E, T(0));
          continue;
        }
        const T* u = zh + t * 2 * E;
        const T* hc = u + E;
        // a = σ(-u), b = σ(u) h̃:  du = σ(u)σ(-u) (db h̃ - da),  dh̃ = db σ(u)
        const CArr U(u, E), Da(c.da.data() + t * E, E), Db(c.db.data() + t * E, E);
        Arr(du, E) = U.logistic() * (-U).logistic() * (Db * CArr(hc, E) - Da);
        Arr(dhc, E) = Db * U.logistic();
      }
      // zh = x W_dirᵀ + b_dir: dx_dir = dzh W_dir (the first direction assigns, the second adds)
      T* dx_dir = nullptr;
      if (want_dx) {
        if (d == 0) {
          dx_dir = dx.data;
        } else {
          c.dx_dir.resize(static_cast<std::size_t>(rows * D));
          dx_dir = c.dx_dir.data();
        }
      }
      dir_[d].backward(dir_params(p, d), c.dir_ctx[d],
                       TokensView<const T, B>(view_of<T, B>(c.dzh.data(), c.zh_layout)),
                       TokensView<T, B>{dx_dir, c.offsets, c.batch, D, keep}, dir_params(g, d));
      if (want_dx && d == 1)
        for (index_t i = 0; i < rows * D; ++i) dx.data[i] += dx_dir[i];
    }
  }

  bool concat() const { return o_.bidirectional && o_.combine == MinGruOptions::Combine::concat; }
  // 1 / (1 + e^{-u}): e^{-u} overflowing to inf gives exactly 0, never NaN.
  using Arr = host::ArrMap<T>;
  using CArr = host::CArrMap<T>;

  MinGruOptions o_;
  std::array<layers::Linear<T>, 2> dir_;  // "fwd", "bwd" (the latter only when bidirectional)
};

static_assert(MixerCore<MinGruCore<double>>);

template <class T = float>
using MinGru = Projected<Ordered<MinGruCore<T>>>;

static_assert(Mixer<MinGru<float>, backend::Host>);
static_assert(Mixer<MinGru<double>, backend::Host>);

}  // namespace seqswap::mixers
