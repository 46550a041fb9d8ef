// Tag types for the one softmax attention's sparsity policy. The keep-mask (halting) is
// carried by the token view itself and always honoured; these tags choose what else is
// dropped from each attention row.
#pragma once

namespace seqswap::sparse {
struct Dense {};  // every kept key takes part
}  // namespace seqswap::sparse
