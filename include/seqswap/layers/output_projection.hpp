// Projected<Core>: a Mixer made of a core and the output projection every mixer ends with,
//   y = keep ∘ (core(x) W_projᵀ + b_proj),  W_proj [D, E] named "<name>.proj"
// (so a student keeps the teacher's projection by name), so a new mixer is only its core (its recurrence, with forward and backward). The core's
// output, the pre-projection tensor (rows, E), is what stage-1 distillation matches
// (Ctx::pre_projection) and what backward_pre starts from.
//
// The core contract (MixerCore below), for a core C with options O (O has .dim and .name):
//   C(O), options(), kind_name(), param_count(), width() = E, flops(in) (without proj)
//   visit_params(f, base, offset)           names under base ("blocks.3.attn")
//   optional: proj_init_std() (the projection's init), init(p, ...) (per-element rules on a
//   bare slice), check_layout(in) (shapes beyond the width)
//   forward(p, x, pre, c)                   x (rows, D) -> pre (rows, E), rows masked in
//                                           x.keep ZERO in pre; c keeps what backward needs
//   backward(p, c, dpre, dx, g)             dpre (rows, E) zero at masked rows; dx ASSIGNED
//                                           (nullable), g ACCUMULATED
// A core that scans tokens in a ScanOrder is wrapped in Ordered<Core> (mixers/ordered.hpp).
// Every mixer is such a composition, softmax attention included
// (attention::SoftmaxAttention<T, Policy> = Projected<SoftmaxAttentionCore<T, Policy>>), which
// is why this lives in layers/ (below attention/ and mixers/, which name it mixers::Projected).
#pragma once
#include <string>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/mask.hpp"

namespace seqswap::layers {

// The first step of every mixer's backward. From dy (T, D): masked rows pass no gradient, so
// dpre = (keep ∘ dy) W_proj and proj's gradients accumulate into pg. From dpre_in (T, E)
// (backward_pre, stage-1 distillation): dpre = keep ∘ dpre_in and proj is left alone.
// Either way `tap` (T, E; nullable: the context's pre_grad) is then added on kept rows: a loss
// on the pre-projection output of a model run end to end (free-running stage 1) joins the
// gradient flowing back from the output. dpre (T, E) is resized to `pre_layout`; dy_masked is
// scratch.
template <class T, class B>
void projection_backward(const Linear<T>& proj, ParamsView<const T, B> pp, ParamsView<T, B> pg,
                         typename Linear<T>::template Ctx<B>& pctx, const T* dy, const T* dpre_in,
                         const Layout& pre_layout, const std::uint8_t* keep, index_t D, Buffer<T, B>& dy_masked,
                         Buffer<T, B>& dpre, const T* tap = nullptr) {
  const index_t rows = pre_layout.total(), E = pre_layout.dim;
  dpre.resize(static_cast<std::size_t>(rows * E));
  const auto copy_kept = [&](const T* src, T* dst, index_t width) {
    if constexpr (backend::is_cuda<B>)
      ops::device::copy_kept_rows(src, dst, rows, width, keep);
    else
      ops::copy_kept_rows(src, dst, rows, width, keep);
  };
  if (dpre_in) {
    copy_kept(dpre_in, dpre.data(), E);
  } else {
    const T* d = dy;  // (T, D)
    if (keep) {
      dy_masked.resize(static_cast<std::size_t>(rows * D));
      copy_kept(dy, dy_masked.data(), D);
      d = dy_masked.data();
    }
    proj.backward(pp, pctx, TokensView<const T, B>{d, pre_layout.offsets.data(), pre_layout.batch, D, keep},
                  view_of<T, B>(dpre.data(), pre_layout), pg);
  }
  if (!tap) return;
  if constexpr (backend::is_cuda<B>) {
    ops::device::add_kept_rows(dpre.data(), tap, rows, E, keep);
  } else {
    for (index_t t = 0; t < rows; ++t)
      if (!keep || keep[t])
        for (index_t j = 0; j < E; ++j) dpre.data()[t * E + j] += tap[t * E + j];
  }
}


template <class C, class B = backend::Host>
concept MixerCore = requires(const C& c, typename C::template Ctx<B>& ctx, const Layout& in,
                             ParamsView<const typename C::scalar_type, B> p,
                             ParamsView<typename C::scalar_type, B> g,
                             TokensView<const typename C::scalar_type, B> x,
                             TokensView<typename C::scalar_type, B> y) {
  typename C::Options;
  { c.options().dim } -> std::convertible_to<index_t>;
  { c.options().name } -> std::convertible_to<std::string>;
  { C::kind_name() } -> std::convertible_to<const char*>;
  { c.param_count() } -> std::same_as<std::size_t>;
  { c.width() } -> std::convertible_to<index_t>;
  { c.flops(in) } -> std::convertible_to<double>;
  c.forward(p, x, y, ctx);
  c.backward(p, ctx, x, y, g);
};

template <class Core>
class Projected {
  static_assert(MixerCore<Core>, "Projected<Core>: Core must satisfy seqswap::layers::MixerCore (see the top of "
                                 "layers/output_projection.hpp)");

 public:
  using scalar_type = typename Core::scalar_type;
  using core_type = Core;
  using T = scalar_type;
  using Options = typename Core::Options;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    typename Core::template Ctx<B> core;
    typename Linear<T>::template Ctx<B> proj_ctx;
    Layout pre_layout;
    Buffer<T, B> pre;        // (rows, E) the core's output, token order
    Buffer<T, B> dy_masked;  // (rows, D) backward scratch
    Buffer<T, B> dpre;       // (rows, E)
    const std::uint8_t* keep = nullptr;
    const T* pre_grad = nullptr;  // (rows, E) added to the pre-projection gradient; not owned

    TokensView<const T, B> pre_projection() const {
      return {pre.data(), pre_layout.offsets.data(), pre_layout.batch, pre_layout.dim, keep};
    }
  };

  Projected() = default;
  explicit Projected(Options o)
      : core_(std::move(o)),
        proj_({.in = core_.width(), .out = core_.options().dim, .bias = true, .name = "proj", .std = proj_std(core_)}) {}
  const Options& options() const { return core_.options(); }
  const Core& core() const { return core_; }
  static constexpr const char* kind_name() { return Core::kind_name(); }

  index_t width() const { return core_.width(); }  // of the pre-projection output
  // The core's own initialisation of a bare parameter slice (cores with per-element rules;
  // the core's parameters come first in the slice).
  template <class P, class... A>
  void init(P p, A&&... a) const
    requires requires(const Core& c) { c.init(p, a...); }
  {
    core_.init(core_params(p), std::forward<A>(a)...);
  }
  std::size_t param_count() const { return core_.param_count() + proj_.param_count(); }
  std::size_t proj_param_offset() const { return core_.param_count(); }
  double flops(const Layout& in) const { return core_.flops(in) + proj_.flops(in); }
  void plan(const Layout& in, Layout& out) const {
    check(in.dim == options().dim, kind_name(), " '", options().name, "': expected width ", options().dim,
          ", found ", in.dim);
    if constexpr (requires { core_.check_layout(in); }) core_.check_layout(in);  // e.g. a grid's shape
    out = in;
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix = "", std::size_t offset = 0) const {
    const std::string base = join_name(prefix, options().name);
    core_.visit_params(f, base, offset);
    proj_.visit_params(f, base, offset + proj_param_offset());
  }

  // x (rows, D) -> y (rows, D)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y, Ctx<B>& c) const {
    const index_t rows = x.total();
    c.keep = x.keep;
    c.pre_layout = Layout{x.batch, core_.width(), {x.offsets, x.offsets + x.batch + 1}};
    c.pre.resize(c.pre_layout.size());
    core_.forward(core_params(p), x, view_of<T, B>(c.pre.data(), c.pre_layout, x.keep), c.core);
    proj_.forward(proj_params(p), TokensView<const T, B>(view_of<T, B>(c.pre.data(), c.pre_layout)), y, c.proj_ctx);
    if constexpr (backend::is_cuda<B>)
      ops::device::zero_masked_rows(y.data, rows, options().dim, x.keep);
    else
      ops::zero_masked_rows(y.data, rows, options().dim, x.keep);
  }

  // dx = J_xᵀ dy (assigned), g += J_pᵀ dy (accumulated), through the projection.
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    backward_impl(p, c, dy.data, nullptr, dx, g);
  }
  // Backward from a gradient w.r.t. the pre-projection output (stage-1 distillation): the
  // projection is skipped and receives no gradient; masked rows of dpre are ignored.
  template <class B>
  void backward_pre(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dpre, TokensView<T, B> dx,
                    ParamsView<T, B> g) const {
    backward_impl(p, c, nullptr, dpre.data, dx, g);
  }

 private:
  // Both backward entries land here: from dy through the projection, or from dpre_in, the
  // pre-projection gradient (the projection then receives nothing).
  template <class B>
  void backward_impl(ParamsView<const T, B> p, Ctx<B>& c, const T* dy_data, const T* dpre_in, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    projection_backward(proj_, proj_params(p), proj_params(g), c.proj_ctx, dy_data, dpre_in, c.pre_layout,
                                c.keep, options().dim, c.dy_masked, c.dpre, c.pre_grad);
    core_.backward(core_params(p), c.core, view_of<const T, B>(c.dpre.data(), c.pre_layout, c.keep), dx,
                   core_params(g));
  }

  // The projection's trunc-normal std: the core's choice where it makes one (Linear's default else).
  static double proj_std(const Core& c) {
    if constexpr (requires { c.proj_init_std(); }) return c.proj_init_std();
    return LinearOptions{}.std;
  }
  template <class P>
  P core_params(P p) const { return p.sub(0, core_.param_count()); }
  template <class P>
  P proj_params(P p) const { return p.sub(proj_param_offset(), proj_.param_count()); }

  Core core_;
  Linear<T> proj_;
};

}  // namespace seqswap::layers
