// Halting<Repeat<Block>>: A-ViT token halting as a combinator over a model's blocks
// (METHOD.md, "A-ViT token halting"). It is a Layer from tokens to tokens: it runs the blocks
// one by one, lets the Halter (halting/halting.hpp, pure arithmetic) decide after each block
// which tokens go on, and outputs the halting-weighted sum o_k = Σ_l w^l_k t^l_k, which the
// ViT's final LayerNorm and head then read like any block output. A ViT whose body is this
// combinator *is* the halting ViT: no second forward/backward of the network exists.
//
// Two paths give the same numbers (tests/test_halting.cpp):
//   packed: halted tokens leave the batch; block l runs on a ragged batch of the kept tokens
//           only (offsets per image), so every layer and mixer does less work;
//   masked: the tokens stay in place under a keep-mask (A-ViT's public code; saves nothing).
// Parameters are the wrapped stack's, under the same names, so a plain ViT checkpoint loads.
//
// Per-call inputs live in the context (they are data, not configuration):
//   external  masks[l] (B*N) = tokens entering block l (guided distillation; empty: own scores)
//   extra_dy  (B*N, D) gradient added to dL/do in backward (nullable)
//   d_raw     d_raw[l][k]: gradient on the computed scores (nullable)
#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"
#include "seqswap/halting/halting.hpp"
#include "seqswap/model/repeat.hpp"
#include "seqswap/ops/device.hpp"

namespace seqswap::model {

template <class Stack>
class Halting;

template <class L>
class Halting<Repeat<L>> {
  static_assert(Layer<L, backend::Host>,
                "Halting<Repeat<L>>: L must satisfy seqswap::Layer (see docs/architecture.md, the layer contract)");

 public:
  using Stack = Repeat<L>;
  using scalar_type = typename L::scalar_type;
  using T = scalar_type;
  using Input = kind::Tokens;
  using Output = kind::Tokens;
  using Options = halting::HaltingOptions;

  template <class B>
  struct Ctx {
    halting::Halter halter;
    std::vector<typename L::template Ctx<B>> block;  // (L) block contexts (packed: kept rows only)
    std::vector<Layout> packed_layout;               // (L) ragged layouts of the kept tokens
    std::vector<std::vector<index_t>> packed_rows;   // (L) full-batch row b*N+i of each packed row
    std::vector<Buffer<T, B>> t, pin, pout;             // (L) t^l (B*N, D); packed inputs / outputs
    Layout full;                                     // the dense (B, N, D) layout
    T* out = nullptr;                                // o of the last forward (the layer's output)
    Buffer<T, B> dout, dt, carry, gdy, gdx;             // backward scratch
    std::vector<std::vector<double>> dots, du;
    // Per-call inputs (see the top of this file).
    std::vector<std::vector<std::uint8_t>> external;
    const T* extra_dy = nullptr;
    const std::vector<std::vector<double>>* d_raw = nullptr;
    // backend::Cuda: per layer, the packed rows, the activity and the output weights on the
    // device; the Halter stays on the host, so each layer's halting scores (B·N values) come
    // down and its decisions go up.
    std::vector<Buffer<index_t, B>> dev_rows;
    std::vector<Buffer<std::uint8_t, B>> dev_act;
    std::vector<Buffer<T, B>> dev_w;
    Buffer<T, B> dev_col, dev_du;
    Buffer<double, B> dev_dots;
    std::vector<T> host_col, host_w, host_du;
    std::vector<double> host_dots;

    index_t tokens() const { return full.batch > 0 ? full.length(0) : 0; }
    std::span<const T> output() const { return {out, static_cast<std::size_t>(full.size())}; }
    const Layout& block_layout(const Options& o, std::size_t l) const {
      return o.packed ? packed_layout.at(l) : full;
    }
  };

  Halting() = default;
  Halting(Stack stack, Options o) : stack_(std::move(stack)), o_(o) { o_.validate(); }

  Stack& stack() { return stack_; }
  const Stack& stack() const { return stack_; }
  const Options& options() const { return o_; }

  std::size_t size() const { return stack_.size(); }
  L& operator[](std::size_t i) { return stack_[i]; }
  const L& operator[](std::size_t i) const { return stack_[i]; }
  // Block i's context of the last forward (packed: over the tokens it kept).
  template <class C>
  static auto& layer_context(C& c, std::size_t i) { return c.block.at(i); }
  std::size_t param_count() const { return stack_.param_count(); }
  std::size_t param_offset(std::size_t i) const { return stack_.param_offset(i); }
  void plan(const Layout& in, Layout& out) const { stack_.plan(in, out); }
  // Forward FLOPs with every token running every block (an upper bound: halting runs fewer).
  double flops(const Layout& in) const { return stack_.flops(in); }
  template <class F>
  void visit_params(F&& f, const std::string& prefix, std::size_t offset) const {
    stack_.visit_params(f, prefix, offset);
  }

  // x (B*N, D) dense tokens, CLS first -> y = o (B*N, D).
  template <class B>
  void forward(ParamsView<const T, B> p, TokensView<const T, B> x, TokensView<T, B> y, Ctx<B>& c) const {
    const index_t L_ = static_cast<index_t>(stack_.size());
    check(L_ > 0, "Halting: expected at least one block, found none");
    check(x.keep == nullptr, "Halting: expected tokens without a keep-mask (halting makes its own)");
    c.full = Layout{x.batch, x.dim, {x.offsets, x.offsets + x.batch + 1}};
    check(c.full.same_tokens(Layout::dense(x.batch, c.full.length(0), x.dim)),
          "Halting: expected every image to have the same number of tokens (a dense batch)");
    const index_t batch = x.batch, N = c.full.length(0);
    const auto rows = static_cast<std::size_t>(batch * N);
    if (!c.external.empty()) {
      check(index_t(c.external.size()) == L_, "Halting: expected ", L_, " external masks, found ", c.external.size());
      for (const auto& m : c.external)
        check(m.size() == rows, "Halting: expected external masks of ", rows, " tokens, found ", m.size());
    }
    c.halter.reset(batch, N, L_, o_);
    c.out = y.data;
    const auto nl = static_cast<std::size_t>(L_);
    c.t.resize(nl);
    c.block.resize(nl);
    c.packed_layout.resize(nl);
    c.packed_rows.resize(nl);
    c.pin.resize(nl);
    c.pout.resize(nl);
    if constexpr (backend::is_cuda<B>)
      forward_device(p, x.data, y.data, c);
    else
      forward_host(p, x.data, y.data, c);
  }

  // dy = dL/do (plus c.extra_dy); the ponder and prior gradients (weights from the options) and
  // c.d_raw enter through the Halter. dx (nullable) ASSIGNED, g ACCUMULATED. On backend::Cuda,
  // c.extra_dy is a device pointer.
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
    if constexpr (backend::is_cuda<B>)
      backward_device(p, c, dy, dx, g);
    else
      backward_host(p, c, dy, dx, g);
  }

 private:
  // The packed layout of the tokens active at a layer: their full-batch rows and offsets.
  static void pack(const std::vector<std::uint8_t>& act, index_t batch, index_t N, index_t D, std::vector<index_t>& idx,
                   Layout& lay) {
    idx.clear();
    lay.batch = batch;
    lay.dim = D;
    lay.offsets.assign(1, 0);
    for (index_t b = 0; b < batch; ++b) {
      for (index_t i = 0; i < N; ++i)
        if (act[b * N + i]) idx.push_back(b * N + i);
      lay.offsets.push_back(static_cast<index_t>(idx.size()));
    }
  }

  // The device forward: blocks, packing and the weighted sum on the device; the Halter on the host.
  template <class B>
  void forward_device(ParamsView<const T, B> p, const T* x, T* y, Ctx<B>& c) const {
    const index_t L_ = static_cast<index_t>(stack_.size()), batch = c.full.batch, N = c.full.length(0), D = c.full.dim;
    const index_t rows = batch * N, size = rows * D;
    const auto nl = static_cast<std::size_t>(L_);
    c.dev_rows.resize(nl);
    c.dev_act.resize(nl);
    c.dev_w.resize(nl);
    c.dev_col.resize(static_cast<std::size_t>(rows));
    c.host_col.resize(static_cast<std::size_t>(rows));
    c.host_w.resize(static_cast<std::size_t>(rows));
    ops::device::fill_zero(y, size);
    const T* in = x;
    for (index_t l = 0; l < L_; ++l) {
      const auto& act = c.halter.active(l);
      c.dev_act[l].upload(act.data(), act.size());
      c.t[l].resize(static_cast<std::size_t>(size));
      const auto pb = p.sub(stack_.param_offset(l), stack_[l].param_count());
      if (o_.packed) {
        auto& idx = c.packed_rows[l];
        pack(act, batch, N, D, idx, c.packed_layout[l]);
        const auto n = static_cast<index_t>(idx.size());
        c.dev_rows[l].upload(idx.data(), idx.size());
        c.pin[l].resize(idx.size() * D);
        c.pout[l].resize(idx.size() * D);
        ops::device::gather_rows(in, c.dev_rows[l].data(), n, D, c.pin[l].data());
        stack_[l].forward(pb, view_of<const T, B>(c.pin[l].data(), c.packed_layout[l]),
                          view_of<T, B>(c.pout[l].data(), c.packed_layout[l]), c.block[l]);
        ops::device::fill_zero(c.t[l].data(), size);
        ops::device::scatter_rows(c.pout[l].data(), c.dev_rows[l].data(), n, D, c.t[l].data());
      } else {
        stack_[l].forward(pb, view_of<const T, B>(in, c.full, c.dev_act[l].data()),
                          view_of<T, B>(c.t[l].data(), c.full, c.dev_act[l].data()), c.block[l]);
      }
      // The Halter reads channel 0 of every active token: that column comes to the host.
      ops::device::copy_columns(c.t[l].data(), rows, D, index_t(0), index_t(1), c.dev_col.data());
      c.dev_col.download(c.host_col.data(), c.host_col.size());
      const std::uint8_t* next = c.external.empty() || l + 1 == L_ ? nullptr : c.external[l + 1].data();
      c.halter.step(l, c.host_col.data(), 1, next);
      // o += w^l_k t^l_k over the tokens active at l (w = 0 elsewhere).
      for (index_t k = 0; k < rows; ++k) c.host_w[k] = act[k] ? T(c.halter.weight(l, std::size_t(k))) : T(0);
      c.dev_w[l].upload(c.host_w.data(), c.host_w.size());
      ops::device::add_weighted_rows(y, c.dev_w[l].data(), c.t[l].data(), rows, D);
      in = c.t[l].data();
    }
  }

  template <class B>
  void backward_device(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                       ParamsView<T, B> g) const {
    const index_t L_ = c.halter.layers(), batch = c.halter.batch(), N = c.halter.tokens(), D = c.full.dim;
    const index_t rows = batch * N, size = rows * D;
    c.dout.resize(static_cast<std::size_t>(size));
    ops::device::copy_kept_rows(dy.data, c.dout.data(), size, index_t(1), static_cast<const std::uint8_t*>(nullptr));
    if (c.extra_dy) ops::device::add_into(c.dout.data(), c.extra_dy, size);
    const T* dout = c.dout.data();
    // <do_k, t^l_k> per token on the device, to the host for the score gradients.
    c.dots.assign(static_cast<std::size_t>(L_), std::vector<double>(static_cast<std::size_t>(rows), 0.0));
    c.dev_dots.resize(static_cast<std::size_t>(rows));
    c.host_dots.resize(static_cast<std::size_t>(rows));
    for (index_t l = 0; l < L_; ++l) {
      const auto& act = c.halter.active(l);
      ops::device::row_dots(dout, c.t[l].data(), rows, D, c.dev_dots.data());
      c.dev_dots.download(c.host_dots.data(), c.host_dots.size());
      for (index_t k = 0; k < rows; ++k) c.dots[l][k] = act[k] ? c.host_dots[k] : 0.0;
    }
    c.halter.backward(c.dots, c.du, c.d_raw);
    c.carry.resize(static_cast<std::size_t>(size));
    ops::device::fill_zero(c.carry.data(), size);
    c.dt.resize(static_cast<std::size_t>(size));
    c.dev_du.resize(static_cast<std::size_t>(rows));
    c.host_du.resize(static_cast<std::size_t>(rows));
    T* carry = c.carry.data();
    for (index_t l = L_; l-- > 0;) {
      for (index_t k = 0; k < rows; ++k) c.host_du[k] = T(c.du[l][k]);
      c.dev_du.upload(c.host_du.data(), c.host_du.size());
      // dL/dt^l = w^l do + (from block l+1) + e_0 du^l, on the tokens active at l.
      ops::device::halting_grad(c.dev_w[l].data(), dout, carry, c.dev_du.data(), c.dev_act[l].data(), rows, D,
                                c.dt.data());
      const std::size_t off = stack_.param_offset(l), n = stack_[l].param_count();
      if (o_.packed) {
        const auto kept = static_cast<index_t>(c.packed_rows[l].size());
        c.gdy.resize(static_cast<std::size_t>(kept * D));
        c.gdx.resize(static_cast<std::size_t>(kept * D));
        ops::device::gather_rows(c.dt.data(), c.dev_rows[l].data(), kept, D, c.gdy.data());
        stack_[l].backward(p.sub(off, n), c.block[l], view_of<const T, B>(c.gdy.data(), c.packed_layout[l]),
                           view_of<T, B>(c.gdx.data(), c.packed_layout[l]), g.sub(off, n));
        ops::device::fill_zero(carry, size);
        ops::device::scatter_rows(c.gdx.data(), c.dev_rows[l].data(), kept, D, carry);
      } else {
        stack_[l].backward(p.sub(off, n), c.block[l], view_of<const T, B>(c.dt.data(), c.full, c.dev_act[l].data()),
                           view_of<T, B>(carry, c.full, c.dev_act[l].data()), g.sub(off, n));
      }
    }
    if (dx.data)
      ops::device::copy_kept_rows(static_cast<const T*>(carry), dx.data, size, index_t(1),
                                  static_cast<const std::uint8_t*>(nullptr));
  }

  template <class B>
  void forward_host(ParamsView<const T, B> p, const T* x, T* yp, Ctx<B>& c) const {
    SEQSWAP_HOST_ONLY(B, "model/halting.hpp (host path)");
    const index_t L_ = static_cast<index_t>(stack_.size()), batch = c.full.batch, N = c.full.length(0), D = c.full.dim;
    const auto rows = static_cast<std::size_t>(batch * N);
    const auto size = rows * static_cast<std::size_t>(D);
    std::fill(yp, yp + size, T(0));
    const T* in = x;
    for (index_t l = 0; l < L_; ++l) {
      const auto& act = c.halter.active(l);
      c.t[l].resize(size);
      const auto pb = p.sub(stack_.param_offset(l), stack_[l].param_count());
      if (o_.packed) {
        auto& idx = c.packed_rows[l];
        auto& lay = c.packed_layout[l];
        pack(act, batch, N, D, idx, lay);
        // Layers keep pointers to their inputs for backward: one packed buffer per block.
        c.pin[l].resize(idx.size() * D);
        c.pout[l].resize(idx.size() * D);
        gather(in, idx, D, c.pin[l].data());
        stack_[l].forward(pb, view_of<const T, B>(c.pin[l].data(), lay), view_of<T, B>(c.pout[l].data(), lay),
                          c.block[l]);
        std::fill(c.t[l].data(), c.t[l].data() + size, T(0));
        scatter(c.pout[l].data(), idx, D, c.t[l].data());
      } else {
        stack_[l].forward(pb, view_of<const T, B>(in, c.full, act.data()),
                          view_of<T, B>(c.t[l].data(), c.full, act.data()), c.block[l]);
      }
      const std::uint8_t* next = c.external.empty() || l + 1 == L_ ? nullptr : c.external[l + 1].data();
      c.halter.step(l, c.t[l].data(), D, next);
      // o += w^l_k t^l_k over the tokens active at l.
      const T* t = c.t[l].data();
      for (std::size_t k = 0; k < rows; ++k) {
        if (!act[k]) continue;
        const T w = T(c.halter.weight(l, k));
        for (index_t j = 0; j < D; ++j) yp[k * D + j] += w * t[k * D + j];
      }
      in = c.t[l].data();
    }
  }

  template <class B>
  void backward_host(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                     ParamsView<T, B> g) const {
    SEQSWAP_HOST_ONLY(B, "model/halting.hpp (host path)");
    const index_t L_ = c.halter.layers(), batch = c.halter.batch(), N = c.halter.tokens(), D = c.full.dim;
    const auto rows = static_cast<std::size_t>(batch * N);
    const auto size = rows * static_cast<std::size_t>(D);
    c.dout.resize(size);
    std::copy(dy.data, dy.data + size, c.dout.data());
    if (c.extra_dy)
      for (std::size_t i = 0; i < size; ++i) c.dout[i] += c.extra_dy[i];
    const T* dout = c.dout.data();
    // <do_k, t^l_k> for the output weights, then the score gradients.
    c.dots.assign(static_cast<std::size_t>(L_), std::vector<double>(rows, 0.0));
    for (index_t l = 0; l < L_; ++l) {
      const auto& act = c.halter.active(l);
      const T* t = c.t[l].data();
      for (std::size_t k = 0; k < rows; ++k) {
        if (!act[k]) continue;
        double s = 0;
        for (index_t j = 0; j < D; ++j) s += double(dout[k * D + j]) * double(t[k * D + j]);
        c.dots[l][k] = s;
      }
    }
    c.halter.backward(c.dots, c.du, c.d_raw);
    c.carry.resize(size);
    std::fill(c.carry.data(), c.carry.data() + size, T(0));
    c.dt.resize(size);
    T* carry = c.carry.data();
    for (index_t l = L_; l-- > 0;) {
      const auto& act = c.halter.active(l);
      // dL/dt^l = w^l do + (from block l+1) + e_0 du^l, on the tokens active at l.
      for (std::size_t k = 0; k < rows; ++k) {
        T* d = c.dt.data() + k * D;
        if (!act[k]) {
          std::fill(d, d + D, T(0));
          continue;
        }
        const T w = T(c.halter.weight(l, k));
        for (index_t j = 0; j < D; ++j) d[j] = w * dout[k * D + j] + carry[k * D + j];
        d[0] += T(c.du[l][k]);
      }
      const std::size_t off = stack_.param_offset(l), n = stack_[l].param_count();
      if (o_.packed) {
        const auto& idx = c.packed_rows[l];
        c.gdy.resize(idx.size() * D);
        c.gdx.resize(idx.size() * D);
        gather(c.dt.data(), idx, D, c.gdy.data());
        stack_[l].backward(p.sub(off, n), c.block[l], view_of<const T, B>(c.gdy.data(), c.packed_layout[l]),
                           view_of<T, B>(c.gdx.data(), c.packed_layout[l]), g.sub(off, n));
        std::fill(carry, carry + size, T(0));
        scatter(c.gdx.data(), idx, D, carry);
      } else {
        stack_[l].backward(p.sub(off, n), c.block[l], view_of<const T, B>(c.dt.data(), c.full, act.data()),
                           view_of<T, B>(carry, c.full, act.data()), g.sub(off, n));
      }
    }
    if (dx.data) std::copy(carry, carry + size, dx.data);
  }

  static void gather(const T* full, const std::vector<index_t>& idx, index_t D, T* packed) {
#pragma omp parallel for schedule(static) if (idx.size() > 2048)
    for (std::size_t r = 0; r < idx.size(); ++r)
      std::copy(full + idx[r] * D, full + (idx[r] + 1) * D, packed + r * D);
  }
  static void scatter(const T* packed, const std::vector<index_t>& idx, index_t D, T* full) {
#pragma omp parallel for schedule(static) if (idx.size() > 2048)
    for (std::size_t r = 0; r < idx.size(); ++r)
      std::copy(packed + r * D, packed + (r + 1) * D, full + idx[r] * D);
  }

  Stack stack_;
  Options o_;
};

}  // namespace seqswap::model
