// The layer contract (docs/architecture.md states it member by member).
//
//   param_count()            exact number of scalar parameters
//   plan(in, out)            out = the layout forward produces from `in`; throws on bad shapes
//   forward(p, x, y, c)      y = f(x; p). c keeps what backward needs; x must stay alive and
//                            unchanged until backward (pipelines own their intermediates)
//   backward(p, c, dy, dx, g)
//                            dx = J_xᵀ dy  (ASSIGNED; dx.data may be null: not wanted)
//                            g += J_pᵀ dy  (ACCUMULATED into the layer's gradient slice)
//   visit_params(f, prefix, offset)
//                            calls f(ParamInfo) for each tensor, in layout order
//   flops(in)                forward FLOPs (2 per multiply-add) over the layout `in`: weights
//                            applied per token plus token-token products and recurrences
//
// A Mixer is a Layer from tokens to tokens of the same width that honours the keep-mask
// (masked tokens neither contribute nor change: their output rows are zero) and ragged
// offsets, exposes its pre-projection output, can be trained from a gradient w.r.t. that
// output (backward_pre: dx assigned, g accumulated, its output projection untouched), and
// names itself (kind_name(): the drivers' --mixer name).
#pragma once
#include <concepts>
#include <cstddef>
#include <type_traits>

#include "seqswap/core/params.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap {

// The member types first, so that a non-layer is simply "not a Layer" (no hard error).
template <class L, class Backend>
concept LayerTypes = requires {
  typename L::scalar_type;
  typename L::Input;
  typename L::Output;
  typename L::template Ctx<Backend>;
};

template <class L, class Backend>
concept Layer = LayerTypes<L, Backend> && requires(const L& l, ParamsView<const typename L::scalar_type, Backend> p,
                         ParamsView<typename L::scalar_type, Backend> g,
                         typename L::template Ctx<Backend>& c, const Layout& in, Layout& out,
                         TokensView<const typename L::scalar_type, Backend> x,
                         TokensView<typename L::scalar_type, Backend> y,
                         TokensView<const typename L::scalar_type, Backend> dy,
                         TokensView<typename L::scalar_type, Backend> dx) {
  typename L::Input;
  typename L::Output;
  { l.param_count() } -> std::same_as<std::size_t>;
  l.plan(in, out);
  l.forward(p, x, y, c);
  l.backward(p, c, dy, dx, g);
  { l.flops(in) } -> std::convertible_to<double>;
};

template <class M, class Backend>
concept Mixer = Layer<M, Backend> && std::is_same_v<typename M::Input, kind::Tokens> &&
                std::is_same_v<typename M::Output, kind::Tokens> &&
                requires(const M& m, const typename M::template Ctx<Backend>& cc,
                         typename M::template Ctx<Backend>& c,
                         ParamsView<const typename M::scalar_type, Backend> p,
                         ParamsView<typename M::scalar_type, Backend> g,
                         TokensView<const typename M::scalar_type, Backend> dpre,
                         TokensView<typename M::scalar_type, Backend> dx) {
                  // (T_total, E) pre-projection output of the last forward
                  { cc.pre_projection() };
                  // backward from a gradient w.r.t. it (stage-1 distillation)
                  m.backward_pre(p, c, dpre, dx, g);
                  { m.kind_name() };
                };

// For static_asserts in combinators: the host instantiation decides.
template <class L>
inline constexpr bool is_layer_v = Layer<L, backend::Host>;
template <class M>
inline constexpr bool is_mixer_v = Mixer<M, backend::Host>;

}  // namespace seqswap
