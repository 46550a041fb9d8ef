// libFuzzer harness: the IDX (gzip or plain) image and label readers on arbitrary bytes.
#include "fuzz_util.hpp"
#include "seqswap/io/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = fuzz::input_file(".idx", data, size);
  try {
    (void)seqswap::io::read_idx_images(path);
  } catch (const seqswap::Error&) {
  }
  try {
    (void)seqswap::io::read_idx_labels(path);
  } catch (const seqswap::Error&) {
  }
  return 0;
}
