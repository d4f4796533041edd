// The progress line of a long run, on stderr: "tiergen: 2048 of 8192 tokens (25%), 312.5 token/s,
// 20 s left". Overnight jobs print it every --progress seconds (a terminal sees one line rewritten,
// a log file one line each time); short runs finish before the first and print nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>

#include <CLI/CLI.hpp>

#include "runtime/generate/request.h"

namespace tiergen::cli {

struct ProgressOptions {
  double every_seconds = 10;  // 0: never
  void add_flags(CLI::App& cmd);
};

class ProgressLine {
 public:
  // `total`: the most tokens the run generates (a sequence that stops early makes it fewer).
  ProgressLine(const ProgressOptions& options, int64_t total);
  ~ProgressLine();  // ends a rewritten line
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // After each step (Generator::on_step): prints when `every_seconds` have passed since the last.
  void update(const GenerateStats& stats);

 private:
  using Clock = std::chrono::steady_clock;
  double every_;
  int64_t total_;
  bool terminal_;
  bool open_ = false;  // a rewritten line is on the terminal
  Clock::time_point next_;
};

}  // namespace tiergen::cli
