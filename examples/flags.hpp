// Flag checks the example drivers share. CLI11's PositiveNumber lets NaN through and prints
// its range as a 309-digit number; these name the flag's expectation plainly.
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <string>

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

}  // namespace flags
