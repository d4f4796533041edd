#include "launch/progress.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <sstream>

#include "launch/flag_checks.h"

namespace tiergen::cli {

void ProgressOptions::add_flags(CLI::App& cmd) {
  cmd.add_option("--progress", every_seconds,
                 "Print a progress line (tokens, rate, time left) to stderr every SECONDS of a run (default 10; 0: "
                 "never)")
      ->check(number_in(0, false, 1e9, false));
}

ProgressLine::ProgressLine(const ProgressOptions& options, int64_t total)
    : every_(options.every_seconds), total_(total), terminal_(isatty(STDERR_FILENO) == 1) {
  next_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(every_));
}

ProgressLine::~ProgressLine() {
  if (open_) std::cerr << "\n" << std::flush;
}

void ProgressLine::update(const GenerateStats& s) {
  if (every_ <= 0) return;
  const Clock::time_point now = Clock::now();
  if (now < next_) return;
  next_ = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(every_));
  const double seconds = s.prefill_seconds + s.decode_seconds;
  const double rate = seconds > 0 ? static_cast<double>(s.generated_tokens) / seconds : 0.0;
  std::ostringstream line;
  line.setf(std::ios::fixed);
  line.precision(1);
  line << "tiergen: " << s.generated_tokens << " of " << total_ << " tokens ("
       << (total_ > 0 ? 100.0 * static_cast<double>(s.generated_tokens) / static_cast<double>(total_) : 100.0) << "%), "
       << rate << " token/s";
  if (rate > 0 && s.generated_tokens < total_) {
    line.precision(0);
    line << ", " << static_cast<double>(total_ - s.generated_tokens) / rate << " s left";
  }
  if (terminal_) {
    std::cerr << "\r" << line.str() << "\x1b[K" << std::flush;  // rewrite the line in place
    open_ = true;
  } else {
    std::cerr << line.str() << "\n" << std::flush;
  }
}

}  // namespace tiergen::cli
