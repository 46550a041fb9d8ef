// Token batches: data (T_total, D) row-major plus offsets (B+1), like varlen attention's
// cu_seqlens. Ragged batches are first-class: halting packs kept tokens into one.
#pragma once
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "seqswap/core/backend.hpp"
#include "seqswap/core/error.hpp"

namespace seqswap {

using index_t = std::int64_t;

// What a view holds; pipelines check at compile time that Output of one layer is the next
// layer's Input.
namespace kind {
struct Images {};  // one row per image: (B, C*H*W)
struct Tokens {};  // (T_total, D) with offsets
struct Logits {};  // one row per image: (B, classes)
}  // namespace kind

// The shape of a token batch without its data: what `plan` passes from layer to layer.
struct Layout {
  index_t batch = 0;
  index_t dim = 0;
  std::vector<index_t> offsets;  // (batch+1), offsets[0] = 0, non-decreasing

  index_t total() const { return offsets.empty() ? 0 : offsets.back(); }
  index_t length(index_t b) const { return offsets[b + 1] - offsets[b]; }
  std::size_t size() const { return static_cast<std::size_t>(total() * dim); }

  // `batch` sequences of `n` tokens each.
  static Layout dense(index_t batch, index_t n, index_t dim) {
    Layout l{batch, dim, std::vector<index_t>(static_cast<std::size_t>(batch + 1))};
    for (index_t b = 0; b <= batch; ++b) l.offsets[b] = b * n;
    return l;
  }
  // Ragged: lengths[b] tokens in sequence b.
  static Layout ragged(const std::vector<index_t>& lengths, index_t dim) {
    Layout l{static_cast<index_t>(lengths.size()), dim, {0}};
    for (index_t n : lengths) {
      check(n >= 0, "Layout::ragged: expected lengths >= 0, found ", n);
      l.offsets.push_back(l.offsets.back() + n);
    }
    return l;
  }
  bool same_tokens(const Layout& o) const { return offsets == o.offsets; }
};

// A view of a token batch. `keep` (T_total, nullable) marks tokens that take part: a masked
// token neither contributes to other tokens nor changes.
template <class T, class Backend = backend::Host>
struct TokensView {
  T* data = nullptr;                   // (T_total, dim)
  const index_t* offsets = nullptr;    // (batch+1)
  index_t batch = 0;
  index_t dim = 0;
  const std::uint8_t* keep = nullptr;  // (T_total) 1 = kept; nullptr = all kept

  index_t total() const { return offsets ? offsets[batch] : 0; }
  index_t begin(index_t b) const { return offsets[b]; }
  index_t length(index_t b) const { return offsets[b + 1] - offsets[b]; }
  T* row(index_t t) const { return data + t * dim; }
  bool kept(index_t t) const { return keep == nullptr || keep[t] != 0; }

  // A read-only view of the same memory.
  operator TokensView<const T, Backend>() const  // NOLINT: views convert like pointers
    requires(!std::is_const_v<T>)
  {
    return {data, offsets, batch, dim, keep};
  }
};

template <class T, class Backend = backend::Host>
TokensView<T, Backend> view_of(T* data, const Layout& l, const std::uint8_t* keep = nullptr) {
  return {data, l.offsets.data(), l.batch, l.dim, keep};
}

}  // namespace seqswap
