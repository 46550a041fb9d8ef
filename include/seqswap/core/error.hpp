// seqswap::Error: the one exception type library code throws on bad input or state.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace seqswap {

// Thrown with what was expected, what was found, and where (file, tensor, shape).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// fail("safetensors ", path, ": expected ", a, ", found ", b) -> throws seqswap::Error.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

// check(cond, message parts...) throws when cond is false; for user input, never assert.
template <class... Args>
void check(bool cond, Args&&... args) {
  if (!cond) fail(std::forward<Args>(args)...);
}

}  // namespace seqswap
