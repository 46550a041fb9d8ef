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

// Builds the ViT a checkpoint describes and loads its weights (strictly: every tensor present
// with the right dtype and shape, none left over).
template <class T = float, class MixerSlot = DefaultMixer<T>>
VitModel<T, MixerSlot> load_vit(const std::filesystem::path& path, VitConfig* config = nullptr) {
  const auto f = io::read_safetensors(path);
  const VitConfig c = read_vit_config(f);
  VitModel<T, MixerSlot> m(make_vit<T, MixerSlot>(c));
  io::load_params(m, f, /*strict=*/true);
  if (config) *config = c;
  return m;
}

}  // namespace seqswap::model
