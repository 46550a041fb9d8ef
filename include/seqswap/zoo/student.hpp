// A student by the drivers' mixer names: the teacher's ViT with AnyMixer slots, the plan's
// layers re-seated with the mixer `--mixer NAME` names (zoo/registry.hpp).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "seqswap/distill/planner.hpp"
#include "seqswap/distill/student.hpp"
#include "seqswap/model/vit_checkpoint.hpp"
#include "seqswap/zoo/registry.hpp"

namespace seqswap::zoo {

template <class T = float>
using StudentModel = model::VitModel<T, AnyMixer<T>>;

struct ReplaceOptions {
  std::string mixer = "min_gru";
  nlohmann::json mixer_options = nlohmann::json::object();
  bool reuse_projection = true;  // keep the teacher's attn.proj (else re-initialise it)
  bool reuse_qkv = true;         // keep the teacher's attn.qkv where the mixer has one
  std::uint64_t seed = 0;        // initialisation of the new tensors
};

template <class T>
void replace_layers(StudentModel<T>& student, const model::VitConfig& cfg, const distill::Plan& plan,
                    const ReplaceOptions& o) {
  distill::replace_layers(
      student, plan, [&](AnyMixer<T>& slot, index_t) { seat_mixer(slot, o.mixer, cfg, o.mixer_options); },
      {.reuse_projection = o.reuse_projection, .reuse_qkv = o.reuse_qkv, .seed = o.seed});
}

// A mixer per layer (a planner's plan, distill::read_plan_json): layers whose entry is
// distill::kKeepAttention keep their attention; the others are re-seated with their own mixer
// (o.mixer is ignored). Returns the plan of the replaced layers.
template <class T>
distill::Plan replace_layers(StudentModel<T>& student, const model::VitConfig& cfg,
                             const std::vector<std::string>& mixer_per_layer, const ReplaceOptions& o,
                             const std::string& spec = "per-layer") {
  check(index_t(mixer_per_layer.size()) == cfg.depth, "replace_layers: expected a mixer (or '",
        distill::kKeepAttention, "') for each of the ", cfg.depth, " layers, found ", mixer_per_layer.size());
  distill::Plan plan{spec, {}};
  for (std::size_t l = 0; l < mixer_per_layer.size(); ++l)
    if (mixer_per_layer[l] != distill::kKeepAttention) plan.layers.push_back(index_t(l));
  distill::replace_layers(
      student, plan,
      [&](AnyMixer<T>& slot, index_t l) { seat_mixer(slot, mixer_per_layer[std::size_t(l)], cfg, o.mixer_options); },
      {.reuse_projection = o.reuse_projection, .reuse_qkv = o.reuse_qkv, .seed = o.seed});
  return plan;
}

}  // namespace seqswap::zoo
