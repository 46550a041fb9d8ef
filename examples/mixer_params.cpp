// mixer_params: exact parameter counts of every mixer against the softmax attention it replaces,
// at three ViT widths, as a Markdown table (docs/mixers.md starts with it).
//
//   mixer_params [--out docs/mixer_params.md]
//
// A row is a mixer seated by zoo::seat_mixer with the options shown (none: the defaults);
// its count is the seated slot's param_count(), its ratio that count over softmax attention's
// at the same width and heads.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "seqswap/io/atomic_file.hpp"
#include "seqswap/zoo/registry.hpp"
#include "seqswap/model/vit.hpp"
#include "zoo_instances.hpp"  // with SEQSWAP_ZOO_EXTERN: the mixers' code compiled once for all drivers

using namespace seqswap;

namespace {

struct Width {
  index_t dim, heads;
};
// Widths: 64 (the shipped Fashion-MNIST teacher), 192 (DeiT-Tiny), 384 (DeiT-Small).
const std::vector<Width> kWidths{{64, 4}, {192, 3}, {384, 6}};

struct Row {
  std::string mixer;
  nlohmann::json options;  // null: the defaults
};

std::size_t count(const Row& r, const Width& w) {
  model::VitConfig cfg;
  cfg.width = w.dim;
  cfg.heads = w.heads;
  zoo::AnyMixer<float> slot;
  zoo::seat_mixer(slot, r.mixer, cfg, r.options);
  return slot.param_count();
}

std::string table(const std::vector<Row>& rows) {
  std::string s = "| mixer |";
  std::string rule = "|---|";
  for (const auto& w : kWidths) {
    s += " D=" + std::to_string(w.dim) + " | ratio |";
    rule += "---:|---:|";
  }
  s += "\n" + rule + "\n";
  for (const auto& r : rows) {
    std::string label = "`" + r.mixer + "`";
    if (!r.options.is_null()) label += " `" + r.options.dump() + "`";
    s += "| " + label + " |";
    for (const auto& w : kWidths) {
      const std::size_t n = count(r, w), ref = count({"softmax_attention", nullptr}, w);
      char ratio[32];
      std::snprintf(ratio, sizeof ratio, "%.2fx", double(n) / double(ref));
      s += " " + std::to_string(n) + " | " + ratio + " |";
    }
    s += "\n";
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App app{"Parameter counts of every mixer vs softmax attention, as a Markdown table"};
  std::string out;
  app.add_option("--out", out, "also write the table to this file");
  CLI11_PARSE(app, argc, argv);

  std::vector<Row> rows;
  for (const auto& name : zoo::mixer_names()) rows.push_back({name, nullptr});
  rows.push_back({"linear_attention", {{"feature", "hedgehog"}}});
  rows.push_back({"min_gru", {{"expand", 2}}});
  rows.push_back({"selective_ssm", {{"expand", 2}}});

  std::string header = "Parameters per mixer (heads: ";
  for (std::size_t i = 0; i < kWidths.size(); ++i)
    header += (i ? ", " : "") + std::to_string(kWidths[i].heads) + " at D=" +
              std::to_string(kWidths[i].dim);
  header += "); ratio = params / softmax_attention's.\n\n";
  const std::string text = header + table(rows);
  if (!out.empty()) io::write_file_atomic(out, text);
  std::fputs(text.c_str(), stdout);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mixer_params: error: %s\n", e.what());
  return 1;
}
