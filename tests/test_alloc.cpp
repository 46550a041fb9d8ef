// No allocation inside a training step after the first: the arena, the contexts' Buffers and
// the layouts' inline offsets are sized once and reused (docs/performance.md). Counts every
// operator new of this process between the second and the fourth step.
#include <atomic>
#include <cstdlib>
#include <new>

#include "seqswap/zoo/student.hpp"
#include "seqswap/train/loop.hpp"
#include "test_util.hpp"

namespace {
std::atomic<long> g_allocations{0};
}
void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace seqswap;

namespace {
template <class M>
long allocations_in_steps(M& m, index_t batch, int steps = 3) {
  train::AdamW<float> opt({}, m.params_info(), m.param_count());
  const index_t numel = 28 * 28;
  std::vector<float> x(static_cast<std::size_t>(batch * numel), 0.1f), scratch;
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 13) * 0.07f;
  std::vector<std::int32_t> labels(static_cast<std::size_t>(batch), 3);
  train::train_step(m, opt, x.data(), labels.data(), batch, numel, 1e-4, {}, scratch);  // sizes everything
  const long before = g_allocations;
  for (int s = 0; s < steps; ++s) train::train_step(m, opt, x.data(), labels.data(), batch, numel, 1e-4, {}, scratch);
  return g_allocations - before;
}
}  // namespace

TEST_CASE("the teacher's training step allocates nothing after the first", "[alloc]") {
  model::VitConfig cfg;  // the shipped teacher's architecture
  model::Model m(model::make_vit<float>(cfg));
  m.init(0);
  REQUIRE(allocations_in_steps(m, 32) == 0);
}

TEST_CASE("students' training steps allocate nothing after the first", "[alloc]") {
  model::VitConfig cfg;
  cfg.depth = 2;
  for (const auto& name : zoo::mixer_names()) {
    zoo::StudentModel<float> s(model::make_vit<float, zoo::AnyMixer<float>>(cfg));
    s.init(0);
    zoo::replace_layers(s, cfg, distill::parse_plan("layers:1", cfg.depth), {.mixer = name});
    INFO(name);
    CHECK(allocations_in_steps(s, 8) == 0);
  }
}
