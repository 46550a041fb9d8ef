// Must not compile: mixed scalar types inside one pipeline.
// Expected message: "every layer must use the same scalar type"
#include "seqswap/layers/linear.hpp"
#include "seqswap/model/sequential.hpp"

int main() {
  using namespace seqswap;
  model::Sequential<layers::Linear<float>, layers::Linear<double>> bad;
  return static_cast<int>(bad.param_count());
}
