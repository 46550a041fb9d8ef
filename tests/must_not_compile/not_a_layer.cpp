// Must not compile: a type that is not a layer inside a pipeline.
// Expected message: "every element must satisfy seqswap::Layer"
#include "seqswap/layers/linear.hpp"
#include "seqswap/model/sequential.hpp"

struct NotALayer {
  int x = 0;
};

int main() {
  using namespace seqswap;
  model::Sequential<layers::Linear<float>, NotALayer> bad;
  return static_cast<int>(bad.param_count());
}
