// Must not compile: softmax attention with a sparsity policy that does not exist.
// Expected message: "unknown sparsity policy"
#include "seqswap/attention/softmax_attention.hpp"

struct NotAPolicy {};

int main() {
  seqswap::attention::SoftmaxAttention<float, NotAPolicy> a;
  return static_cast<int>(a.param_count());
}
