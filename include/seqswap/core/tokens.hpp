// Token batches: data (T_total, D) row-major plus offsets (B+1), like varlen attention's
// cu_seqlens. Ragged batches are first-class: halting packs kept tokens into one.
#pragma once
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <initializer_list>
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

// The (batch+1) offsets of a Layout. Every forward copies layouts from layer to layer, so the
// storage is inline for batches of up to kInline - 1 sequences: copying then never allocates
// (a training step allocates nothing after the first). Larger batches spill to the heap once.
class Offsets {
 public:
  static constexpr std::size_t kInline = 264;

  Offsets() = default;
  explicit Offsets(std::size_t n) { resize(n); }
  Offsets(std::initializer_list<index_t> v) { assign(v.begin(), v.end()); }
  Offsets(const index_t* first, const index_t* last) { assign(first, last); }
  Offsets(const Offsets& o) { assign(o.begin(), o.end()); }
  Offsets& operator=(const Offsets& o) {
    if (this != &o) assign(o.begin(), o.end());
    return *this;
  }

  void assign(const index_t* first, const index_t* last) {
    const auto n = static_cast<std::size_t>(last - first);
    reserve(n);
    std::copy(first, last, data());
    size_ = n;
  }
  void assign(std::size_t n, index_t v) {
    reserve(n);
    std::fill(data(), data() + n, v);
    size_ = n;
  }
  void resize(std::size_t n) {  // new entries are 0
    reserve(n);
    if (n > size_) std::fill(data() + size_, data() + n, index_t(0));
    size_ = n;
  }
  void push_back(index_t v) {
    if (size_ == capacity()) reserve(2 * size_ + 1);
    data()[size_++] = v;
  }

  index_t* data() { return heap_.empty() ? inline_ : heap_.data(); }
  const index_t* data() const { return heap_.empty() ? inline_ : heap_.data(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  index_t& operator[](std::size_t i) { return data()[i]; }
  const index_t& operator[](std::size_t i) const { return data()[i]; }
  index_t& back() { return data()[size_ - 1]; }
  const index_t& back() const { return data()[size_ - 1]; }
  index_t* begin() { return data(); }
  index_t* end() { return data() + size_; }
  const index_t* begin() const { return data(); }
  const index_t* end() const { return data() + size_; }
  friend bool operator==(const Offsets& a, const Offsets& b) {
    return a.size_ == b.size_ && std::equal(a.begin(), a.end(), b.begin());
  }

 private:
  std::size_t capacity() const { return heap_.empty() ? kInline : heap_.size(); }
  void reserve(std::size_t n) {
    if (n <= capacity()) return;
    std::vector<index_t> grown(std::max(n, 2 * capacity()));
    std::copy(data(), data() + size_, grown.data());
    heap_ = std::move(grown);
  }

  index_t inline_[kInline];
  std::vector<index_t> heap_;  // in use once non-empty
  std::size_t size_ = 0;
};

// The shape of a token batch without its data: what `plan` passes from layer to layer.
struct Layout {
  index_t batch = 0;
  index_t dim = 0;
  Offsets offsets;  // (batch+1), offsets[0] = 0, non-decreasing

  index_t total() const { return offsets.empty() ? 0 : offsets.back(); }
  index_t length(index_t b) const { return offsets[b + 1] - offsets[b]; }
  std::size_t size() const { return static_cast<std::size_t>(total() * dim); }

  // `batch` sequences of `n` tokens each.
  static Layout dense(index_t batch, index_t n, index_t dim) {
    Layout l{batch, dim, Offsets(static_cast<std::size_t>(batch + 1))};
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
  // Σ_b n_b²: the count of token pairs within sequences (attention's quadratic term).
  double pair_count() const {
    double s = 0;
    for (index_t b = 0; b < batch; ++b) s += double(length(b)) * double(length(b));
    return s;
  }
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
