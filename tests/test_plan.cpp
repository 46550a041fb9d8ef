// Replacement plans: parsing, determinism per seed, clear errors.
#include "seqswap/distill/plan.hpp"
#include "test_util.hpp"

using namespace seqswap;
using V = std::vector<index_t>;

TEST_CASE("plans pick the promised layers", "[distill][plan]") {
  const std::vector<double> score{0.1, 0.9, 0.5, 0.7, 0.2, 0.95, 0.3, 0.4};  // higher = sparser
  REQUIRE(distill::parse_plan("sparsest:2", 8, score).layers == V{1, 5});
  REQUIRE(distill::parse_plan("densest:3", 8, score).layers == V{0, 4, 6});
  REQUIRE(distill::parse_plan("layers:3,5,3", 8).layers == V{3, 5});
  REQUIRE(distill::parse_plan("single:7", 8).layers == V{7});
  const auto r1 = distill::parse_plan("random:4:1", 8).layers;
  REQUIRE(r1.size() == 4);
  REQUIRE(distill::parse_plan("random:4:1", 8).layers == r1);  // deterministic per seed
  bool differs = false;
  for (int seed = 2; seed < 12; ++seed) differs |= distill::parse_plan("random:4:" + std::to_string(seed), 8).layers != r1;
  REQUIRE(differs);
  REQUIRE(distill::parse_plan("random:8:3", 8).layers == V{0, 1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("bad plans give clear errors", "[distill][plan]") {
  const std::vector<double> score(8, 0.5);
  REQUIRE_THROWS_WITH(distill::parse_plan("sparse:2", 8, score), Catch::Contains("unknown kind 'sparse'"));
  REQUIRE_THROWS_WITH(distill::parse_plan("sparsest:9", 8, score), Catch::Contains("group size in 1..8"));
  REQUIRE_THROWS_WITH(distill::parse_plan("sparsest:2", 8), Catch::Contains("needs a sparsity score"));
  REQUIRE_THROWS_WITH(distill::parse_plan("single:8", 8), Catch::Contains("layer 8 does not exist"));
  REQUIRE_THROWS_WITH(distill::parse_plan("layers:1,x", 8), Catch::Contains("found 'x'"));
  REQUIRE_THROWS_WITH(distill::parse_plan("random:2", 8), Catch::Contains("random:g:seed"));
}
