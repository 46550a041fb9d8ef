// The linear-recurrence scan  h_t = a_t ⊙ h_{t-1} + b_t  (h_{-1} = 0) over ragged token
// batches, channel-wise: a, b, h are (T_total, C) row-major, offsets (B+1).
//
// Forms that must agree (tests/test_scan.cpp): a sequential reference; a chunked parallel
// form — every chunk but a sequence's first summarised from zero state (its end state and
// decay product, reading a and b without writing), a short sequential pass carries the state
// across chunk ends, then every chunk is scanned for good from its entering state (five
// streams in all, against the triad's three); and a channel-blocked form — one pass over the
// tokens per (sequence, block of channels as wide as the thread count allows), vectorised over
// the block, which reads a and b and writes h once (the triad's three streams). The automatic
// choice takes the channel-blocked form when there are at least two 256-channel work items per
// thread, and the chunked form (parallel in time) otherwise. All run forward or in reverse
// (t from the end), which is how bidirectional mixers and the backward pass use them.
//
// Backward of h_t = a_t h_{t-1} + b_t, given dh_t (the loss gradient reaching h_t directly):
//   g_t = dh_t + a_{t+1} ⊙ g_{t+1}   (a reverse scan),  db_t = g_t,  da_t = g_t ⊙ h_{t-1}.
#pragma once
#include <algorithm>
#include <vector>

#include "seqswap/backend/host.hpp"
#include "seqswap/ops/scan_options.hpp"

namespace seqswap::ops {

// Sequential reference. a, b (T_total, C) -> h (T_total, C). h may alias b.
template <class T>
void linear_scan_reference(const T* a, const T* b, T* h, const index_t* offsets, index_t batch,
                           index_t C, bool reverse = false) {
  for (index_t s = 0; s < batch; ++s) {
    const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
    for (index_t c = 0; c < C; ++c) {
      T state = 0;
      for (index_t k = 0; k < n; ++k) {
        const index_t t = t0 + (reverse ? n - 1 - k : k);
        state = a[t * C + c] * state + b[t * C + c];
        h[t * C + c] = state;
      }
    }
  }
}

namespace detail {
// Tokens [k0, k1) of one sequence (positions in scan order) from zero initial state, without
// writing h: `state` (C) receives the state after the range and `prod` (C) Π a over it. Reads a
// and b once (two streams).
template <class T>
void scan_range_summary(const T* a, const T* b, index_t t0, index_t n, index_t k0, index_t k1, index_t C,
                        bool reverse, T* state, T* prod) {
  std::fill(state, state + C, T(0));
  std::fill(prod, prod + C, T(1));
  for (index_t k = k0; k < k1; ++k) {
    const index_t t = t0 + (reverse ? n - 1 - k : k);
    const T* at = a + t * C;
    const T* bt = b + t * C;
    for (index_t c = 0; c < C; ++c) {
      state[c] = at[c] * state[c] + bt[c];
      prod[c] *= at[c];
    }
  }
}

// Tokens [k0, k1) of one sequence, channels [c0, c1), entering with state `init` (nullptr =
// zero; init[j] is channel c0 + j): reads a and b, writes h once (the triad's three streams).
// h may alias b.
template <class T>
void scan_range(const T* a, const T* b, T* h, index_t t0, index_t n, index_t k0, index_t k1, index_t C,
                index_t c0, index_t c1, bool reverse, const T* init) {
  const T* prev = nullptr;  // the previous token's row of h, indexed by channel
  for (index_t k = k0; k < k1; ++k) {
    const index_t t = t0 + (reverse ? n - 1 - k : k);
    const T* at = a + t * C;
    const T* bt = b + t * C;
    T* ht = h + t * C;
    if (prev) {
      for (index_t c = c0; c < c1; ++c) ht[c] = at[c] * prev[c] + bt[c];
    } else if (init) {
      for (index_t c = c0; c < c1; ++c) ht[c] = at[c] * init[c - c0] + bt[c];
    } else {
      for (index_t c = c0; c < c1; ++c) ht[c] = bt[c];
    }
    prev = ht;
  }
}

inline constexpr index_t kScanChannelBlock = 256;  // the automatic choice's unit of channel parallelism

// Channels per work item of the channel-blocked form: as wide as the thread count allows.
// Each token's row is a new stretch of memory C floats on, so narrow blocks (256 channels,
// 1 KB of a 12 KB row) start a new page on every token and the hardware prefetcher never gets
// going; a thread's whole share of the row streams at close to the triad's rate (measured on
// Zen 3: 256 channels 52% of the triad, 1024 70%, 1536 = C / 2 threads 83-96%). Splits each
// sequence into the fewest blocks that give every thread work and an even item count.
inline index_t scan_channel_width(index_t batch, index_t C, int threads) {
  if (batch <= 0 || C <= 0) return std::max<index_t>(C, 1);
  index_t per_seq = 1;
  while (per_seq < C && (batch * per_seq < threads || ((batch * per_seq) % threads != 0 && batch * per_seq < 4 * threads)))
    ++per_seq;
  const index_t width = (C + per_seq - 1) / per_seq;
  return std::min(C, (width + 15) / 16 * 16);  // whole cache lines of floats
}

// Channel-blocked form: per (sequence, block of channels) one sequential pass over the tokens.
template <class T>
void scan_channels(const T* a, const T* b, T* h, const index_t* offsets, index_t batch,
                   index_t C, bool reverse) {
  const index_t width = scan_channel_width(batch, C, host::max_threads());
  const index_t blocks = (C + width - 1) / width, items = batch * blocks;
#pragma omp parallel for schedule(dynamic, host::dynamic_chunk(items)) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    const index_t s = i / blocks, c0 = (i % blocks) * width;
    const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
    scan_range(a, b, h, t0, n, index_t(0), n, C, c0, std::min(C, c0 + width), reverse, static_cast<const T*>(nullptr));
  }
}

// Rows [0, T_total) in parallel, each with its sequence and its position in scan order.
template <class F>
void for_each_token(const index_t* offsets, index_t batch, bool reverse, F&& f) {
  const index_t total = offsets[batch];
#pragma omp parallel for schedule(static) if (total > 64)
  for (index_t t = 0; t < total; ++t) {
    const index_t s = static_cast<index_t>(std::upper_bound(offsets, offsets + batch + 1, t) - offsets) - 1;
    const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
    f(t, reverse ? n - 1 - (t - t0) : t - t0, n);
  }
}
}  // namespace detail

// Parallel forms (the reference when o.chunk == 0). h may alias b.
template <class T>
void linear_scan(const T* a, const T* b, T* h, const index_t* offsets, index_t batch, index_t C,
                 ScanOptions o = {}) {
  if (o.chunk <= 0) return linear_scan_reference(a, b, h, offsets, batch, C, o.reverse);
  const index_t blocks = (C + detail::kScanChannelBlock - 1) / detail::kScanChannelBlock;
  if (o.path == ScanPath::channels ||
      (o.path == ScanPath::automatic && batch * blocks >= 2 * host::max_threads()))
    return detail::scan_channels(a, b, h, offsets, batch, C, o.reverse);
  // Work items: (sequence, chunk). Workspaces are per thread and keep their capacity, so a
  // training step after the first allocates nothing here.
  // (References bind the calling thread's workspaces: inside the OpenMP regions below, a
  // thread_local name would resolve to each worker's own, empty, copy.)
  thread_local std::vector<index_t> tl_seq, tl_chunk;
  thread_local std::vector<T> tl_prod, tl_carry;
  std::vector<index_t>& item_seq = tl_seq;
  std::vector<index_t>& item_chunk = tl_chunk;
  std::vector<T>& prod = tl_prod;
  std::vector<T>& carry = tl_carry;
  item_seq.clear();
  item_chunk.clear();
  for (index_t s = 0; s < batch; ++s) {
    const index_t n = offsets[s + 1] - offsets[s];
    for (index_t k = 0; k * o.chunk < n; ++k) {
      item_seq.push_back(s);
      item_chunk.push_back(k);
    }
  }
  const auto items = static_cast<index_t>(item_seq.size());
  prod.resize(static_cast<std::size_t>(items * C));   // Π a over each chunk; then the state entering the next
  carry.resize(static_cast<std::size_t>(items * C));  // each chunk's end state from a zero start
  // Phase 1: a sequence's first chunk is scanned for good (the state entering it is zero); every
  // other chunk is only summarised (end state from zero, Π a): reads a and b, writes nothing.
#pragma omp parallel for schedule(static) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    const index_t s = item_seq[i], t0 = offsets[s], n = offsets[s + 1] - t0;
    const index_t k0 = item_chunk[i] * o.chunk, k1 = std::min(n, k0 + o.chunk);
    if (item_chunk[i] == 0)
      detail::scan_range(a, b, h, t0, n, k0, k1, C, index_t(0), C, o.reverse, static_cast<const T*>(nullptr));
    else
      detail::scan_range_summary(a, b, t0, n, k0, k1, C, o.reverse, carry.data() + i * C, prod.data() + i * C);
  }
  // Phase 2 (sequential per sequence, short): the state entering chunk i, written over the
  // previous chunk's Π a once that is used: entering(1) = h at the end of chunk 0;
  // entering(k) = end_from_zero(k-1) + Π a(k-1) ⊙ entering(k-1).
  for (index_t i = 0; i < items; ++i) {
    if (item_chunk[i] == 0) continue;
    T* in = prod.data() + (i - 1) * C;
    if (item_chunk[i] == 1) {
      const index_t s = item_seq[i], t0 = offsets[s], n = offsets[s + 1] - t0, last_k = o.chunk - 1;
      const T* h_end = h + (t0 + (o.reverse ? n - 1 - last_k : last_k)) * C;
      std::copy(h_end, h_end + C, in);
    } else {
      const T* end0 = carry.data() + (i - 1) * C;
      const T* prev_in = prod.data() + (i - 2) * C;
      for (index_t c = 0; c < C; ++c) in[c] = end0[c] + in[c] * prev_in[c];
    }
  }
  // Phase 3: every chunk after the first scanned for good from its entering state.
#pragma omp parallel for schedule(static) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    if (item_chunk[i] == 0) continue;
    const index_t s = item_seq[i], t0 = offsets[s], n = offsets[s + 1] - t0;
    const index_t k0 = item_chunk[i] * o.chunk, k1 = std::min(n, k0 + o.chunk);
    detail::scan_range(a, b, h, t0, n, k0, k1, C, index_t(0), C, o.reverse,
                       static_cast<const T*>(prod.data() + (i - 1) * C));
  }
}

// Backward. a, h (forward values), dh (T_total, C) -> da, db (T_total, C) ASSIGNED.
// `o.reverse` must be the direction the forward scan ran in.
template <class T>
void linear_scan_backward(const T* a, const T* h, const T* dh, T* da, T* db,
                          const index_t* offsets, index_t batch, index_t C, ScanOptions o = {}) {
  // g_t = dh_t + a_{next(t)} g_{next(t)}: a scan in the opposite direction whose decay at
  // token t is a_{next(t)} (next in forward scan order; 0 past the sequence end). da holds
  // those decays until it is overwritten below.
  detail::for_each_token(offsets, batch, o.reverse, [&](index_t t, index_t k, index_t n) {
    const index_t next = o.reverse ? t - 1 : t + 1;
    for (index_t c = 0; c < C; ++c) da[t * C + c] = (k + 1 < n) ? a[next * C + c] : T(0);
  });
  ScanOptions back = o;
  back.reverse = !o.reverse;
  linear_scan(da, dh, db, offsets, batch, C, back);  // db_t = g_t
  // da_t = g_t ⊙ h_{t-1} (h of the previous token in scan order; 0 for the first).
  detail::for_each_token(offsets, batch, o.reverse, [&](index_t t, index_t k, index_t) {
    const index_t prev = o.reverse ? t + 1 : t - 1;
    for (index_t c = 0; c < C; ++c) da[t * C + c] = k > 0 ? db[t * C + c] * h[prev * C + c] : T(0);
  });
}

// Backend dispatch: the scanning mixers call the scans with their backend tag. backend::Host
// runs the forms above; the backend::Cuda overloads (ops/cuda/scan.cuh, CUDA translation units
// only) run the device kernels on device pointers, offsets included (o.chunk and o.path tune
// the host forms and are ignored there; o.reverse holds on both).
template <class T>
void linear_scan(backend::Host, const T* a, const T* b, T* h, const index_t* offsets, index_t batch, index_t C,
                 ScanOptions o = {}) {
  linear_scan(a, b, h, offsets, batch, C, o);
}
template <class T>
void linear_scan_backward(backend::Host, const T* a, const T* h, const T* dh, T* da, T* db, const index_t* offsets,
                          index_t batch, index_t C, ScanOptions o = {}) {
  linear_scan_backward(a, h, dh, da, db, offsets, batch, C, o);
}

}  // namespace seqswap::ops
