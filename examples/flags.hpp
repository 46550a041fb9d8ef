// Flag checks the example drivers share. CLI11's PositiveNumber lets NaN through and prints
// its range as a 309-digit number; these name the flag's expectation plainly.
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <string>

#include "seqswap/core/error.hpp"

namespace flags {

inline CLI::Validator number_check(const char* name, bool (*ok)(double), const char* expected) {
  return CLI::Validator(
      [ok, expected](std::string& s) -> std::string {
        double v = 0;
        try {
          std::size_t used = 0;
          v = std::stod(s, &used);
          if (used != s.size()) return "expected " + std::string(expected) + ", found '" + s + "'";
        } catch (const std::exception&) {
          return "expected " + std::string(expected) + ", found '" + s + "'";
        }
        return ok(v) ? std::string() : "expected " + std::string(expected) + ", found " + s;
      },
      name);
}
// A finite number > 0 (learning rates, sizes, temperatures).
inline const CLI::Validator FinitePositive =
    number_check("FINITE > 0", [](double v) { return std::isfinite(v) && v > 0; }, "a finite number > 0");
// A finite number >= 0 (weights, limits, step budgets, counts).
inline const CLI::Validator FiniteNonNegative =
    number_check("FINITE >= 0", [](double v) { return std::isfinite(v) && v >= 0; }, "a finite number >= 0");
// Any finite number.
inline const CLI::Validator Finite = number_check("FINITE", [](double v) { return std::isfinite(v); }, "a finite number");

// --device and --tf32, as the drivers with a CUDA build (<driver>_cuda: the same file compiled
// with SEQSWAP_DEVICE_DRIVER and linked with the device ops) take them.
struct DeviceFlags {
  std::string device = "cpu";
  bool tf32 = false;

  // purpose: what the GPU does ("train", "fine-tune", "distil").
  void add(CLI::App& app, const std::string& driver, const std::string& purpose) {
    app.add_option("--device", device, "cpu, or cuda: " + purpose + " on the GPU (the binary " + driver +
                   "_cuda, built when nvcc is found)")->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_flag("--tf32", tf32, "with --device cuda: the linear maps' GEMMs on TF32 tensor cores (fp32 "
                 "accumulate; results differ from fp32 by ~1e-3 relative); default fp32");
  }
  // After parsing: a CPU build refuses --device cuda and names the CUDA binary; --tf32 needs
  // --device cuda; the device path runs on one process.
  void validate(const std::string& driver, int ranks) const {
#if !defined(SEQSWAP_DEVICE_DRIVER)
    seqswap::check(device == "cpu", "--device cuda: this ", driver, " is the CPU build; run ", driver,
                   "_cuda (built beside it when nvcc is found at configure time) on a machine with a CUDA GPU");
#else
    (void)driver;
#endif
    seqswap::check(!tf32 || device == "cuda", "--tf32: expected --device cuda (it sets the GPU's GEMM precision), "
                   "found --device ", device);
    seqswap::check(device == "cpu" || ranks == 1, "--device cuda: one process (data-parallel runs on the device "
                   "are not supported yet), found ", ranks, " ranks");
  }
};

}  // namespace flags
