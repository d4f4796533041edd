// Typed field getters over a parsed JSON object (config.json, generation_config.json). Every failure
// is a FormatError that names the file and the field, so the parsers never check a field by hand.
// Internal to tiergen_model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tiergen::json_fields {

using Json = nlohmann::json;

// Whole file as bytes: NotFoundError when it does not exist, IoError when it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

// Parses `text`; FormatError naming `origin` when it is not JSON or not an object.
Json parse_object(const std::string& text, const std::string& origin);

class Fields {
 public:
  // `obj` must outlive this view. `prefix` qualifies nested names in errors ("rope_parameters.").
  Fields(const Json& obj, std::string origin, std::string prefix = "");

  // A field that is absent or JSON null counts as not set: HF writes null for "use the default".
  const Json* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }
  // Written at all, null included: where null and absent mean different things (Mistral's
  // `sliding_window`: absent is 4096, null is off).
  bool written(std::string_view key) const { return obj_->contains(key); }
  bool empty() const { return obj_->empty(); }

  // Required; at most `max` (a bound that keeps a corrupt value from sizing huge structures).
  int64_t positive_int(std::string_view key, int64_t max = INT64_MAX) const;
  int64_t positive_int_or(std::string_view key, int64_t fallback, int64_t max = INT64_MAX) const;
  std::optional<int64_t> optional_int(std::string_view key) const;
  double number_or(std::string_view key, double fallback) const;
  double positive_number(std::string_view key) const;  // required
  std::optional<double> optional_number(std::string_view key) const;
  bool bool_or(std::string_view key, bool fallback) const;
  std::optional<bool> optional_bool(std::string_view key) const;
  std::optional<std::string> optional_string(std::string_view key) const;

  // Token ids: an int or null; a negative id (old configs write -1 for "none") reads as unset.
  std::optional<int64_t> token_id(std::string_view key) const;
  // `eos_token_id` style: an int, a list of ints, or null (empty result).
  std::vector<int64_t> token_ids(std::string_view key) const;

  // A nested object field ("rope_parameters"); FormatError if set but not an object.
  std::optional<Fields> object(std::string_view key) const;

  // FormatError "<origin>: field '<prefix><key>' <what>".
  [[noreturn]] void fail(std::string_view key, const std::string& what) const;
  std::string name(std::string_view key) const { return prefix_ + std::string(key); }
  const std::string& origin() const { return origin_; }

 private:
  const Json* require(std::string_view key, const char* expected) const;
  [[noreturn]] void wrong_type(std::string_view key, const char* expected, const Json& got) const;

  const Json* obj_;
  std::string origin_;
  std::string prefix_;
};

}  // namespace tiergen::json_fields
