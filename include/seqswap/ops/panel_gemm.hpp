// Register-tiled products for the dense maps over token rows (ops/gemm.hpp's forward and dx):
//   C (m × w) = A (m × k) · B (k × w)  [+ bias (w), added once, after the sum]   or   C += A · B
//
// Why not Eigen's GEMM here: the maps' inner sizes are small (64 or 256 at the teacher's
// shapes) and A (the token rows) is large, so Eigen's packing of A, a full pass over it on
// every call, and its bias-first accumulate (one more pass over C) cost as much as a fifth of
// the map. Here A is read in place by element (two strides, so Aᵀ costs nothing) and only B,
// the small weight, is packed, once per call, into panels of two packets of columns (k rows of
// a panel contiguous, zero past w). The kernel keeps a 6-row × 2-packet tile of C in registers
// (12 accumulators; per step of p two loads of the panel and six broadcasts of A) and walks
// the rows in blocks (about 48 KB of A and C rows) so that a block's rows stay near while the
// panels pass; the row tails run the same kernel with fewer rows, a last panel narrower than two
// packets stores only its columns. Measured at the teacher's shapes on two Zen 3 threads, call
// by call against the Eigen product it replaced with operands out of cache
// (benchmarks/bench_linear_ab.cpp, docs/performance.md): 1.0-1.33x Eigen's rate for y and
// 0.97-1.24x for dx, the larger gains when the machine's memory is quiet. dW (k = rows, both
// operands large) stays with Eigen: an in-place variant of this kernel ran at 0.5-0.9x its rate.
//
// Each entry of C is the sum over p = 0 .. k-1 in that order, then + bias: Eigen's own order
// for these products (the same bits, measured), and the same on any split of the rows.
// Host only (Eigen's packet primitives: SSE / AVX / AVX-512 / NEON, float and double).
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <vector>

namespace seqswap::ops {

namespace panel_detail {
using idx = std::int64_t;
template <class T>
using Packet = typename Eigen::internal::packet_traits<T>::type;
template <class T>
inline constexpr idx kSize = Eigen::internal::unpacket_traits<Packet<T>>::size;
inline constexpr int kRows = 6, kPackets = 2;  // the register tile: 12 accumulators
template <class T>
inline constexpr idx kWidth = kPackets * kSize<T>;  // a panel's columns
}  // namespace panel_detail

struct PanelArgs {
  std::int64_t m = 0, w = 0, k = 0;   // C is m × w, the inner dimension k
  std::int64_t a_row = 0, a_col = 1;  // A[i, p] = a[i · a_row + p · a_col]
  std::int64_t ldc = 0;               // C[i, j] = c[i · ldc + j]
};

// B for panel_gemm: packed panels (panel t holds B[p, t·W + q] at data[(t·k + p)·W + q], W =
// panel_detail::kWidth<T>, zero past w), or in place (ldb > 0: B[p, j] = data[p · ldb + j]).
template <class T>
struct PanelB {
  const T* data = nullptr;
  std::int64_t ldb = 0;
};

// B (k × w) with B[p, j] = b[p · s_p + j · s_j] packed into `buf` (resized): a row-major
// W (w × k) gives Wᵀ with s_p = 1, s_j = k; W itself (k × w) is s_p = w, s_j = 1.
template <class T>
PanelB<T> pack_panels(const T* b, std::int64_t k, std::int64_t w, std::int64_t s_p, std::int64_t s_j,
                      std::vector<T>& buf) {
  using namespace panel_detail;
  constexpr idx W = kWidth<T>;
  const idx panels = (w + W - 1) / W;
  // A panel's rows start on cache lines (a row of two packets is one 64-byte line for AVX2
  // float): unaligned, every other packet load would straddle two lines.
  constexpr idx kAlign = 64 / idx(sizeof(T));
  buf.resize(static_cast<std::size_t>(panels * k * W + kAlign));
  T* const first = buf.data() + (kAlign - idx(reinterpret_cast<std::uintptr_t>(buf.data()) % 64) / idx(sizeof(T))) % kAlign;
  T* out = first;
  for (idx t = 0; t < panels; ++t)
    for (idx p = 0; p < k; ++p)
      for (idx q = 0; q < W; ++q) {
        const idx j = t * W + q;
        *out++ = j < w ? b[p * s_p + j * s_j] : T(0);
      }
  return {first, 0};
}

namespace panel_detail {

// R rows of C from row i, one panel's columns from j (cols of them inside C); bp: the panel's
// B[0, j], its rows bs apart.
template <class T, int R, bool Acc>
inline void tile(const PanelArgs& g, const T* a, const T* bp, idx bs, const T* bias, T* c, idx i, idx j,
                 idx cols) {
  using namespace Eigen::internal;
  using P = Packet<T>;
  constexpr idx S = kSize<T>;
  constexpr int NP = kPackets;
  P acc[R][NP];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q] = pset1<P>(T(0));
  const T* ai = a + i * g.a_row;
  for (idx p = 0; p < g.k; ++p) {
    P bv[NP];
    for (int q = 0; q < NP; ++q) bv[q] = ploadu<P>(bp + p * bs + q * S);
    for (int r = 0; r < R; ++r) {
      const P av = pset1<P>(ai[r * g.a_row + p * g.a_col]);
      for (int q = 0; q < NP; ++q) acc[r][q] = pmadd(av, bv[q], acc[r][q]);
    }
  }
  if (cols == NP * S) {
    for (int q = 0; q < NP; ++q) {
      const P bb = bias ? ploadu<P>(bias + j + q * S) : pset1<P>(T(0));
      for (int r = 0; r < R; ++r) {
        T* out = c + (i + r) * g.ldc + j + q * S;
        if constexpr (Acc)
          pstoreu(out, padd(ploadu<P>(out), acc[r][q]));
        else
          pstoreu(out, bias ? padd(acc[r][q], bb) : acc[r][q]);
      }
    }
    return;
  }
  alignas(64) T buf[NP * S];  // a narrow last panel: only its columns are stored
  for (int r = 0; r < R; ++r) {
    for (int q = 0; q < NP; ++q) pstore(buf + q * S, acc[r][q]);
    T* out = c + (i + r) * g.ldc + j;
    for (idx q = 0; q < cols; ++q) {
      if constexpr (Acc)
        out[q] += buf[q];
      else
        out[q] = bias ? buf[q] + bias[j + q] : buf[q];
    }
  }
}

template <class T, bool Acc>
inline void panel_rows(const PanelArgs& g, const T* a, const T* bp, idx bs, const T* bias, T* c, idx i0, idx i1,
                       idx j, idx cols) {
  idx i = i0;
  for (; i + kRows <= i1; i += kRows) tile<T, kRows, Acc>(g, a, bp, bs, bias, c, i, j, cols);
  switch (i1 - i) {
    case 5: return tile<T, 5, Acc>(g, a, bp, bs, bias, c, i, j, cols);
    case 4: return tile<T, 4, Acc>(g, a, bp, bs, bias, c, i, j, cols);
    case 3: return tile<T, 3, Acc>(g, a, bp, bs, bias, c, i, j, cols);
    case 2: return tile<T, 2, Acc>(g, a, bp, bs, bias, c, i, j, cols);
    case 1: return tile<T, 1, Acc>(g, a, bp, bs, bias, c, i, j, cols);
    default: return;
  }
}

}  // namespace panel_detail

// C = A B (+ bias, if not null) with Accumulate = false; C += A B with true (bias ignored).
// C must not overlap A or B. An in-place B's last panel, when narrower than a panel, is packed
// into a per-thread buffer (a packet load there could read past B's last row).
// Rows go in blocks of `block`; 0 (the default) takes the block whose rows of A and C
// together hold about 48 KB, 6 to 96 rows (measured on two Zen 3 threads among blocks of 6 to
// 192 rows at the teacher's and ViT-Tiny's shapes: within a few percent of the best block at
// each; docs/performance.md).
template <bool Accumulate, class T>
void panel_gemm(const PanelArgs& g, const T* a, const PanelB<T>& b, const T* bias, T* c,
                std::int64_t block = 0) {
  using namespace panel_detail;
  constexpr idx W = kWidth<T>;
  if (g.m <= 0 || g.w <= 0) return;
  if (g.k <= 0) {  // an empty sum: C = bias (or 0); C += 0 is nothing
    if constexpr (!Accumulate)
      for (idx i = 0; i < g.m; ++i)
        for (idx j = 0; j < g.w; ++j) c[i * g.ldc + j] = bias ? bias[j] : T(0);
    return;
  }
  thread_local std::vector<T> tail;
  const idx full = b.ldb ? g.w / W * W : g.w;  // the columns read from b.data directly
  const T* tail_panel = full < g.w ? pack_panels(b.data + full, g.k, g.w - full, b.ldb, idx(1), tail).data : nullptr;
  if (block <= 0)
    block = std::clamp<idx>(idx(48 * 1024) / ((g.k + g.w) * idx(sizeof(T))) / kRows * kRows, kRows, 16 * kRows);
  for (idx i0 = 0; i0 < g.m; i0 += block) {
    const idx i1 = std::min(g.m, i0 + block);
    for (idx j = 0; j < g.w; j += W) {
      const idx cols = std::min(W, g.w - j);
      if (j >= full)
        panel_rows<T, Accumulate>(g, a, tail_panel, W, bias, c, i0, i1, j, cols);
      else if (b.ldb)
        panel_rows<T, Accumulate>(g, a, b.data + j, b.ldb, bias, c, i0, i1, j, cols);
      else
        panel_rows<T, Accumulate>(g, a, b.data + (j / W) * g.k * W, W, bias, c, i0, i1, j, cols);
    }
  }
}

}  // namespace seqswap::ops
