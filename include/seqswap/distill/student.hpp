// Building a student from a teacher: the same ViT with the layers of a plan re-seated with a
// new mixer. Every tensor whose name and shape survive is kept (the teacher's weights
// elsewhere, and by default the teacher's output projection "blocks.l.attn.proj.*"; for
// linear attention also its qkv, which then starts from the teacher's Q, K, V). Which mixer
// goes in is the caller's: a function seating block l's slot (the drivers' names live in
// zoo/student.hpp, above the library).
#pragma once
#include <string>

#include "seqswap/core/rng.hpp"
#include "seqswap/distill/plan.hpp"
#include "seqswap/model/model.hpp"

namespace seqswap::distill {

struct InheritOptions {
  bool reuse_projection = true;  // keep the teacher's attn.proj (else re-initialise it)
  bool reuse_qkv = true;         // keep the teacher's attn.qkv where the mixer has one
  std::uint64_t seed = 0;        // initialisation of the new tensors
};

// Re-seats the plan's layers of `student` (a copy of the teacher) with seat(slot, layer) and
// re-lays out its arena.
template <class SM, class Seat>
void replace_layers(SM& student, const Plan& plan, Seat&& seat, const InheritOptions& o) {
  const auto depth = static_cast<index_t>(student.net().depth());
  for (index_t l : plan.layers) {
    check(l >= 0 && l < depth, "replace_layers: layer ", l, " does not exist (depth ", depth, ")");
    seat(student.net().mixer(std::size_t(l)), l);
  }
  student.relayout(o.seed);
  if (o.reuse_projection && o.reuse_qkv) return;
  // Re-initialise what the caller does not want to inherit.
  Rng rng(o.seed ^ 0x9e3779b97f4a7c15ULL);
  for (index_t l : plan.layers) {
    const std::string base = "blocks." + std::to_string(l) + ".attn.";
    for (const auto& i : student.params_info()) {
      const bool proj = i.name.rfind(base + "proj.", 0) == 0, qkv = i.name.rfind(base + "qkv.", 0) == 0;
      if ((proj && !o.reuse_projection) || (qkv && !o.reuse_qkv)) student.init_tensor(i, rng);
    }
  }
}

// Parameters of block l's mixer (exact).
template <class M>
std::size_t mixer_params(const M& m, index_t l) {
  std::size_t n = 0;
  m.net().visit_mixer(std::size_t(l), [&](const auto& mixer, std::size_t) { n = mixer.param_count(); });
  return n;
}

}  // namespace seqswap::distill
