// Checkpoints: a model's parameters as a safetensors file with timm's tensor names, plus a
// metadata entry holding the model's config (JSON) and the format version. Written atomically.
#pragma once
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "seqswap/config.hpp"
#include "seqswap/io/safetensors.hpp"

namespace seqswap::io {

// Saves every parameter of `model` (float32). `config` is stored under metadata "config".
template <class M>
void save_checkpoint(const std::filesystem::path& path, const M& model, const nlohmann::json& config,
                     const std::map<std::string, std::string>& extra = {}) {
  std::vector<TensorData> tensors;
  const auto* p = model.params().data;
  for (const auto& i : model.params_info()) {
    std::vector<float> v(p + i.offset, p + i.offset + i.count);
    tensors.push_back(make_tensor<float>(i.name, {i.shape.begin(), i.shape.end()}, v));
  }
  std::map<std::string, std::string> meta = extra;
  meta["config"] = config.dump();
  meta["format_version"] = std::to_string(checkpoint_format_version);
  meta["seqswap_version"] = version;
  write_safetensors(path, tensors, meta);
}

// The checkpoint's config, after checking its format version.
inline nlohmann::json checkpoint_config(const SafetensorsFile& f) {
  const std::string where = "checkpoint " + f.path.string();
  auto it = f.metadata.find("format_version");
  check(it != f.metadata.end(), where, ": expected metadata 'format_version', found none (not a "
        "seqswap checkpoint?)");
  check(it->second == std::to_string(checkpoint_format_version), where,
        ": expected format_version ", checkpoint_format_version, ", found ", it->second);
  auto c = f.metadata.find("config");
  check(c != f.metadata.end(), where, ": expected metadata 'config', found none");
  try {
    return nlohmann::json::parse(c->second);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": metadata 'config' is not valid JSON (", e.what(), ")");
  }
}

// Copies the tensors of `f` into `model` by name, checking dtype and shape. With `strict`,
// every model parameter must be present and every tensor of the file used. A NaN or Inf value
// is refused (naming the tensor and element) unless `allow_non_finite`.
template <class M>
void load_params(M& model, const SafetensorsFile& f, bool strict = true, bool allow_non_finite = false) {
  const std::string where = "checkpoint " + f.path.string();
  using T = typename M::T;
  std::set<std::string> used;
  auto* p = model.params().data;
  for (const auto& i : model.params_info()) {
    const TensorData* t = f.find(i.name);
    if (!t) {
      check(!strict, where, ": missing tensor '", i.name, "' of shape ",
            detail::shape_string({i.shape.begin(), i.shape.end()}));
      continue;
    }
    check(t->dtype == DType::F32, where, ": tensor '", i.name, "': expected dtype F32, found ",
          dtype_name(t->dtype));
    check(std::vector<std::int64_t>(i.shape.begin(), i.shape.end()) == t->shape, where,
          ": tensor '", i.name, "': expected shape ",
          detail::shape_string({i.shape.begin(), i.shape.end()}), ", found ",
          detail::shape_string(t->shape));
    const auto v = t->to_vector<float>();
    if (!allow_non_finite)
      for (std::size_t k = 0; k < v.size(); ++k)
        check(std::isfinite(v[k]), where, ": tensor '", i.name, "' holds a non-finite value (", v[k], " at element ", k,
              "); a diverged training run? (load it anyway with allow_non_finite / --allow-non-finite)");
    for (std::size_t k = 0; k < i.count; ++k) p[i.offset + k] = T(v[k]);
    used.insert(i.name);
  }
  if (strict)
    for (const auto& t : f.tensors)
      check(used.count(t.name) == 1, where, ": unexpected tensor '", t.name,
            "' (the model has no parameter of that name)");
}

}  // namespace seqswap::io
