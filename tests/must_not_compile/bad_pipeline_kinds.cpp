// Must not compile: a classifier head (tokens -> logits) followed by a token layer.
// Expected message: "Output kind differs from the next layer's Input kind"
#include "seqswap/layers/classifier_head.hpp"
#include "seqswap/layers/linear.hpp"
#include "seqswap/model/sequential.hpp"

int main() {
  using namespace seqswap;
  model::Sequential<layers::ClassifierHead<float>, layers::Linear<float>> bad;
  return static_cast<int>(bad.param_count());
}
