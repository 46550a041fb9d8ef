// What the fuzz harnesses share: the input as a file (the readers take paths; /dev/shm keeps it
// in memory), and the rule: a seqswap::Error is the promised answer to bad input, anything
// else escaping (std::bad_alloc, a JSON library exception, std::out_of_range, a crash, a
// sanitizer report) is a finding.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace fuzz {

inline std::filesystem::path input_file(const char* suffix, const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path dir =
      std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
  const auto p = dir / ("seqswap_fuzz_" + std::to_string(::getpid()) + suffix);
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return p;
}

}  // namespace fuzz
