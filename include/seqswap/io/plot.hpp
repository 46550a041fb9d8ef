// Plots through gnuplot (Debian's gnuplot-nox): data files and a script are written next to
// the plots, so a missing gnuplot costs only the PNGs and anyone can rerun the script.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>

#include "seqswap/io/atomic_file.hpp"

namespace seqswap::io {

// A path as one single-quoted shell word.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A number for a gnuplot data file (NaN is read as a missing point).
inline std::string plot_number(double x) {
  if (!std::isfinite(x)) return "NaN";
  std::ostringstream os;
  os.precision(8);
  os << x;
  return os.str();
}

// Writes `script` to dir/name and runs gnuplot in dir. Returns false (after a warning naming
// `who`) when gnuplot is missing or fails; the data and the script stay either way.
inline bool run_gnuplot(const std::filesystem::path& dir, const std::string& name, const std::string& script,
                        const std::string& who) {
  write_file_atomic(dir / name, script);
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::fprintf(stderr, "%s: warning: gnuplot not found (Debian package gnuplot-nox); the plot data and %s "
                         "are in %s\n", who.c_str(), name.c_str(), dir.c_str());
    return false;
  }
  const std::string cmd = "cd " + shell_quote(dir.string()) + " && gnuplot " + shell_quote(name);
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "%s: warning: gnuplot failed (%s); the plot data and %s are kept\n", who.c_str(),
                 cmd.c_str(), name.c_str());
    return false;
  }
  return true;
}

}  // namespace seqswap::io
