// The linear-recurrence scan  h_t = a_t ⊙ h_{t-1} + b_t  (h_{-1} = 0) over ragged token
// batches, channel-wise: a, b, h are (T_total, C) row-major, offsets (B+1).
//
// Forms that must agree (tests/test_scan.cpp): a sequential reference; a chunked parallel
// form — each chunk scanned from zero state while its decay product is recorded, a short
// sequential pass carries the state across chunk ends, then every chunk is fixed up with
// h_t += (Π_{s<=t in chunk} a_s) ⊙ carry_in; and a channel-blocked form — one pass over the
// tokens per (sequence, block of 256 channels), vectorised over the block, which reads a and b
// and writes h once (the triad's three streams; the chunked form makes five). The automatic
// choice takes the channel-blocked form when there are at least two work items per thread,
// and the chunked form (parallel in time) otherwise. All run forward or in reverse (t from
// the end), which is how bidirectional mixers and the backward pass use them.
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
// Scans tokens [k0, k1) of one sequence (positions in scan order) with zero initial state,
// vectorised over channels; `prod` (C) receives Π a over the range.
template <class T>
void scan_range(const T* a, const T* b, T* h, index_t t0, index_t n, index_t k0, index_t k1,
                index_t C, bool reverse, T* prod) {
  std::fill(prod, prod + C, T(1));
  const T* prev = nullptr;
  for (index_t k = k0; k < k1; ++k) {
    const index_t t = t0 + (reverse ? n - 1 - k : k);
    const T* at = a + t * C;
    const T* bt = b + t * C;
    T* ht = h + t * C;
    if (prev) {
      for (index_t c = 0; c < C; ++c) ht[c] = at[c] * prev[c] + bt[c];
    } else {
      for (index_t c = 0; c < C; ++c) ht[c] = bt[c];
    }
    for (index_t c = 0; c < C; ++c) prod[c] *= at[c];
    prev = ht;
  }
}

inline constexpr index_t kScanChannelBlock = 256;

// Channel-blocked form: per (sequence, block of channels) one sequential pass over the tokens.
template <class T>
void scan_channels(const T* a, const T* b, T* h, const index_t* offsets, index_t batch,
                   index_t C, bool reverse) {
  const index_t blocks = (C + kScanChannelBlock - 1) / kScanChannelBlock, items = batch * blocks;
#pragma omp parallel for schedule(static) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    const index_t s = i / blocks, c0 = (i % blocks) * kScanChannelBlock;
    const index_t c1 = std::min(C, c0 + kScanChannelBlock), t0 = offsets[s], n = offsets[s + 1] - t0;
    const T* prev = nullptr;
    for (index_t k = 0; k < n; ++k) {
      const index_t t = t0 + (reverse ? n - 1 - k : k);
      const T* at = a + t * C;
      const T* bt = b + t * C;
      T* ht = h + t * C;
      if (prev) {
        for (index_t c = c0; c < c1; ++c) ht[c] = at[c] * prev[c] + bt[c];
      } else {
        for (index_t c = c0; c < c1; ++c) ht[c] = bt[c];
      }
      prev = ht;
    }
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
  prod.resize(static_cast<std::size_t>(items * C));  // Π a over each chunk
  // Phase 1: every chunk from zero state.
#pragma omp parallel for schedule(static) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    const index_t s = item_seq[i], t0 = offsets[s], n = offsets[s + 1] - t0;
    const index_t k0 = item_chunk[i] * o.chunk, k1 = std::min(n, k0 + o.chunk);
    detail::scan_range(a, b, h, t0, n, k0, k1, C, o.reverse, prod.data() + i * C);
  }
  // Phase 2: carry the state across chunk ends (sequential per sequence, short).
  carry.assign(static_cast<std::size_t>(items * C), T(0));  // state entering chunk i
  for (index_t i = 0; i < items; ++i) {
    if (item_chunk[i] == 0) continue;
    const index_t s = item_seq[i], t0 = offsets[s], n = offsets[s + 1] - t0;
    const index_t last_k = item_chunk[i] * o.chunk - 1;  // last position of the previous chunk
    const index_t t = t0 + (o.reverse ? n - 1 - last_k : last_k);
    const T* prev_carry = carry.data() + (i - 1) * C;
    const T* prev_prod = prod.data() + (i - 1) * C;
    T* cur = carry.data() + i * C;
    for (index_t c = 0; c < C; ++c) cur[c] = h[t * C + c] + prev_prod[c] * prev_carry[c];
  }
  // Phase 3: fix up each chunk with its carried-in state.
#pragma omp parallel for schedule(static) if (items > 1)
  for (index_t i = 0; i < items; ++i) {
    if (item_chunk[i] == 0) continue;
    const index_t s = item_seq[i], t0 = offsets[s], n = offsets[s + 1] - t0;
    const index_t k0 = item_chunk[i] * o.chunk, k1 = std::min(n, k0 + o.chunk);
    T* run = carry.data() + i * C;  // this item's own carry, decayed in place
    for (index_t k = k0; k < k1; ++k) {
      const index_t t = t0 + (o.reverse ? n - 1 - k : k);
      for (index_t c = 0; c < C; ++c) {
        run[c] *= a[t * C + c];
        h[t * C + c] += run[c];
      }
    }
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
  for (index_t s = 0; s < batch; ++s) {
    const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
    for (index_t k = 0; k < n; ++k) {
      const index_t t = t0 + (o.reverse ? n - 1 - k : k);
      const index_t next = o.reverse ? t - 1 : t + 1;
      for (index_t c = 0; c < C; ++c) da[t * C + c] = (k + 1 < n) ? a[next * C + c] : T(0);
    }
  }
  ScanOptions back = o;
  back.reverse = !o.reverse;
  linear_scan(da, dh, db, offsets, batch, C, back);  // db_t = g_t
  // da_t = g_t ⊙ h_{t-1} (h of the previous token in scan order; 0 for the first).
  for (index_t s = 0; s < batch; ++s) {
    const index_t t0 = offsets[s], n = offsets[s + 1] - t0;
    for (index_t k = 0; k < n; ++k) {
      const index_t t = t0 + (o.reverse ? n - 1 - k : k);
      const index_t prev = o.reverse ? t + 1 : t - 1;
      for (index_t c = 0; c < C; ++c) da[t * C + c] = k > 0 ? db[t * C + c] * h[prev * C + c] : T(0);
    }
  }
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
