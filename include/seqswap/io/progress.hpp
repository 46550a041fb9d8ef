// A one-line progress meter on stderr: items/s and ETA, at most every `interval` seconds.
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

namespace seqswap::io {

class Progress {
 public:
  Progress(std::string label, long total, double interval_s = 5.0, bool quiet = false)
      : label_(std::move(label)), total_(total), interval_(interval_s), quiet_(quiet),
        start_(clock::now()), last_(start_) {}
  // A resumed run: `done` units were finished before this meter started (left out of the rate
  // and the ETA).
  void set_base(long done) { base_ = done; }
  // done: units finished so far; items: e.g. images processed so far (for the rate).
  void update(long done, long items, const std::string& extra = "") {
    const auto now = clock::now();
    if (quiet_ || (std::chrono::duration<double>(now - last_).count() < interval_ && done < total_))
      return;
    last_ = now;
    const double el = elapsed();
    const double rate = el > 0 ? double(items) / el : 0;
    const double eta = done > base_ ? el * double(total_ - done) / double(done - base_) : 0;
    std::fprintf(stderr, "%s %ld/%ld  %.0f img/s  elapsed %s  ETA %s  %s\n", label_.c_str(), done,
                 total_, rate, hms(el).c_str(), hms(eta).c_str(), extra.c_str());
  }
  double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }
  static std::string hms(double s) {
    char buf[32];
    const long t = long(s + 0.5);
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    return buf;
  }

 private:
  using clock = std::chrono::steady_clock;
  std::string label_;
  long total_;
  long base_ = 0;
  double interval_;
  bool quiet_;
  clock::time_point start_, last_;
};

}  // namespace seqswap::io
