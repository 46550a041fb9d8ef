// GELU (erf form) as a parameter-free layer.
#pragma once
#include "seqswap/core/concepts.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/gelu.hpp"

namespace seqswap::layers {

template <class T = float>
class Gelu {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    const T* x = nullptr;  // (rows, D)
    std::size_t n = 0;
  };

  std::size_t param_count() const { return 0; }
  double flops(const Layout&) const { return 0.0; }  // elementwise: not counted
  void plan(const Layout& in, Layout& out) const { out = in; }
  template <class F>
  void visit_params(F&&, const std::string&, std::size_t) const {}

  template <class B>
  void forward(ParamsView<const T, B>, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    c.x = x.data;
    c.n = static_cast<std::size_t>(x.total() * x.dim);
    if constexpr (backend::is_cuda<B>)
      ops::device::gelu_forward(x.data, index_t(c.n), y.data);
    else
      ops::gelu_forward(x.data, c.n, y.data);
  }
  template <class B>
  void backward(ParamsView<const T, B>, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                ParamsView<T, B>) const {
    if (!dx.data) return;
    if constexpr (backend::is_cuda<B>)
      ops::device::gelu_backward(c.x, dy.data, index_t(c.n), dx.data);
    else
      ops::gelu_backward(c.x, dy.data, c.n, dx.data);
  }
};

static_assert(Layer<Gelu<float>, backend::Host>);

}  // namespace seqswap::layers
