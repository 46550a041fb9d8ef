// Model<Net>: a network plus its arena — flat params, grads, AdamW m and v at identical
// offsets (64-byte aligned buffers) — and the context of its last forward.
#pragma once
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "seqswap/core/buffer.hpp"
#include "seqswap/core/concepts.hpp"
#include "seqswap/core/rng.hpp"

namespace seqswap::model {

// The backend seam (docs/architecture.md, "Backends"): a Model<Net, backend::Cuda> holds its
// arena (parameters, gradients, AdamW moments) and every layer context in device memory
// (Buffer<T, backend::Cuda>), initialised on the host and uploaded. Its forward and backward
// take device pointers for the data and keep a token view's offsets on the host (layouts are
// planned there); each layer runs its device ops (ops/device.hpp, defined in
// ops/cuda/device_ops.cuh, which the CUDA translation unit includes) on the calling thread's
// stream. Layers without a device path refuse backend::Cuda at compile time (SEQSWAP_HOST_ONLY).

// Running a network: the context and output of its last forward, for parameters held elsewhere
// (a Model's arena, or another model's when a HaltingVit runs it with halting).
template <class Net, class Backend = backend::Host>
class Runner {
 public:
  using T = typename Net::scalar_type;
  using Ctx = typename Net::template Ctx<Backend>;

  // x: one row per input (images) -> the network's output (logits), valid until next forward.
  TokensView<const T, Backend> forward(const Net& net, ParamsView<const T, Backend> p, TokensView<const T, Backend> x) {
    in_layout_ = Layout{x.batch, x.dim, {x.offsets, x.offsets + x.batch + 1}};
    net.plan(in_layout_, out_layout_);
    out_.resize(out_layout_.size());
    auto y = view_of<T, Backend>(out_.data(), out_layout_);
    net.forward(p, x, y, ctx_);
    return y;
  }
  // A dense batch of `batch` inputs of `dim` values each.
  TokensView<const T, Backend> forward(const Net& net, ParamsView<const T, Backend> p, const T* x, index_t batch,
                                       index_t dim) {
    dense_in_ = Layout::dense(batch, 1, dim);
    return forward(net, p, TokensView<const T, Backend>{x, dense_in_.offsets.data(), batch, dim, nullptr});
  }
  // dy: gradient w.r.t. the last forward's output; ACCUMULATES into g; dx (nullable) receives
  // the gradient w.r.t. the input.
  void backward(const Net& net, ParamsView<const T, Backend> p, ParamsView<T, Backend> g, const T* dy, T* dx) {
    TokensView<const T, Backend> d = view_of<const T, Backend>(dy, out_layout_);
    TokensView<T, Backend> dxv{dx, in_layout_.offsets.data(), in_layout_.batch, in_layout_.dim, nullptr};
    net.backward(p, ctx_, d, dxv, g);
  }
  const Layout& output_layout() const { return out_layout_; }
  Ctx& context() { return ctx_; }

 private:
  Ctx ctx_;
  Buffer<T, Backend> out_;
  Layout in_layout_, out_layout_, dense_in_;
};

template <class Net, class Backend = backend::Host>
class Model {
 public:
  using T = typename Net::scalar_type;
  using Ctx = typename Net::template Ctx<Backend>;
  using NetType = Net;
  using backend_type = Backend;

  explicit Model(Net net) : net_(std::move(net)) { layout(); }

  Net& net() { return net_; }
  const Net& net() const { return net_; }
  const std::vector<ParamInfo>& params_info() const { return infos_; }
  std::size_t param_count() const { return params_.size(); }

  ParamsView<T, Backend> params() { return {params_.data(), params_.size()}; }
  ParamsView<const T, Backend> params() const { return {params_.data(), params_.size()}; }
  ParamsView<T, Backend> grads() { return {grads_.data(), grads_.size()}; }
  Buffer<T, Backend>& adam_m() { return m_; }
  Buffer<T, Backend>& adam_v() { return v_; }

  // The parameter tensor `name` (e.g. "blocks.3.attn.qkv.weight"); Error if absent.
  const ParamInfo& info(const std::string& name) const {
    for (const auto& i : infos_)
      if (i.name == name) return i;
    fail("Model: no parameter named '", name, "' (", infos_.size(), " parameters, first '",
         infos_.empty() ? std::string() : infos_.front().name, "')");
  }
  // (Pointers into the arena: device pointers on a device backend.)
  T* param(const std::string& name) { return params_.data() + info(name).offset; }
  T* grad(const std::string& name) { return grads_.data() + info(name).offset; }

  // Initialises every parameter as its ParamInfo says, reproducibly for a seed; zeroes grads
  // and optimizer state.
  void init(std::uint64_t seed) {
    Rng rng(seed);
    if constexpr (backend::is_host<Backend>) {
      for (const auto& i : infos_) init_values(params_.data(), i, rng);
    } else {  // the same values, drawn on the host and uploaded
      Buffer<T> host(params_.size());
      for (const auto& i : infos_) init_values(host.data(), i, rng);
      params_.upload(host.data(), host.size());
    }
    grads_.zero();
    m_.zero();
    v_.zero();
  }

  // After re-seating a Slot: lay the arena out anew; tensors whose name and shape survive keep
  // their values and optimizer state, new ones are initialised from `seed`.
  void relayout(std::uint64_t seed)
    requires backend::is_host<Backend>
  {
    const std::vector<ParamInfo> old_infos = infos_;
    Buffer<T, Backend> old_p = params_, old_m = m_, old_v = v_;
    layout();
    std::map<std::string, const ParamInfo*> by_name;
    for (const auto& i : old_infos) by_name[i.name] = &i;
    Rng rng(seed);
    for (const auto& i : infos_) {
      auto it = by_name.find(i.name);
      if (it != by_name.end() && it->second->shape == i.shape) {
        const std::size_t o = it->second->offset;
        std::copy(old_p.data() + o, old_p.data() + o + i.count, params_.data() + i.offset);
        std::copy(old_m.data() + o, old_m.data() + o + i.count, m_.data() + i.offset);
        std::copy(old_v.data() + o, old_v.data() + o + i.count, v_.data() + i.offset);
      } else {
        init_tensor(i, rng);
      }
    }
    grads_.zero();
  }

  // x: one row per input (images) -> the network's output (logits), valid until next forward.
  TokensView<const T, Backend> forward(TokensView<const T, Backend> x) {
    return run_.forward(net_, ParamsView<const T, Backend>(params()), x);
  }
  // A dense batch of `batch` inputs of `dim` values each.
  TokensView<const T, Backend> forward(const T* x, index_t batch, index_t dim) {
    return run_.forward(net_, ParamsView<const T, Backend>(params()), x, batch, dim);
  }
  // dy: gradient of the loss w.r.t. the last forward's output; ACCUMULATES into grads().
  // dx (optional) receives the gradient w.r.t. the input.
  void backward(const T* dy, T* dx = nullptr) {
    run_.backward(net_, ParamsView<const T, Backend>(params()), grads(), dy, dx);
  }
  void zero_grad() { grads_.zero(); }
  // Initialises one tensor as its ParamInfo says (and zeroes its optimizer state).
  void init_tensor(const ParamInfo& i, Rng& rng)
    requires backend::is_host<Backend>
  {
    init_values(params_.data(), i, rng);
    std::fill(m_.data() + i.offset, m_.data() + i.offset + i.count, T(0));
    std::fill(v_.data() + i.offset, v_.data() + i.offset + i.count, T(0));
  }
  const Layout& output_layout() const { return run_.output_layout(); }
  Ctx& context() { return run_.context(); }

 private:
  void layout() {
    infos_.clear();
    net_.visit_params([&](ParamInfo i) { infos_.push_back(std::move(i)); }, "", 0);
    const std::size_t n = net_.param_count();
    std::size_t sum = 0;
    for (const auto& i : infos_) sum += i.count;
    check(sum == n, "Model: parameter tensors add up to ", sum, " values, expected ", n,
          " (a layer's visit_params and param_count disagree)");
    params_.assign(n, T(0));
    grads_.assign(n, T(0));
    m_.assign(n, T(0));
    v_.assign(n, T(0));
  }
  static void init_values(T* arena, const ParamInfo& i, Rng& rng) {
    T* p = arena + i.offset;
    if (i.init == Init::custom) {
      check(static_cast<bool>(i.custom_init), "Model::init: tensor '", i.name,
            "' asks for a custom init but its layer gave no custom_init function");
      std::vector<double> v(i.count);
      i.custom_init(v.data(), i.count, rng);
      for (std::size_t k = 0; k < i.count; ++k) p[k] = T(v[k]);
      return;
    }
    for (std::size_t k = 0; k < i.count; ++k) {
      switch (i.init) {
        case Init::zeros: p[k] = T(0); break;
        case Init::ones: p[k] = T(1); break;
        case Init::trunc_normal: p[k] = T(rng.trunc_normal(i.std)); break;
        case Init::normal: p[k] = T(rng.normal() * i.std); break;
        case Init::uniform: p[k] = T((2 * rng.uniform() - 1) * i.std); break;
        case Init::custom: break;  // handled above
      }
    }
  }

  Net net_;
  std::vector<ParamInfo> infos_;
  Buffer<T, Backend> params_, grads_, m_, v_;
  Runner<Net, Backend> run_;
};

// Copies into `dst` every tensor of `src` with the same name and shape (a student starting from
// its teacher: the embedding, norms, MLPs, the attention blocks it keeps and the output
// projections "attn.proj" its new mixers share); returns how many tensors it copied.
template <class Dst, class Src>
std::size_t inherit_params(Dst& dst, const Src& src) {
  std::map<std::string, const ParamInfo*> by_name;
  for (const auto& i : src.params_info()) by_name[i.name] = &i;
  const auto* from = src.params().data;
  std::size_t copied = 0;
  for (const auto& i : dst.params_info()) {
    auto it = by_name.find(i.name);
    if (it == by_name.end() || it->second->shape != i.shape) continue;
    std::copy(from + it->second->offset, from + it->second->offset + i.count, dst.params().data + i.offset);
    ++copied;
  }
  return copied;
}

}  // namespace seqswap::model
