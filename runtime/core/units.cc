#include "runtime/core/units.h"

#include <fmt/format.h>
#include <cctype>
#include <charconv>
#include <cmath>

#include "runtime/core/error.h"

namespace tiergen {

std::string format_bytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1000.0 && u + 1 < std::size(kUnits)) {
    v /= 1000.0;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.{}f} {}", v, v < 10 ? 2 : v < 100 ? 1 : 0, kUnits[u]);
}

namespace {

// "1.5 GiB" -> 1.5, "gib": a non-negative number and the unit after it, lower-cased, blanks allowed
// between. False when `text` does not start with a number.
bool split_number_unit(std::string_view text, double& number, std::string& unit) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + i, number);
  if (ec != std::errc() || end != text.data() + i) return false;
  unit.clear();
  for (size_t j = i; j < text.size(); ++j)
    if (!std::isspace(static_cast<unsigned char>(text[j])) || !unit.empty())
      unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[j])));
  return true;
}

}  // namespace

std::chrono::milliseconds parse_duration(std::string_view text, const std::string& what) {
  auto bad = [&]() -> std::chrono::milliseconds {
    throw InvalidArgumentError(what + ": '" + std::string(text) +
                               "' is not a duration (write e.g. 90s, 500ms, 2m, 1h or a number of seconds)");
  };
  double number = 0;
  std::string unit;
  if (!split_number_unit(text, number, unit)) return bad();
  double ms = 0;
  if (unit == "ms")
    ms = number;
  else if (unit.empty() || unit == "s")
    ms = number * 1e3;
  else if (unit == "m" || unit == "min")
    ms = number * 60e3;
  else if (unit == "h")
    ms = number * 3600e3;
  else
    return bad();
  // Zero would make every wait fail at once; a week is past any run's patience.
  if (!(ms >= 1) || ms > 7 * 24 * 3600e3) return bad();
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

uint64_t parse_bytes(std::string_view text, const std::string& what) {
  auto bad = [&]() -> uint64_t {
    throw InvalidArgumentError(what + ": '" + std::string(text) +
                               "' is not a size (write e.g. 24GB, 512MiB, 1.5G or a number of bytes)");
  };
  double number = 0;
  std::string unit;
  if (!split_number_unit(text, number, unit)) return bad();
  double scale = 0;
  if (unit.empty() || unit == "b")
    scale = 1;
  else if (unit == "k" || unit == "kb")
    scale = 1e3;
  else if (unit == "m" || unit == "mb")
    scale = 1e6;
  else if (unit == "g" || unit == "gb")
    scale = 1e9;
  else if (unit == "t" || unit == "tb")
    scale = 1e12;
  else if (unit == "kib")
    scale = 1024.0;
  else if (unit == "mib")
    scale = 1024.0 * 1024;
  else if (unit == "gib")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "tib")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else
    return bad();
  const double bytes = std::floor(number * scale);
  if (!std::isfinite(bytes) || bytes >= 1.8e19) return bad();
  return static_cast<uint64_t>(bytes);
}

}  // namespace tiergen
