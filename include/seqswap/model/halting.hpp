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
    const index_t batch = x.batch, N = c.full.length(0), D = x.dim;
    const auto rows = static_cast<std::size_t>(batch * N);
    const auto size = rows * static_cast<std::size_t>(D);
    if (!c.external.empty()) {
      check(index_t(c.external.size()) == L_, "Halting: expected ", L_, " external masks, found ", c.external.size());
      for (const auto& m : c.external)
        check(m.size() == rows, "Halting: expected external masks of ", rows, " tokens, found ", m.size());
    }
    c.halter.reset(batch, N, L_, o_);
    c.out = y.data;
    std::fill(y.data, y.data + size, T(0));
    const auto nl = static_cast<std::size_t>(L_);
    c.t.resize(nl);
    c.block.resize(nl);
    c.packed_layout.resize(nl);
    c.packed_rows.resize(nl);
    c.pin.resize(nl);
    c.pout.resize(nl);
    const T* in = x.data;
    for (index_t l = 0; l < L_; ++l) {
      const auto& act = c.halter.active(l);
      c.t[l].resize(size);
      const auto pb = p.sub(stack_.param_offset(l), stack_[l].param_count());
      if (o_.packed) {
        auto& idx = c.packed_rows[l];
        idx.clear();
        auto& lay = c.packed_layout[l];
        lay.batch = batch;
        lay.dim = D;
        lay.offsets.assign(1, 0);
        for (index_t b = 0; b < batch; ++b) {
          for (index_t i = 0; i < N; ++i)
            if (act[b * N + i]) idx.push_back(b * N + i);
          lay.offsets.push_back(static_cast<index_t>(idx.size()));
        }
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
        for (index_t j = 0; j < D; ++j) y.data[k * D + j] += w * t[k * D + j];
      }
      in = c.t[l].data();
    }
  }

  // dy = dL/do (plus c.extra_dy); the ponder and prior gradients (weights from the options) and
  // c.d_raw enter through the Halter. dx (nullable) ASSIGNED, g ACCUMULATED.
  template <class B>
  void backward(ParamsView<const T, B> p, Ctx<B>& c, TokensView<const T, B> dy, TokensView<T, B> dx,
                ParamsView<T, B> g) const {
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

 private:
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
