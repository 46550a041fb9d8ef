// Building a student from a teacher: the same ViT with the layers of a plan re-seated with a
// new mixer. Every tensor whose name and shape survive is kept (the teacher's weights
// elsewhere, and by default the teacher's output projection "blocks.l.attn.proj.*"; for
// linear attention also its qkv, which then starts from the teacher's Q, K, V).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "seqswap/distill/plan.hpp"
#include "seqswap/mixers/registry.hpp"
#include "seqswap/model/vit_checkpoint.hpp"

namespace seqswap::distill {

template <class T = float>
using StudentModel = model::VitModel<T, mixers::AnyMixer<T>>;

struct ReplaceOptions {
  std::string mixer = "min_gru";
  nlohmann::json mixer_options = nlohmann::json::object();
  bool reuse_projection = true;  // keep the teacher's attn.proj (else re-initialise it)
  bool reuse_qkv = true;         // keep the teacher's attn.qkv where the mixer has one
  std::uint64_t seed = 0;        // initialisation of the new tensors
};

// Re-seats the plan's layers of `student` (a copy of the teacher) and re-lays out its arena.
template <class T>
void replace_layers(StudentModel<T>& student, const model::VitConfig& cfg, const Plan& plan,
                    const ReplaceOptions& o) {
  for (index_t l : plan.layers) {
    check(l >= 0 && l < cfg.depth, "replace_layers: layer ", l, " does not exist (depth ", cfg.depth, ")");
    mixers::seat_mixer(model::mixer_slot(student.net(), std::size_t(l)), o.mixer, cfg, o.mixer_options);
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
  return model::mixer_slot(m.net(), std::size_t(l)).param_count();
}

}  // namespace seqswap::distill
