// Reading tokenizer.json with errors that name the file and the place in it: every malformed field
// is a FormatError "<file>: <path>: <problem>", every component we cannot run an UnsupportedError.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace tiergen::tok {

using json = nlohmann::json;

// A location in tokenizer.json, e.g. "model.merges[3]", carried down the parse for error messages.
class Where {
 public:
  explicit Where(const std::string& origin) : origin_(&origin) {}

  Where operator[](std::string_view key) const;
  Where operator[](size_t index) const;

  const std::string& origin() const { return *origin_; }
  const std::string& path() const { return path_; }
  // How deep in the document we are: bounds the recursion of nested Sequence components, which a
  // fuzzed or hostile file could otherwise nest until the stack overflows.
  int depth() const { return depth_; }

  [[noreturn]] void fail(std::string_view problem) const;         // FormatError
  [[noreturn]] void unsupported(std::string_view problem) const;  // UnsupportedError

 private:
  const std::string* origin_;
  std::string path_;
  int depth_ = 0;
};

const char* json_kind(const json& j);  // "string", "array", ... for "expected X, got Y" messages

// The field `key` of object `obj`, or nullptr when it is absent. `obj` must be an object.
const json* find_field(const json& obj, std::string_view key);
const json& require_field(const json& obj, std::string_view key, const Where& where);
const json& require_object(const json& j, const Where& where);
const json& require_array(const json& j, const Where& where);
std::string require_string(const json& j, const Where& where);
// A token id: an integer in [0, INT32_MAX].
int32_t require_id(const json& j, const Where& where);

// Optional fields: absent or null give the default (files written by different tokenizers
// versions disagree on whether unset options are null or missing).
std::optional<std::string> optional_string(const json& obj, std::string_view key, const Where& where);
bool optional_bool(const json& obj, std::string_view key, bool fallback, const Where& where);
int64_t optional_int(const json& obj, std::string_view key, int64_t fallback, const Where& where);

// The "type" of a component object (normalizer, decoder, ...).
std::string component_type(const json& obj, const Where& where);

}  // namespace tiergen::tok
