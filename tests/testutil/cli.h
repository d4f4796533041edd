// Runs the `tiergen` executable as a user would, for the CLI tests: arguments as shell words, stdin
// from a string, and what the run cost (wall time, peak resident memory).
#pragma once

#include <string>

namespace tiergen::testing {

struct CliRun {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
  double seconds = 0;   // wall time
  long max_rss_kb = 0;  // peak resident set of the process
};

// `args` are shell words, already quoted; TIERGEN_BINARY is the executable under test.
CliRun run_tiergen(const std::string& args, const std::string& input = "");

// The executable under test (TIERGEN_BINARY, set by the build).
std::string tiergen_binary();

// The repository's demo model, models/fortune-tiny.
std::string demo_model();

}  // namespace tiergen::testing
