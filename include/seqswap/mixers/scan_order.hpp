// Scan orders over the patch grid: which token a sequential mixer visits k-th.
// A sequence of n = 1 + G² tokens is a CLS token plus a G×G patch grid in raster order (the
// ViT's layout); the order permutes the patches (raster, reversed, column-major, snake) and
// places CLS at the head, middle or tail. Sequences of any other length (ragged or packed
// batches) are scanned in their stored order, reversed for Grid::reversed.
#pragma once
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap::order {

enum class Grid { raster, reversed, column_major, snake };
enum class Cls { head, middle, tail };

inline Grid grid_from_name(std::string_view s) {
  if (s == "raster") return Grid::raster;
  if (s == "reversed") return Grid::reversed;
  if (s == "column_major") return Grid::column_major;
  if (s == "snake") return Grid::snake;
  fail("scan order: unknown grid order '", s, "'; known: raster, reversed, column_major, snake");
}
inline Cls cls_from_name(std::string_view s) {
  if (s == "head") return Cls::head;
  if (s == "middle") return Cls::middle;
  if (s == "tail") return Cls::tail;
  fail("scan order: unknown CLS position '", s, "'; known: head, middle, tail");
}

struct ScanOrder {
  Grid grid = Grid::raster;
  Cls cls = Cls::head;

  bool is_identity() const { return grid == Grid::raster && cls == Cls::head; }

  // perm[k] = index (within the sequence) of the token visited k-th; a permutation of 0..n-1.
  std::vector<index_t> permutation(index_t n) const {
    std::vector<index_t> perm;
    perm.reserve(static_cast<std::size_t>(n));
    append_permutation(n, 0, perm);
    return perm;
  }
  // Appends t0 + perm[k] for k = 0..n-1 to `out` (no temporaries: a forward pass reuses `out`).
  void append_permutation(index_t n, index_t t0, std::vector<index_t>& out) const {
    const auto G = static_cast<index_t>(std::llround(std::sqrt(double(n > 0 ? n - 1 : 0))));
    if (n < 2 || G * G != n - 1) {  // not CLS + square grid: stored order
      for (index_t k = 0; k < n; ++k) out.push_back(t0 + (grid == Grid::reversed ? n - 1 - k : k));
      return;
    }
    const index_t P = G * G;
    const index_t cls_at = cls == Cls::head ? 0 : cls == Cls::tail ? P : P / 2;
    for (index_t k = 0; k < n; ++k) {
      if (k == cls_at) {
        out.push_back(t0);
        continue;
      }
      const index_t q = k < cls_at ? k : k - 1;  // the q-th patch visited
      const index_t i = q / G, j = q % G;
      index_t r = i, c = j;
      switch (grid) {
        case Grid::raster: break;
        case Grid::reversed: r = G - 1 - i; c = G - 1 - j; break;
        case Grid::column_major: r = j; c = i; break;
        case Grid::snake: c = (i % 2 == 0) ? j : G - 1 - j; break;
      }
      out.push_back(t0 + 1 + r * G + c);
    }
  }
};

// Permutation of a whole (ragged) token batch: global row visited k-th, per sequence.
// Fills `perm` (its capacity is reused).
inline void batch_permutation(const ScanOrder& o, const index_t* offsets, index_t batch, std::vector<index_t>& perm) {
  perm.clear();
  for (index_t b = 0; b < batch; ++b) o.append_permutation(offsets[b + 1] - offsets[b], offsets[b], perm);
}
inline std::vector<index_t> batch_permutation(const ScanOrder& o, const index_t* offsets, index_t batch) {
  std::vector<index_t> perm;
  batch_permutation(o, offsets, batch, perm);
  return perm;
}

// out[k] = x[perm[k]]  (x, out: (T_total, C))
template <class T>
void gather_rows(const T* x, const std::vector<index_t>& perm, index_t C, T* out) {
  for (std::size_t k = 0; k < perm.size(); ++k)
    std::copy(x + perm[k] * C, x + (perm[k] + 1) * C, out + static_cast<index_t>(k) * C);
}
// out[perm[k]] = x[k]: the inverse of gather_rows.
template <class T>
void scatter_rows(const T* x, const std::vector<index_t>& perm, index_t C, T* out) {
  for (std::size_t k = 0; k < perm.size(); ++k)
    std::copy(x + static_cast<index_t>(k) * C, x + static_cast<index_t>(k + 1) * C, out + perm[k] * C);
}

// Puts a token batch into scan order for mixers whose row-wise layers commute with the
// permutation: perm (rows; left empty for the identity order), x_s (rows, D) and keep_s (rows)
// gathered when something moves, and x_scan / keep_scan pointing at what the scan reads.
template <class T, class XBuf>
void gather_scan_input(const ScanOrder& o, const T* x, const std::uint8_t* keep, const index_t* offsets,
                       index_t batch, index_t D, std::vector<index_t>& perm, XBuf& x_s,
                       std::vector<std::uint8_t>& keep_s, const T*& x_scan, const std::uint8_t*& keep_scan) {
  x_scan = x;
  keep_scan = keep;
  perm.clear();
  if (o.is_identity()) return;
  batch_permutation(o, offsets, batch, perm);
  const auto rows = static_cast<index_t>(perm.size());
  x_s.resize(static_cast<std::size_t>(rows * D));
  gather_rows(x, perm, D, x_s.data());
  x_scan = x_s.data();
  if (keep) {
    keep_s.resize(static_cast<std::size_t>(rows));
    for (index_t k = 0; k < rows; ++k) keep_s[std::size_t(k)] = keep[perm[std::size_t(k)]];
    keep_scan = keep_s.data();
  }
}

}  // namespace seqswap::order
