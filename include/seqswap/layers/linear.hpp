// Linear: y = x Wᵀ + b over every token row, W stored [out, in] as in timm/PyTorch.
#pragma once
#include <string>

#include "seqswap/core/concepts.hpp"
#include "seqswap/core/error.hpp"
#include "seqswap/ops/device.hpp"
#include "seqswap/ops/gemm.hpp"

namespace seqswap::layers {

struct LinearOptions {
  index_t in = 0;
  index_t out = 0;
  bool bias = true;
  std::string name;     // e.g. "qkv": parameters are "<prefix>.qkv.weight", "<prefix>.qkv.bias"
  double std = 0.02;    // trunc-normal std of the weight (timm's ViT init)
};

template <class T = float>
class Linear {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  template <class B>
  struct Ctx {
    const T* x = nullptr;  // (rows, in): the forward input, kept alive by the caller
    index_t rows = 0;
  };

  Linear() = default;
  explicit Linear(LinearOptions o) : o_(std::move(o)) {
    check(o_.in > 0 && o_.out > 0, "Linear '", o_.name, "': expected in, out > 0, found in=",
          o_.in, " out=", o_.out);
  }
  const LinearOptions& options() const { return o_; }

  std::size_t param_count() const {
    return static_cast<std::size_t>(o_.out * o_.in + (o_.bias ? o_.out : 0));
  }
  // 2 FLOPs per parameter per token (a bias counts as one multiply-add).
  double flops(const Layout& in) const { return 2.0 * double(param_count()) * double(in.total()); }

  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.in, "Linear '", o_.name, "': expected input width ", o_.in, ", found ",
          in.dim);
    out = in;
    out.dim = o_.out;
  }

  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    const std::string base = join_name(prefix, o_.name);
    f(ParamInfo{join_name(base, "weight"), {o_.out, o_.in}, offset,
                static_cast<std::size_t>(o_.out * o_.in), true, Init::trunc_normal, o_.std});
    if (o_.bias)
      f(ParamInfo{join_name(base, "bias"), {o_.out}, offset + static_cast<std::size_t>(o_.out * o_.in),
                  static_cast<std::size_t>(o_.out), false, Init::zeros, 0.0});
  }

  // x (rows, in) -> y (rows, out)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    c.x = x.data;
    c.rows = x.total();
    const T* b = o_.bias ? p.data + o_.out * o_.in : nullptr;
    if constexpr (backend::is_cuda<B>)
      ops::device::linear_forward(x.data, c.rows, o_.in, p.data, b, o_.out, y.data);
    else
      ops::linear_forward(x.data, c.rows, o_.in, p.data, b, o_.out, y.data);
  }

  // Backward of `y = x Wᵀ + b`: dx = dy W (assign), dW += dyᵀ x, db += Σ_rows dy.
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    T* db = o_.bias ? g.data + o_.out * o_.in : nullptr;
    if constexpr (backend::is_cuda<B>)
      ops::device::linear_backward(c.x, c.rows, o_.in, p.data, o_.out, dy.data, dx.data, g.data, db);
    else
      ops::linear_backward(c.x, c.rows, o_.in, p.data, o_.out, dy.data, dx.data, g.data, db);
  }

 private:
  LinearOptions o_;
};

static_assert(Layer<Linear<float>, backend::Host>);
static_assert(Layer<Linear<double>, backend::Host>);

}  // namespace seqswap::layers
