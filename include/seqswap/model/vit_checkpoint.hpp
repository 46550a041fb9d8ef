// Saving and loading a ViT with its config (io/checkpoint.hpp holds the format).
#pragma once
#include <filesystem>

#include "seqswap/io/checkpoint.hpp"
#include "seqswap/model/model.hpp"
#include "seqswap/model/vit.hpp"

namespace seqswap::model {

template <class T, class MixerSlot = DefaultMixer<T>>
using VitModel = Model<Vit<T, MixerSlot>>;

// The config stored in a checkpoint (validated).
inline VitConfig read_vit_config(const io::SafetensorsFile& f) {
  VitConfig c;
  const auto j = io::checkpoint_config(f);
  try {
    from_json(j, c);
  } catch (const Error& e) {
    fail("checkpoint ", f.path.string(), ": ", e.what());
  }
  return c;
}

// The config must agree with the tensors before anything is sized from it: the patch
// embedding, positions, head and block count a config implies are checked against the file's
// (a corrupt config then fails here, naming the key, instead of allocating a wrong model).
inline void check_tensors_match(const io::SafetensorsFile& f, const VitConfig& c) {
  const std::string where = "checkpoint " + f.path.string();
  auto expect = [&](const std::string& name, std::vector<std::int64_t> shape, const char* keys) {
    const io::TensorData* t = f.find(name);
    check(t != nullptr, where, ": the config (", keys, ") implies a tensor '", name, "', found none");
    check(t->shape == shape, where, ": the config (", keys, ") implies '", name, "' of shape ",
          io::detail::shape_string(shape), ", found ", io::detail::shape_string(t->shape));
  };
  const std::int64_t D = c.width, P = c.patch, C = c.channels;
  expect("patch_embed.proj.weight", {D, C, P, P}, "width, channels, patch");
  expect("pos_embed", {1, std::int64_t(c.tokens()), D}, "image_size, patch, width");
  expect("head.weight", {std::int64_t(c.classes), D}, "classes, width");
  expect("blocks." + std::to_string(c.depth - 1) + ".norm1.weight", {D}, "depth, width");
  check(f.find("blocks." + std::to_string(c.depth) + ".norm1.weight") == nullptr, where, ": the config says depth ",
        c.depth, ", found a block ", c.depth, " in the file");
}

// Builds the ViT a checkpoint describes and loads its weights (strictly: every tensor present
// with the right dtype and shape, none left over).
template <class T = float, class MixerSlot = DefaultMixer<T>>
VitModel<T, MixerSlot> load_vit(const std::filesystem::path& path, VitConfig* config = nullptr,
                                bool allow_non_finite = false) {
  const auto f = io::read_safetensors(path);
  const VitConfig c = read_vit_config(f);
  check_tensors_match(f, c);
  VitModel<T, MixerSlot> m(make_vit<T, MixerSlot>(c));
  io::load_params(m, f, /*strict=*/true, allow_non_finite);
  if (config) *config = c;
  return m;
}

// A checkpoint written elsewhere (a timm model's state dict saved as safetensors: the same tensor
// names and shapes, no seqswap metadata) read as the named architecture (vit_arch). A seqswap
// checkpoint may be read this way too; its stored config then wins and must have the arch's shapes.
template <class T = float, class MixerSlot = DefaultMixer<T>>
VitModel<T, MixerSlot> load_vit_arch(const std::filesystem::path& path, const std::string& arch,
                                     VitConfig* config = nullptr, bool allow_non_finite = false) {
  const auto f = io::read_safetensors(path);
  VitConfig c = vit_arch(arch);
  if (f.metadata.count("config")) {
    const VitConfig stored = read_vit_config(f);
    check(stored.image_size == c.image_size && stored.channels == c.channels && stored.patch == c.patch &&
              stored.width == c.width && stored.depth == c.depth && stored.heads == c.heads &&
              stored.classes == c.classes,
          "checkpoint ", path.string(), ": --arch ", arch, " expects ", nlohmann::json(c).dump(), ", the file's config is ",
          nlohmann::json(stored).dump());
    c = stored;
  }
  check_tensors_match(f, c);
  VitModel<T, MixerSlot> m(make_vit<T, MixerSlot>(c));
  io::load_params(m, f, /*strict=*/true, allow_non_finite);
  if (config) *config = c;
  return m;
}

}  // namespace seqswap::model
