// The mixers the drivers know by name (`--mixer NAME`), the Slot type that holds any of them,
// and how a name plus JSON options becomes a seated mixer for a given ViT config.
//
//   name                options (JSON object; all optional)
//   softmax_attention   heads
//   linear_attention    heads, feature: elu1 | relu | hedgehog
//   min_gru             expand, bidirectional, combine: sum | concat, order, cls
//   multi_head_lstm     heads, bidirectional, order, cls
//   multi_head_gru      heads, bidirectional, order, cls
//   diagonal_ssm        state, bidirectional, order, cls
//   selective_ssm       expand, state, conv, bidirectional, order, cls
//   conv_mixer          kernel                      (depthwise k×k over the patch grid)
//   conv_mixer_1d       kernel, order, cls          (depthwise 1D along the scan order)
//   retention           heads, decay_offset, order, cls   (bidirectional RetNet retention)
// `heads` defaults to the ViT's; `order` is raster | reversed | column_major | snake and `cls`
// head | middle | tail (mixers/scan_order.hpp).
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "seqswap/attention/softmax_attention.hpp"
#include "seqswap/mixers/conv.hpp"
#include "seqswap/mixers/linear_attention.hpp"
#include "seqswap/mixers/min_gru.hpp"
#include "seqswap/mixers/retention.hpp"
#include "seqswap/mixers/rnn.hpp"
#include "seqswap/mixers/ssm_diag.hpp"
#include "seqswap/mixers/ssm_selective.hpp"
#include "seqswap/io/json.hpp"
#include "seqswap/model/slot.hpp"
#include "seqswap/model/vit.hpp"

// The name registry sits above the library (core <- ... <- model <- train/distill <- zoo):
// mixers know no names of other mixers and no pipeline; the drivers' flags come here.
namespace seqswap::zoo {

using namespace seqswap::mixers;

template <class T>
using AnyMixer =
    model::Slot<attention::SoftmaxAttention<T>, LinearAttention<T, feature::Elu1>,
                LinearAttention<T, feature::Relu>, LinearAttention<T, feature::Hedgehog>,
                MinGru<T>, MultiHeadLstm<T>, MultiHeadGru<T>, DiagonalSsm<T>, SelectiveSsm<T>,
                ConvMixer<T, conv::Grid2d>, ConvMixer<T, conv::Seq1d>, Retention<T>>;

inline const std::vector<std::string>& mixer_names() {
  static const std::vector<std::string> names{
      "softmax_attention", "linear_attention", "min_gru",       "multi_head_lstm", "multi_head_gru",
      "diagonal_ssm",      "selective_ssm",    "conv_mixer",    "conv_mixer_1d",   "retention"};
  return names;
}

namespace detail {
inline std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}
// Reads typed options out of a JSON object, rejecting keys the mixer does not know.
class OptionReader {
 public:
  OptionReader(const std::string& mixer, const nlohmann::json& j) : mixer_(mixer), j_(j) {
    check(j.is_object() || j.is_null(), "mixer '", mixer, "': expected options as a JSON object, found ", j.dump());
  }
  // Strict: a fraction or an out-of-range number for an integer option is an error naming it.
  template <class V>
  V get(const std::string& key, V fallback) {
    known_.push_back(key);
    if (j_.is_null() || !j_.contains(key)) return fallback;
    const V v = io::json_value<V>(j_, key, "mixer '" + mixer_ + "' option");
    if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>)  // sizes: no overflow downstream
      check(v >= 0 && v <= V(1) << 20, "mixer '", mixer_, "': option '", key, "' expects 0..1048576, found ", v);
    return v;
  }
  order::ScanOrder scan_order() {
    order::ScanOrder o;
    o.grid = order::grid_from_name(get<std::string>("order", "raster"));
    o.cls = order::cls_from_name(get<std::string>("cls", "head"));
    return o;
  }
  void finish() const {
    if (j_.is_null()) return;
    for (const auto& [k, v] : j_.items())
      check(std::find(known_.begin(), known_.end(), k) != known_.end(), "mixer '", mixer_,
            "': unknown option '", k, "'; known: ", join(known_));
  }

 private:
  std::string mixer_;
  const nlohmann::json& j_;
  std::vector<std::string> known_;
};
}  // namespace detail

// Seats `slot` with the mixer `name` sized for `cfg`. Its parameters are named "attn.*" like
// the attention it replaces (so the output projection "attn.proj" is kept by relayout).
template <class T>
void seat_mixer(AnyMixer<T>& slot, const std::string& name, const model::VitConfig& cfg,
                const nlohmann::json& options = {}) {
  detail::OptionReader r(name, options);
  const index_t D = cfg.width;
  if (name == "softmax_attention") {
    const attention::SoftmaxAttentionOptions o{
        .dim = D, .heads = r.get<index_t>("heads", cfg.heads), .qkv_bias = true, .name = "attn"};
    r.finish();
    slot.template emplace<attention::SoftmaxAttention<T>>(o);
  } else if (name == "linear_attention") {
    const LinearAttentionOptions o{.dim = D, .heads = r.get<index_t>("heads", cfg.heads), .name = "attn"};
    const auto f = r.get<std::string>("feature", "elu1");
    r.finish();
    if (f == "elu1") slot.template emplace<LinearAttention<T, feature::Elu1>>(o);
    else if (f == "relu") slot.template emplace<LinearAttention<T, feature::Relu>>(o);
    else if (f == "hedgehog") slot.template emplace<LinearAttention<T, feature::Hedgehog>>(o);
    else fail("mixer 'linear_attention': unknown feature '", f, "'; known: elu1, relu, hedgehog");
  } else if (name == "min_gru") {
    MinGruOptions o{.dim = D, .expand = r.get<index_t>("expand", 1),
                    .bidirectional = r.get<bool>("bidirectional", true)};
    const auto comb = r.get<std::string>("combine", "sum");
    check(comb == "sum" || comb == "concat", "mixer 'min_gru': unknown combine '", comb, "'; known: sum, concat");
    o.combine = comb == "sum" ? MinGruOptions::Combine::sum : MinGruOptions::Combine::concat;
    o.order = r.scan_order();
    r.finish();
    slot.template emplace<MinGru<T>>(o);
  } else if (name == "multi_head_lstm" || name == "multi_head_gru") {
    RnnOptions o{.dim = D, .heads = r.get<index_t>("heads", cfg.heads),
                 .bidirectional = r.get<bool>("bidirectional", true)};
    o.order = r.scan_order();
    r.finish();
    if (name == "multi_head_lstm") slot.template emplace<MultiHeadLstm<T>>(o);
    else slot.template emplace<MultiHeadGru<T>>(o);
  } else if (name == "diagonal_ssm") {
    DiagonalSsmOptions o{.dim = D, .state = r.get<index_t>("state", 16),
                         .bidirectional = r.get<bool>("bidirectional", true)};
    o.order = r.scan_order();
    r.finish();
    slot.template emplace<DiagonalSsm<T>>(o);
  } else if (name == "selective_ssm") {
    SelectiveSsmOptions o{.dim = D, .expand = r.get<index_t>("expand", 1), .state = r.get<index_t>("state", 16),
                          .conv = r.get<index_t>("conv", 4)};
    o.bidirectional = r.get<bool>("bidirectional", true);
    o.order = r.scan_order();
    r.finish();
    slot.template emplace<SelectiveSsm<T>>(o);
  } else if (name == "conv_mixer") {
    const ConvMixerOptions o{.dim = D, .kernel = r.get<index_t>("kernel", 3)};
    r.finish();
    slot.template emplace<ConvMixer<T, conv::Grid2d>>(o);
  } else if (name == "conv_mixer_1d") {
    ConvMixerOptions o{.dim = D, .kernel = r.get<index_t>("kernel", 3)};
    o.order = r.scan_order();
    r.finish();
    slot.template emplace<ConvMixer<T, conv::Seq1d>>(o);
  } else if (name == "retention") {
    RetentionOptions o{.dim = D, .heads = r.get<index_t>("heads", cfg.heads),
                       .decay_offset = r.get<double>("decay_offset", 5.0)};
    o.order = r.scan_order();
    r.finish();
    slot.template emplace<Retention<T>>(o);
  } else {
    fail("unknown mixer '", name, "'; known: ", detail::join(mixer_names()));
  }
}

}  // namespace seqswap::zoo
