// libFuzzer harness: the JSON configs a user writes by hand — a ViT config, halting options, a
// mixer's options (the first byte picks the mixer) and the study driver's --config file —
// through the strict readers.
#include <nlohmann/json.hpp>

#include "fuzz_util.hpp"
#include "seqswap/model/halting_vit.hpp"
#include "seqswap/model/vit.hpp"
#include "seqswap/zoo/registry.hpp"
#include "seqswap/analysis/study_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& names = seqswap::zoo::mixer_names();
  const std::string& mixer = names[data[0] % names.size()];
  const auto j = nlohmann::json::parse(data + 1, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    seqswap::model::VitConfig c;
    from_json(j, c);
  } catch (const seqswap::Error&) {
  }
  try {
    seqswap::halting::HaltingOptions o;
    from_json(j, o);
  } catch (const seqswap::Error&) {
  }
  try {
    seqswap::analysis::study::StudyConfig s = seqswap::analysis::study::preset("micro");
    seqswap::analysis::study::apply_json(s, j, "fuzz");
  } catch (const seqswap::Error&) {
  }
  try {
    seqswap::model::VitConfig c{.width = 16, .heads = 2};
    seqswap::zoo::AnyMixer<float> slot;
    seqswap::zoo::seat_mixer(slot, mixer, c, j);
    (void)slot.param_count();
  } catch (const seqswap::Error&) {
  }
  return 0;
}
