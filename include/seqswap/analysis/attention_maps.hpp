// Reading a ViT's attention probabilities out of the context of its last forward: the maps are
// never copied, only viewed (they live in each SoftmaxAttention's Ctx until the next forward).
//
// Block i's mixer context is reached by name (model::mixer_context, model/vit.hpp); a Slot's
// context holds the seated mixer's in `.v`.
// A mixer Ctx counts as attention when it (or, for a Projected<Core> composition, its core's
// context `.core`) exposes `probs`, `prob_offsets`, `qkv_layout`, `keep` and `heads` as
// SoftmaxAttentionCore's does (any sparsity policy); any other mixer's layer is reported as
// absent.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"
#include "seqswap/model/vit.hpp"

namespace seqswap::analysis {

// One layer's attention probabilities, for every sequence and head of the last forward.
// A view: valid until the model's next forward. `keep` points at the forward's keep-mask and
// is valid as long as that mask is.
template <class T>
struct AttentionMaps {
  const T* probs = nullptr;                   // Σ_b H n_b²: sequence, head, row-major (n_b, n_b)
  const std::size_t* prob_offsets = nullptr;  // (batch+1) into probs
  const index_t* offsets = nullptr;           // (batch+1) token offsets (n_b = length(b))
  const std::uint8_t* keep = nullptr;         // (T_total) 1 = kept; nullptr = all kept
  index_t batch = 0;
  index_t heads = 0;

  index_t length(index_t b) const { return offsets[b + 1] - offsets[b]; }
  // (n_b, n_b) row-major: row i is query i's distribution over keys.
  const T* map(index_t b, index_t h) const {
    const auto n = static_cast<std::size_t>(length(b));
    return probs + prob_offsets[b] + static_cast<std::size_t>(h) * n * n;
  }
  // (n_b) keep flags of sequence b, or nullptr when all are kept.
  const std::uint8_t* keep_of(index_t b) const { return keep ? keep + offsets[b] : nullptr; }
};

// A (core) context that holds softmax attention probabilities.
template <class C>
concept AttentionCtx = requires(const C& c) {
  { c.probs.data() };
  { c.prob_offsets.data() };
  { c.qkv_layout.offsets.data() };
  { c.keep };
  { c.heads };
};
// A mixer context whose core's context holds them (attention::SoftmaxAttention's).
template <class C>
concept ProjectedAttentionCtx = requires(const C& c) {
  requires AttentionCtx<std::remove_cvref_t<decltype(c.core)>>;
};

// The maps held by an attention context (after its forward).
template <AttentionCtx C>
auto maps_of(const C& c) {
  using T = std::remove_cvref_t<decltype(*c.probs.data())>;
  if constexpr (requires { c.stored; })
    check(c.stored || c.prob_offsets.size() != 0 || c.qkv_layout.batch == 0,
          "attention maps: the last forward took the memory-bounded path (a sequence longer than "
          "SoftmaxAttentionOptions::store_probs_up_to), which keeps no probabilities; raise "
          "store_probs_up_to to at least the longest sequence (",
          [&] {
            index_t n = 0;
            for (index_t b = 0; b < c.qkv_layout.batch; ++b) n = std::max(n, c.qkv_layout.length(b));
            return n;
          }(),
          ") to read maps");
  check(c.prob_offsets.size() == static_cast<std::size_t>(c.qkv_layout.batch) + 1,
        "attention maps: expected a forward first (", c.qkv_layout.batch + 1,
        " probability offsets), found ", c.prob_offsets.size());
  return AttentionMaps<T>{c.probs.data(), c.prob_offsets.data(), c.qkv_layout.offsets.data(),
                          c.keep,         c.qkv_layout.batch,    c.heads};
}
template <ProjectedAttentionCtx C>
auto maps_of(const C& c) {
  return maps_of(c.core);
}

// Block i's attention maps after `model.forward(...)` of a Model<Vit<T, Slot>>; nullopt when
// block i's slot holds a mixer other than attention. Throws when there was no forward, or the
// slot was re-seated since (the context then belongs to the old mixer).
template <class M>
auto block_attention(M& model, std::size_t i) {
  using T = typename M::T;
  const std::size_t L = model.net().depth();
  auto& body_ctx = std::get<2>(model.context().ctx);
  check(body_ctx.ctx.size() == L, "block_attention: expected a forward of the ", L,
        "-block ViT first, found contexts for ", body_ctx.ctx.size(), " blocks");
  check(i < L, "block_attention: block ", i, " out of range (", L, " blocks)");
  const auto& slot_ctx = model::mixer_context(model, i);
  const auto& slot = model.net().mixer(i);
  check(slot_ctx.v.index() == slot.index(), "block_attention: block ", i,
        " was re-seated after the last forward (context holds mixer ", slot_ctx.v.index(),
        ", slot holds ", slot.index(), "); run forward again");
  return std::visit(
      [](const auto& c) {
        using C = std::remove_cvref_t<decltype(c)>;
        if constexpr (AttentionCtx<C> || ProjectedAttentionCtx<C>) {
          return std::optional<AttentionMaps<T>>(maps_of(c));
        } else {
          return std::optional<AttentionMaps<T>>{};
        }
      },
      slot_ctx.v);
}

// Every block's maps (nullopt for non-attention blocks), in block order.
template <class M>
auto attention_maps(M& model) {
  using T = typename M::T;
  std::vector<std::optional<AttentionMaps<T>>> r;
  const std::size_t L = model.net().depth();
  for (std::size_t i = 0; i < L; ++i) r.push_back(block_attention(model, i));
  return r;
}

}  // namespace seqswap::analysis
