// Validators for command-line values whose errors a person can read. CLI11's own range checks
// print their open bound (DBL_MAX) in full, a 300-digit number; these say the range in words, and
// reject NaN and infinities, which CLI11 parses as numbers.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

namespace tiergen::cli {

// An integer in [lo, hi]: "must be an integer from 1 to 64, got '0'" ("at least 1" without hi).
CLI::Validator integer_in(int64_t lo, int64_t hi = INT64_MAX);
// A finite number in the interval; `lo_open`/`hi_open` exclude the ends. hi = +inf: no upper end.
CLI::Validator number_in(double lo, bool lo_open, double hi, bool hi_open);
// A seed: an integer from 0 to 2^64-1, written in decimal.
CLI::Validator seed_value();
// A size such as 24GB or 512MiB (runtime/core/units.h).
CLI::Validator byte_size();

// Most CPU threads --threads accepts: 8 per core the process may use (oversubscription past that
// only slows down, and OpenMP crashes on tens of thousands), at most 1024.
int max_threads();

}  // namespace tiergen::cli
