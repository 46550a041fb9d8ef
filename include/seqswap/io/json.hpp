// Reading typed values out of JSON objects (configs, checkpoint metadata, options) strictly:
// a missing key, a wrong type, a fraction or an out-of-range number for an integer field are
// errors naming the key and what was found — never a silent truncation (depth 8.9 -> 8) or an
// undefined conversion (1e40 -> long).
#pragma once
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "seqswap/core/error.hpp"

namespace seqswap::io {

// The value of j[key] as V. `what` names the object in messages ("ViT config").
template <class V>
V json_value(const nlohmann::json& j, const std::string& key, const std::string& what) {
  check(j.is_object(), what, ": expected a JSON object, found ", j.dump());
  check(j.contains(key), what, ": missing key '", key, "' in ", j.dump());
  const auto& x = j.at(key);
  if constexpr (std::is_same_v<V, bool>) {
    check(x.is_boolean(), what, ": key '", key, "' must be true or false, found ", x.dump());
    return x.get<bool>();
  } else if constexpr (std::is_integral_v<V>) {
    check(x.is_number(), what, ": key '", key, "' must be an integer, found ", x.dump());
    if (x.is_number_integer() || x.is_number_unsigned()) {
      const bool fits = x.is_number_unsigned()
                            ? x.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<V>::max())
                            : (x.get<std::int64_t>() >= static_cast<std::int64_t>(std::numeric_limits<V>::min()) &&
                               (std::is_unsigned_v<V> ? x.get<std::int64_t>() >= 0 : true) &&
                               static_cast<std::uint64_t>(std::max<std::int64_t>(x.get<std::int64_t>(), 0)) <=
                                   static_cast<std::uint64_t>(std::numeric_limits<V>::max()));
      check(fits, what, ": key '", key, "' is out of range, found ", x.dump());
      return x.is_number_unsigned() ? static_cast<V>(x.get<std::uint64_t>()) : static_cast<V>(x.get<std::int64_t>());
    }
    const double d = x.get<double>();
    check(std::isfinite(d) && d == std::floor(d), what, ": key '", key, "' must be a whole number, found ", x.dump());
    check(d >= double(std::numeric_limits<V>::min()) && d <= double(std::numeric_limits<V>::max()), what, ": key '",
          key, "' is out of range, found ", x.dump());
    return static_cast<V>(d);
  } else if constexpr (std::is_floating_point_v<V>) {
    check(x.is_number(), what, ": key '", key, "' must be a number, found ", x.dump());
    return x.get<V>();
  } else {
    try {
      return x.get<V>();
    } catch (const nlohmann::json::exception&) {
      fail(what, ": key '", key, "' has the wrong type: ", x.dump());
    }
  }
}

// j[key] into v when present (else v keeps its value).
template <class V>
void json_read_optional(const nlohmann::json& j, const std::string& key, V& v, const std::string& what) {
  if (j.is_object() && j.contains(key)) v = json_value<V>(j, key, what);
}

}  // namespace seqswap::io
