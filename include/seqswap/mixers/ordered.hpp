// Ordered<Core>: runs a mixer core over the tokens in a scan order (mixers/scan_order.hpp; the
// core's options carry it as .order). A core whose row-wise layers commute with the
// permutation runs entirely in scan order: the input and keep-mask are gathered once, the
// core's output is scattered back once, and backward does the same in reverse. The identity
// order moves nothing. Everything else (options, parameters, FLOPs) is the core's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/mixers/projected.hpp"
#include "seqswap/mixers/scan_order.hpp"

namespace seqswap::mixers {

template <class Core>
class Ordered {
 public:
  using scalar_type = typename Core::scalar_type;
  using T = scalar_type;
  using Options = typename Core::Options;
  template <class B>
  struct Ctx {
    typename Core::template Ctx<B> core;
    std::vector<index_t> perm;         // (rows) scan position -> row; empty when identity
    std::vector<std::uint8_t> keep_s;  // (rows) keep in scan order (permuted and masked)
    Buffer<T, B> x_s, pre_s, dpre_s, dx_s;  // scan-order copies (permuted only)
    const T* x_scan = nullptr;           // (rows, D) x_s or the input itself
    const std::uint8_t* keep_scan = nullptr;
    // backend::Cuda: the permutation on the device (uploaded when it changed) and keep in scan order
    Buffer<index_t, B> dev_perm;
    std::vector<index_t> dev_perm_of;
    Buffer<std::uint8_t, B> dev_keep_s;
  };

  Ordered() = default;
  explicit Ordered(Options o) : core_(std::move(o)) {}
  const Options& options() const { return core_.options(); }
  const Core& core() const { return core_; }
  static constexpr const char* kind_name() { return Core::kind_name(); }
  std::size_t param_count() const { return core_.param_count(); }
  index_t width() const { return core_.width(); }
  // The core's own initialisation of a bare parameter slice (cores with per-element rules;
  // the core's parameters come first in the slice).
  template <class P, class... A>
  void init(P p, A&&... a) const
    requires requires(const Core& c) { c.init(p, a...); }
  {
    core_.init(p, std::forward<A>(a)...);
  }
  double flops(const Layout& in) const { return core_.flops(in); }
  void check_layout(const Layout& in) const
    requires requires(const Core& c) { c.check_layout(in); }
  {
    core_.check_layout(in);
  }
  template <class F>
  void visit_params(F&& f, const std::string& base, std::size_t offset) const {
    core_.visit_params(f, base, offset);
  }

  // x (rows, D) token order -> pre (rows, E) token order; the core sees scan order.
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
  // The device path: the permutation is built on the host (from the offsets) and applied on the
  // device with the row gather / scatter; the keep-mask is gathered there too.
  template <class B>
  void forward_device(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    const index_t D = x.dim, E = width(), rows = x.total();
    c.perm.clear();
    c.x_scan = x.data;
    c.keep_scan = x.keep;
    if (!options().order.is_identity()) order::batch_permutation(options().order, x.offsets, x.batch, c.perm);
    const bool permuted = !c.perm.empty();
    if (permuted) {
      if (c.dev_perm_of != c.perm) {
        c.dev_perm.upload(c.perm.data(), c.perm.size());
        c.dev_perm_of = c.perm;
      }
      c.x_s.resize(static_cast<std::size_t>(rows * D));
      ops::device::gather_rows(x.data, c.dev_perm.data(), rows, D, c.x_s.data());
      c.x_scan = c.x_s.data();
      if (x.keep) {
        c.dev_keep_s.resize(static_cast<std::size_t>(rows));
        ops::device::gather_rows(x.keep, c.dev_perm.data(), rows, index_t(1), c.dev_keep_s.data());
        c.keep_scan = c.dev_keep_s.data();
      }
      c.pre_s.resize(static_cast<std::size_t>(rows * E));
    }
    core_.forward(p, TokensView<const T, B>{c.x_scan, x.offsets, x.batch, D, c.keep_scan},
                  TokensView<T, B>{permuted ? c.pre_s.data() : pre.data, x.offsets, x.batch, E, c.keep_scan}, c.core);
    if (permuted) ops::device::scatter_rows(c.pre_s.data(), c.dev_perm.data(), rows, E, pre.data);
  }
  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                       ParamsView<T, B> g) const {
    const index_t E = width(), D = options().dim, rows = dpre.total();
    const bool permuted = !c.perm.empty();
    const T* dpre_s = dpre.data;
    if (permuted) {
      c.dpre_s.resize(static_cast<std::size_t>(rows * E));
      ops::device::gather_rows(dpre.data, c.dev_perm.data(), rows, E, c.dpre_s.data());
      dpre_s = c.dpre_s.data();
    }
    T* dx_s = dx.data;
    if (dx.data && permuted) {
      c.dx_s.resize(static_cast<std::size_t>(rows * D));
      dx_s = c.dx_s.data();
    }
    core_.backward(p, c.core, TokensView<const T, B>{dpre_s, dpre.offsets, dpre.batch, E, c.keep_scan},
                   TokensView<T, B>{dx_s, dpre.offsets, dpre.batch, D, c.keep_scan}, g);
    if (dx.data && permuted) ops::device::scatter_rows(dx_s, c.dev_perm.data(), rows, D, dx.data);
  }

  template <class B>
  void forward_host(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> pre, Ctx<B>& c) const {
    SEQSWAP_HOST_ONLY(B, "mixers/ordered.hpp (host path)");
    const index_t D = x.dim, E = width();
    order::gather_scan_input(options().order, x.data, x.keep, x.offsets, x.batch, D, c.perm, c.x_s, c.keep_s,
                             c.x_scan, c.keep_scan);
    const bool permuted = !c.perm.empty();
    if (permuted) c.pre_s.resize(static_cast<std::size_t>(x.total() * E));
    core_.forward(p, TokensView<const T, B>{c.x_scan, x.offsets, x.batch, D, c.keep_scan},
                  TokensView<T, B>{permuted ? c.pre_s.data() : pre.data, x.offsets, x.batch, E, c.keep_scan}, c.core);
    if (permuted) order::scatter_rows(c.pre_s.data(), c.perm, E, pre.data);
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    SEQSWAP_HOST_ONLY(B, "mixers/ordered.hpp (host path)");
    const index_t E = width(), D = options().dim, rows = dpre.total();
    const bool permuted = !c.perm.empty();
    const T* dpre_s = dpre.data;  // (rows, E) scan order
    if (permuted) {
      c.dpre_s.resize(static_cast<std::size_t>(rows * E));
      order::gather_rows(dpre.data, c.perm, E, c.dpre_s.data());
      dpre_s = c.dpre_s.data();
    }
    T* dx_s = dx.data;  // (rows, D) scan order
    if (dx.data && permuted) {
      c.dx_s.resize(static_cast<std::size_t>(rows * D));
      dx_s = c.dx_s.data();
    }
    core_.backward(p, c.core, TokensView<const T, B>{dpre_s, dpre.offsets, dpre.batch, E, c.keep_scan},
                   TokensView<T, B>{dx_s, dpre.offsets, dpre.batch, D, c.keep_scan}, g);
    if (dx.data && permuted) order::scatter_rows(dx_s, c.perm, D, dx.data);
  }

  Core core_;
};

}  // namespace seqswap::mixers
