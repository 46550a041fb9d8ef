// Small dense products in registers, for the per-head products of attention
// (50 × 16 × 50 at the teacher's shape): C (m × w) = α · A (m × k) · B (k × w), or C += that.
//
// Why not Eigen's GEMM: at these sizes its blocking, packing and dispatch cost as much as the
// arithmetic. Six such products per head, 128 × 4 heads, 8 layers: Eigen's packing routines
// held 18% of perf's samples of the teacher's forward + backward with them, 10% without
// (docs/performance.md has the side-by-side timings). Here nothing is packed: A is read by
// element through two strides (so Aᵀ costs nothing), B by rows that are contiguous in j, and
// the kernel keeps a 4-row × 2-packet tile of C in registers while it walks k: per step it
// loads two packets of B, broadcasts four values of A and issues eight fused multiply-adds
// (6-row tiles measured no faster on AVX2). Column tails narrower than a packet and row tails
// run the same tile code at smaller sizes; the last w mod packet columns go through a
// zero-padded copy of those columns of B (k × packet, on the stack; scalar loops past
// k = 512). Each entry of C is the sum over p = 0 .. k-1 in that order, in every path:
// deterministic.
//
// Host only (Eigen's packet primitives: SSE / AVX / AVX-512 / NEON, float and double).
#pragma once
#include <Eigen/Core>
#include <cstdint>

namespace seqswap::ops {

struct SmallGemmArgs {
  std::int64_t m = 0, w = 0, k = 0;  // C is m × w, the inner dimension k
  std::int64_t a_row = 0, a_col = 1;  // A[i, p] = a[i · a_row + p · a_col]
  std::int64_t ldb = 0;               // B[p, j] = b[p · ldb + j]
  std::int64_t ldc = 0;               // C[i, j] = c[i · ldc + j]
};

namespace small_gemm_detail {

using idx = std::int64_t;

// One tile: R rows × NP packets of C starting at (i, j).
template <class T, int R, int NP, bool Acc>
inline void tile(const SmallGemmArgs& g, T alpha, const T* a, const T* b, T* c, idx i, idx j) {
  using namespace Eigen::internal;
  using P = typename packet_traits<T>::type;
  constexpr int S = unpacket_traits<P>::size;
  P acc[R][NP];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q] = pset1<P>(T(0));
  const T* ai = a + i * g.a_row;
  const T* bj = b + j;
  for (idx p = 0; p < g.k; ++p) {
    P bv[NP];
    for (int q = 0; q < NP; ++q) bv[q] = ploadu<P>(bj + p * g.ldb + q * S);
    for (int r = 0; r < R; ++r) {
      const P av = pset1<P>(ai[r * g.a_row + p * g.a_col]);
      for (int q = 0; q < NP; ++q) acc[r][q] = pmadd(av, bv[q], acc[r][q]);
    }
  }
  const P al = pset1<P>(alpha);
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < NP; ++q) {
      T* out = c + (i + r) * g.ldc + j + q * S;
      if constexpr (Acc)
        pstoreu(out, pmadd(al, acc[r][q], ploadu<P>(out)));
      else
        pstoreu(out, pmul(al, acc[r][q]));
    }
}

// The last rem < packet columns from j: B's columns copied (zero-padded) into tb (k × S), the
// tile computed in full packets, and only rem values of each row stored.
template <class T, int R, bool Acc>
inline void tail_tile(const SmallGemmArgs& g, T alpha, const T* a, const T* tb, T* c, idx i, idx j, idx rem) {
  using namespace Eigen::internal;
  using P = typename packet_traits<T>::type;
  constexpr int S = unpacket_traits<P>::size;
  P acc[R];
  for (int r = 0; r < R; ++r) acc[r] = pset1<P>(T(0));
  const T* ai = a + i * g.a_row;
  for (idx p = 0; p < g.k; ++p) {
    const P bv = pload<P>(tb + p * S);
    for (int r = 0; r < R; ++r) acc[r] = pmadd(pset1<P>(ai[r * g.a_row + p * g.a_col]), bv, acc[r]);
  }
  alignas(64) T out[S];
  for (int r = 0; r < R; ++r) {
    pstore(out, pmul(pset1<P>(alpha), acc[r]));
    T* cr = c + (i + r) * g.ldc + j;
    for (idx q = 0; q < rem; ++q) cr[q] = Acc ? cr[q] + out[q] : out[q];
  }
}

template <class T, int NP, bool Acc>
inline void rows_of_tiles(const SmallGemmArgs& g, T alpha, const T* a, const T* b, T* c, idx j) {
  idx i = 0;
  for (; i + 4 <= g.m; i += 4) tile<T, 4, NP, Acc>(g, alpha, a, b, c, i, j);
  for (; i < g.m; ++i) tile<T, 1, NP, Acc>(g, alpha, a, b, c, i, j);
}

}  // namespace small_gemm_detail

// C = α A B (Accumulate = false) or C += α A B (true); see SmallGemmArgs for the layouts.
// C must not overlap A or B.
template <bool Accumulate, class T>
void small_gemm(const SmallGemmArgs& g, T alpha, const T* a, const T* b, T* c) {
  using namespace small_gemm_detail;
  using P = typename Eigen::internal::packet_traits<T>::type;
  constexpr idx S = Eigen::internal::unpacket_traits<P>::size;
  idx j = 0;
  for (; j + 2 * S <= g.w; j += 2 * S) rows_of_tiles<T, 2, Accumulate>(g, alpha, a, b, c, j);
  for (; j + S <= g.w; j += S) rows_of_tiles<T, 1, Accumulate>(g, alpha, a, b, c, j);
  const idx rem = g.w - j;
  if (rem == 0) return;
  constexpr idx kTailK = 512;  // inner sizes up to this take the padded tail; longer ones, scalar
  if (g.k <= kTailK) {
    alignas(64) T tb[kTailK * S];
    for (idx p = 0; p < g.k; ++p)
      for (idx q = 0; q < S; ++q) tb[p * S + q] = q < rem ? b[p * g.ldb + j + q] : T(0);
    idx i = 0;
    for (; i + 4 <= g.m; i += 4) tail_tile<T, 4, Accumulate>(g, alpha, a, tb, c, i, j, rem);
    for (; i < g.m; ++i) tail_tile<T, 1, Accumulate>(g, alpha, a, tb, c, i, j, rem);
    return;
  }
  for (; j < g.w; ++j)
    for (idx i = 0; i < g.m; ++i) {
      T s = 0;
      for (idx p = 0; p < g.k; ++p) s += a[i * g.a_row + p * g.a_col] * b[p * g.ldb + j];
      T& out = c[i * g.ldc + j];
      out = Accumulate ? out + alpha * s : alpha * s;
    }
}

// The same contract through Eigen's GEMM (packing, cache blocking): the faster choice once a
// head's operands outgrow L1 (per-head products, one thread: 0.54x Eigen's time at n 50,
// d 16; 0.95x at n 128, d 64; 1.07x at n 197, d 64; 1.8x at n 1024, d 64). A must have a
// unit stride one way (a_col == 1, or a_row == 1 for a transposed A).
template <bool Accumulate, class T>
void blocked_gemm(const SmallGemmArgs& g, T alpha, const T* a, const T* b, T* c) {
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using CMap = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
  Eigen::Map<Mat, 0, Eigen::OuterStride<>> C(c, g.m, g.w, Eigen::OuterStride<>(g.ldc));
  const CMap B(b, g.k, g.w, Eigen::OuterStride<>(g.ldb));
  const auto run = [&](const auto& A) {
    if constexpr (Accumulate)
      C.noalias() += alpha * (A * B);
    else
      C.noalias() = alpha * (A * B);
  };
  eigen_assert(g.a_col == 1 || g.a_row == 1);
  if (g.a_col == 1)
    run(CMap(a, g.m, g.k, Eigen::OuterStride<>(g.a_row)));
  else
    run(CMap(a, g.k, g.m, Eigen::OuterStride<>(g.a_col)).transpose());
}

// dst (cols × rows) = srcᵀ: src[r, c] = src[r · lds + c], dst[c, r] = dst[c · rows + r].
// Square blocks of a packet's width go through registers (Eigen's ptranspose); the edges are
// scalar. (A plain double loop ran at ~1 ns per value: 3% of the teacher's training step.)
template <class T>
void transpose_into(const T* src, std::int64_t rows, std::int64_t cols, std::int64_t lds, T* dst) {
  using namespace Eigen::internal;
  using P = typename packet_traits<T>::type;
  constexpr std::int64_t S = unpacket_traits<P>::size;
  const std::int64_t rb = rows / S * S, cb = cols / S * S;
  for (std::int64_t r0 = 0; r0 < rb; r0 += S)
    for (std::int64_t c0 = 0; c0 < cb; c0 += S) {
      PacketBlock<P, S> blk;
      for (std::int64_t q = 0; q < S; ++q) blk.packet[q] = ploadu<P>(src + (r0 + q) * lds + c0);
      ptranspose(blk);
      for (std::int64_t q = 0; q < S; ++q) pstoreu(dst + (c0 + q) * rows + r0, blk.packet[q]);
    }
  for (std::int64_t c = 0; c < cols; ++c) {  // the edges: rows past rb, and columns past cb
    for (std::int64_t r = c < cb ? rb : 0; r < rows; ++r) dst[c * rows + r] = src[r * lds + c];
  }
}

}  // namespace seqswap::ops
