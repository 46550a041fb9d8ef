// A student by the drivers' mixer names: the teacher's ViT with AnyMixer slots, the plan's
// layers re-seated with the mixer `--mixer NAME` names (zoo/registry.hpp); its checkpoint
// metadata ("student": the mixer of every layer and the mixer options) and loading it back.
#pragma once
#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

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

// What a student checkpoint carries beside the tensors so that it can be rebuilt: metadata
// "student" = {"mixer_per_layer": [name or "attention", ... one per layer], "mixer_options": {...}}.
// Pass the result to io::save_checkpoint's extra metadata.
inline std::map<std::string, std::string> student_metadata(const std::vector<std::string>& mixer_per_layer,
                                                           const nlohmann::json& mixer_options = nlohmann::json::object()) {
  return {{"student", nlohmann::json{{"mixer_per_layer", mixer_per_layer}, {"mixer_options", mixer_options}}.dump()}};
}

struct StudentDescription {
  std::vector<std::string> mixer_per_layer;  // one per layer; distill::kKeepAttention where attention stayed
  nlohmann::json mixer_options = nlohmann::json::object();
};

// The student a checkpoint describes, if it is one: metadata "student" (above), or the form
// replace_layers wrote before it ("mixers": the replaced layers, "mixer": one mixer name or a
// JSON list of one name per layer; its mixer options were not stored, so defaults are assumed).
inline std::optional<StudentDescription> read_student_description(const io::SafetensorsFile& f, index_t depth) {
  const std::string where = "checkpoint " + f.path.string();
  const auto parse = [&](const char* key) {
    try {
      return nlohmann::json::parse(f.metadata.at(key));
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": metadata '", key, "' is not valid JSON (", e.what(), ")");
    }
  };
  StudentDescription d;
  d.mixer_per_layer.assign(std::size_t(depth), distill::kKeepAttention);
  if (f.metadata.count("student")) {
    const auto j = parse("student");
    check(j.is_object() && j.contains("mixer_per_layer") && j["mixer_per_layer"].is_array(), where,
          ": metadata 'student' expected {\"mixer_per_layer\": [...], \"mixer_options\": {...}}, found ", j.dump());
    d.mixer_per_layer.clear();
    for (const auto& m : j["mixer_per_layer"]) {
      check(m.is_string(), where, ": metadata 'student': expected mixer names, found ", m.dump());
      d.mixer_per_layer.push_back(m);
    }
    if (j.contains("mixer_options")) d.mixer_options = j["mixer_options"];
  } else if (f.metadata.count("mixers") && f.metadata.count("mixer")) {
    const auto layers = parse("mixers");
    const std::string mixer = f.metadata.at("mixer");
    const auto per = mixer.rfind('[', 0) == 0 ? parse("mixer") : nlohmann::json();
    check(layers.is_array(), where, ": metadata 'mixers' expected a list of layers, found ", layers.dump());
    if (per.is_array()) {
      d.mixer_per_layer.clear();
      for (const auto& m : per) d.mixer_per_layer.push_back(m.get<std::string>());
    } else {
      for (const auto& l : layers) {
        check(l.is_number_integer() && l.get<index_t>() >= 0 && l.get<index_t>() < depth, where,
              ": metadata 'mixers' names layer ", l.dump(), " of a depth-", depth, " model");
        d.mixer_per_layer[l.get<std::size_t>()] = mixer;
      }
    }
  } else {
    return std::nullopt;
  }
  check(index_t(d.mixer_per_layer.size()) == depth, where, ": the student metadata names ", d.mixer_per_layer.size(),
        " layers, the config's depth is ", depth);
  for (const auto& m : d.mixer_per_layer)
    check(m == distill::kKeepAttention || std::find(mixer_names().begin(), mixer_names().end(), m) != mixer_names().end(),
          where, ": the student metadata names an unknown mixer '", m, "'; known: ", distill::kKeepAttention, ", ",
          detail::join(mixer_names()));
  return d;
}

// Builds the student a checkpoint describes (its config, then every layer's mixer from the
// metadata) and loads its weights strictly. A plain ViT checkpoint loads as a student with
// attention everywhere. `description` (optional) receives what the metadata said.
template <class T = float>
StudentModel<T> load_student(const std::filesystem::path& path, model::VitConfig* config = nullptr,
                             StudentDescription* description = nullptr, bool allow_non_finite = false) {
  const auto f = io::read_safetensors(path);
  const model::VitConfig c = model::read_vit_config(f);
  model::check_tensors_match(f, c);
  const auto d = read_student_description(f, c.depth).value_or(
      StudentDescription{std::vector<std::string>(std::size_t(c.depth), distill::kKeepAttention), {}});
  StudentModel<T> m(model::make_vit<T, AnyMixer<T>>(c));
  for (std::size_t l = 0; l < d.mixer_per_layer.size(); ++l)
    if (d.mixer_per_layer[l] != distill::kKeepAttention) seat_mixer(m.net().mixer(l), d.mixer_per_layer[l], c, d.mixer_options);
  m.relayout(0);
  io::load_params(m, f, /*strict=*/true, allow_non_finite);
  if (config) *config = c;
  if (description) *description = d;
  return m;
}

}  // namespace seqswap::zoo
