// libFuzzer harness: the safetensors reader and the ViT checkpoint loader on arbitrary bytes.
#include "fuzz_util.hpp"
#include "seqswap/model/halting_vit.hpp"
#include "seqswap/model/vit_checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = fuzz::input_file(".safetensors", data, size);
  try {
    const auto f = seqswap::io::read_safetensors(path);
    (void)seqswap::model::read_halting_options(f);
    auto m = seqswap::model::load_vit<float>(path);
    (void)m.param_count();
  } catch (const seqswap::Error&) {
  }
  return 0;
}
