#include "launch/flag_checks.h"

#include <sched.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <thread>

#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen::cli {
namespace {

std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "infinity" : "-infinity";
  std::string s = std::to_string(v);
  s.erase(s.find_last_not_of('0') + 1);  // "0.500000" -> "0.5", "1.000000" -> "1."
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

CLI::Validator integer_in(int64_t lo, int64_t hi) {
  const std::string range = hi == INT64_MAX ? "an integer >= " + std::to_string(lo)
                                            : "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
  return CLI::Validator(
      [lo, hi, range](const std::string& text) -> std::string {
        int64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && end == text.data() + text.size() && v >= lo && v <= hi) return "";
        return "must be " + range + ", got '" + text + "'";
      },
      range);
}

CLI::Validator number_in(double lo, bool lo_open, double hi, bool hi_open) {
  std::string range =
      std::string(lo_open ? "(" : "[") + number_text(lo) + ", " + number_text(hi) + (hi_open ? ")" : "]");
  if (std::isinf(hi)) range = std::string(lo_open ? "> " : ">= ") + number_text(lo);
  return CLI::Validator(
      [=](const std::string& text) -> std::string {
        double v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        const bool parsed = ec == std::errc() && end == text.data() + text.size() && std::isfinite(v);
        if (parsed && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi)) return "";
        return "must be a number " + std::string(std::isinf(hi) ? "" : "in ") + range + ", got '" + text + "'";
      },
      "a number " + range);
}

CLI::Validator seed_value() {
  return CLI::Validator(
      [](const std::string& text) -> std::string {
        uint64_t v = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
        if (ec == std::errc() && end == text.data() + text.size()) return "";
        return "must be an integer from 0 to 18446744073709551615, got '" + text + "'";
      },
      "0..2^64-1");
}

CLI::Validator byte_size() {
  return CLI::Validator(
      [](const std::string& text) -> std::string {
        try {
          parse_bytes(text, "size");
          return "";
        } catch (const Error& e) {
          return "'" + text + "' is not a size (write e.g. 24GB, 512MiB, 1.5G or a number of bytes)";
        }
      },
      "SIZE");
}

int max_threads() {
  cpu_set_t set;
  int cores = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(8 * std::max(cores, 1), 8, 1024);
}

}  // namespace tiergen::cli
