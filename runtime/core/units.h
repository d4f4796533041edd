// Byte counts as people write them: "24 GB", "512MiB", "1.5G".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace tiergen {

// "1.50 GB", "512.0 MB", "17 B" (decimal units, as free(1) -h and disk vendors print them).
std::string format_bytes(uint64_t bytes);

// A size: a non-negative number with an optional unit: B, K/KB, M/MB, G/GB, T/TB (powers of 1000)
// or KiB, MiB, GiB, TiB (powers of 1024); case-insensitive, blanks allowed before the unit.
// InvalidArgumentError naming `what` and the accepted forms when `text` is not one.
uint64_t parse_bytes(std::string_view text, const std::string& what);

// A duration: a positive number with an optional unit: ms, s (the default), m/min, h; from 1 ms to
// a week. InvalidArgumentError naming `what` and the accepted forms when `text` is not one.
std::chrono::milliseconds parse_duration(std::string_view text, const std::string& what);

}  // namespace tiergen
