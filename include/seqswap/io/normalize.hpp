// Pixel normalisation (per-channel mean and std of value/255) with its JSON form: what a
// dataset and a checkpoint say about how to feed images to a model.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/core/error.hpp"
#include "seqswap/core/tokens.hpp"

namespace seqswap::io {

// Pixel normalisation, x = (value / 255 - mean[c]) / std[c]: one value per channel, or one
// value for every channel. The default is Fashion-MNIST's training-set statistics (the shipped
// teachers were trained with it); checkpoints store theirs (io/checkpoint.hpp, "input").
struct Normalize {
  std::vector<double> mean{0.2860}, std{0.3530};

  static Normalize fashion_mnist() { return {}; }
  // ImageNet's (timm's IMAGENET_DEFAULT_MEAN / _STD, which DeiT uses).
  static Normalize imagenet() { return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}}; }

  double mean_of(index_t c) const { return mean.size() == 1 ? mean[0] : mean.at(std::size_t(c)); }
  double std_of(index_t c) const { return std.size() == 1 ? std[0] : std.at(std::size_t(c)); }
  // Refuses what would silently mis-normalise: a count that is neither 1 nor `channels`,
  // a non-positive or non-finite std.
  void check_for(index_t channels, const std::string& where) const {
    for (const auto* v : {&mean, &std})
      check(v->size() == 1 || index_t(v->size()) == channels, where, ": expected a normalisation with 1 or ",
            channels, " values per statistic (one per channel), found ", v->size());
    for (double s : std)
      check(std::isfinite(s) && s > 0, where, ": expected a positive normalisation std, found ", s);
    for (double m : mean) check(std::isfinite(m), where, ": expected a finite normalisation mean, found ", m);
  }
  bool operator==(const Normalize&) const = default;
};

inline void to_json(nlohmann::json& j, const Normalize& n) { j = nlohmann::json{{"mean", n.mean}, {"std", n.std}}; }
inline void from_json(const nlohmann::json& j, Normalize& n) {
  check(j.is_object() && j.contains("mean") && j.contains("std"),
        "normalisation: expected an object with \"mean\" and \"std\" arrays, found ", j.dump());
  for (auto [key, dst] : {std::pair{"mean", &n.mean}, std::pair{"std", &n.std}}) {
    const auto& v = j.at(key);
    check(v.is_array() && !v.empty(), "normalisation: expected \"", key, "\" to be a non-empty array of numbers, found ",
          v.dump());
    dst->clear();
    for (const auto& x : v) {
      check(x.is_number(), "normalisation: expected numbers in \"", key, "\", found ", x.dump());
      dst->push_back(x.get<double>());
    }
  }
}

// "fashion-mnist", "imagenet", or explicit values "M1,M2,M3/S1,S2,S3" (one or C values each).
inline Normalize parse_normalize(const std::string& s) {
  if (s == "fashion-mnist") return Normalize::fashion_mnist();
  if (s == "imagenet") return Normalize::imagenet();
  const auto slash = s.find('/');
  check(slash != std::string::npos, "normalisation '", s,
        "': expected fashion-mnist, imagenet or MEAN[,MEAN...]/STD[,STD...]");
  auto numbers = [&](const std::string& part) {
    std::vector<double> v;
    std::size_t pos = 0;
    while (pos <= part.size()) {
      const auto comma = part.find(',', pos);
      const std::string item = part.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      std::size_t used = 0;
      double x = 0;
      try {
        x = std::stod(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      check(!item.empty() && used == item.size(), "normalisation '", s, "': expected a number, found '", item, "'");
      v.push_back(x);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    return v;
  };
  Normalize n{numbers(s.substr(0, slash)), numbers(s.substr(slash + 1))};
  check(n.mean.size() == n.std.size() || n.mean.size() == 1 || n.std.size() == 1, "normalisation '", s,
        "': expected as many means as stds (or one of either), found ", n.mean.size(), " and ", n.std.size());
  return n;
}

}  // namespace seqswap::io
