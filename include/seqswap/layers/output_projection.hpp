// The output projection every mixer ends with: y = keep ∘ (pre W_projᵀ + b_proj), W_proj
// stored [D, E] and named "proj" (so a student keeps the teacher's projection by name).
#pragma once
#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"
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
  if (dpre_in) {
    ops::copy_kept_rows(dpre_in, dpre.data(), rows, E, keep);
  } else {
    const T* d = dy;  // (T, D)
    if (keep) {
      dy_masked.resize(static_cast<std::size_t>(rows * D));
      ops::copy_kept_rows(dy, dy_masked.data(), rows, D, keep);
      d = dy_masked.data();
    }
    proj.backward(pp, pctx, TokensView<const T, B>{d, pre_layout.offsets.data(), pre_layout.batch, D, keep},
                  view_of<T, B>(dpre.data(), pre_layout), pg);
  }
  if (tap)
    for (index_t t = 0; t < rows; ++t)
      if (!keep || keep[t])
        for (index_t j = 0; j < E; ++j) dpre.data()[t * E + j] += tap[t * E + j];
}

}  // namespace seqswap::layers

namespace seqswap::layers {

// The two backward entries of every mixer that ends in the output projection (the Mixer
// contract's backward and backward_pre), both forwarding to the mixer's
//   backward_impl(p, c, dy_or_null, dpre_or_null, dx, g)
// which starts with projection_backward above. Derive as
//   class MyMixer : public layers::ProjectedMixer<MyMixer<T>, T>.
template <class Derived, class T>
class ProjectedMixer {
 public:
  // dx = J_xᵀ dy (assigned), g += J_pᵀ dy (accumulated), through the projection.
  template <class B, class Ctx>  // Ctx = Derived::Ctx<B> (deduced: Derived is incomplete here)
  void backward(ParamsView<const T, B> p, Ctx& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    derived().backward_impl(p, c, dy.data, nullptr, dx, g);
  }
  // Backward from a gradient w.r.t. the pre-projection output (stage-1 distillation): the
  // projection is skipped and receives no gradient; masked rows of dpre are ignored.
  template <class B, class Ctx>
  void backward_pre(ParamsView<const T, B> p, Ctx& c, TokensView<const T, B> dpre,
                    TokensView<T, B> dx, ParamsView<T, B> g) const {
    derived().backward_impl(p, c, nullptr, dpre.data, dx, g);
  }

 private:
  const Derived& derived() const { return static_cast<const Derived&>(*this); }
};

}  // namespace seqswap::layers
