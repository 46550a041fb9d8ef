// Tag types for the one softmax attention's sparsity policy. The keep-mask (halting) is
// carried by the token view itself and always honoured; these tags choose what else is
// dropped from each attention row. Sizes (k, τ) are runtime options in
// SoftmaxAttentionOptions, so one tag serves every k and every τ.
//
// A sparse policy selects, per query row, a subset S of the kept keys from the dense softmax
// p, and the row becomes p restricted to S and renormalised (= softmax over S). Backward
// treats S as fixed: the gradient flows through the kept entries of the renormalised softmax
// only (a dropped entry is 0 in the stored row, so the dense softmax backward is already the
// right one).
#pragma once

namespace seqswap::sparse {
struct Dense {};      // every kept key takes part
struct TopK {};       // the top_k largest logits per query (top_k = 0 or ≥ kept keys: all)
struct Threshold {};  // keys whose dense probability is ≥ threshold / N_kept (0: all)
}  // namespace seqswap::sparse
