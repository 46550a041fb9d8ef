// ClassifierHead: logits from each sequence's CLS token (token 0): logits_b = W x_{b,0} + c.
#pragma once
#include <string>

#include "seqswap/core/buffer.hpp"
#include "seqswap/layers/linear.hpp"

namespace seqswap::layers {

struct ClassifierHeadOptions {
  index_t dim = 0;
  index_t classes = 0;
  std::string name = "head";
};

template <class T = float>
class ClassifierHead {
 public:
  using scalar_type = T;
  using Input = kind::Tokens;
  using Output = kind::Logits;
  template <class B>
  struct Ctx {
    Buffer<T, B> cls;   // (B, D) gathered CLS rows
    Buffer<T, B> dcls;  // (B, D) backward scratch
    Layout cls_layout;
    typename Linear<T>::template Ctx<B> fc;
    Buffer<index_t, B> dev_offsets;  // backend::Cuda: the input's offsets (its CLS rows) on the device
    Offsets dev_offsets_of;
  };

  ClassifierHead() = default;
  explicit ClassifierHead(ClassifierHeadOptions o)
      : o_(std::move(o)), fc_({.in = o_.dim, .out = o_.classes, .bias = true, .name = ""}) {}

  std::size_t param_count() const { return fc_.param_count(); }
  // The head reads one (CLS) token per image.
  double flops(const Layout& in) const { return fc_.flops(Layout::dense(in.batch, 1, o_.dim)); }
  void plan(const Layout& in, Layout& out) const {
    check(in.dim == o_.dim, "ClassifierHead: expected width ", o_.dim, ", found ", in.dim);
    for (index_t b = 0; b < in.batch; ++b)
      check(in.length(b) >= 1, "ClassifierHead: expected a CLS token in sequence ", b,
            ", found an empty sequence");
    out = Layout::dense(in.batch, 1, o_.classes);
  }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    fc_.visit_params(f, join_name(prefix, o_.name), offset);
  }

  // x (T_total, D) -> logits (B, classes)
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y,
               Ctx<B>& c) const {
    const index_t D = o_.dim;
    c.cls.resize(static_cast<std::size_t>(x.batch * D));
    if constexpr (backend::is_cuda<B>) {
      const index_t* first = ops::device::device_offsets(x.offsets, x.batch, c.dev_offsets, c.dev_offsets_of);
      ops::device::gather_rows(x.data, first, x.batch, D, c.cls.data());
    } else {
      for (index_t b = 0; b < x.batch; ++b) {
        const T* src = x.row(x.begin(b));
        std::copy(src, src + D, c.cls.data() + b * D);
      }
    }
    c.cls_layout = Layout::dense(x.batch, 1, D);
    fc_.forward(p, TokensView<const T, B>(view_of<T, B>(c.cls.data(), c.cls_layout)), y, c.fc);
  }

  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy,
                TokensView<T, B> dx, ParamsView<T, B> g) const {
    const index_t D = o_.dim;
    TokensView<T, B> dcls{};
    if (dx.data) {
      c.dcls.resize(c.cls.size());
      dcls = view_of<T, B>(c.dcls.data(), c.cls_layout);
    }
    fc_.backward(p, c.fc, dy, dcls, g);
    if (!dx.data) return;
    if constexpr (backend::is_cuda<B>) {
      ops::device::fill_zero(dx.data, dx.total() * D);
      ops::device::scatter_rows(c.dcls.data(), c.dev_offsets.data(), dx.batch, D, dx.data);
    } else {
      std::fill(dx.data, dx.data + dx.total() * D, T(0));
      for (index_t b = 0; b < dx.batch; ++b)
        std::copy(c.dcls.data() + b * D, c.dcls.data() + (b + 1) * D, dx.row(dx.begin(b)));
    }
  }

 private:
  ClassifierHeadOptions o_;
  Linear<T> fc_;
};

static_assert(Layer<ClassifierHead<float>, backend::Host>);

}  // namespace seqswap::layers
