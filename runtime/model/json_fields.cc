#include "runtime/model/json_fields.h"

#include <cerrno>
#include <fstream>
#include <limits>
#include <sstream>

#include "runtime/core/error.h"

namespace tiergen::json_fields {

namespace {

// A short rendering of an offending value for error messages (configs can hold long lists).
std::string describe(const Json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + text;
}

// JSON integers may arrive as unsigned; anything past int64 is not a size or an id we can hold.
std::optional<int64_t> as_int64(const Json& v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

}  // namespace

std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw NotFoundError(path.string() + ": no such file");
  if (std::filesystem::is_directory(path, ec)) throw IoError(path.string() + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open: " + errno_message(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(path.string() + ": read failed: " + errno_message(errno));
  return ss.str();
}

Json parse_object(const std::string& text, const std::string& origin) {
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw FormatError(origin + ": not valid JSON: " + e.what());
  }
  if (!doc.is_object()) {
    throw FormatError(origin + ": expected a JSON object at the top level, got " + describe(doc));
  }
  return doc;
}

Fields::Fields(const Json& obj, std::string origin, std::string prefix)
    : obj_(&obj), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

const Json* Fields::find(std::string_view key) const {
  auto it = obj_->find(key);
  if (it == obj_->end() || it->is_null()) return nullptr;
  return &*it;
}

void Fields::fail(std::string_view key, const std::string& what) const {
  throw FormatError(origin_ + ": field '" + name(key) + "' " + what);
}

void Fields::wrong_type(std::string_view key, const char* expected, const Json& got) const {
  fail(key, std::string("must be ") + expected + ", got " + describe(got));
}

const Json* Fields::require(std::string_view key, const char* expected) const {
  auto it = obj_->find(key);
  if (it == obj_->end()) fail(key, std::string("is missing (") + expected + " is required)");
  if (it->is_null()) wrong_type(key, expected, *it);
  return &*it;
}

int64_t Fields::positive_int(std::string_view key, int64_t max) const {
  const Json* v = require(key, "a positive integer");
  auto n = as_int64(*v);
  if (!n || *n <= 0) wrong_type(key, "a positive integer", *v);
  if (*n > max)
    fail(key, "is " + std::to_string(*n) + ", beyond what any supported model has (at most " + std::to_string(max) +
                  "): the file is corrupt or not this model's");
  return *n;
}

int64_t Fields::positive_int_or(std::string_view key, int64_t fallback, int64_t max) const {
  return has(key) ? positive_int(key, max) : fallback;
}

std::optional<int64_t> Fields::optional_int(std::string_view key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  auto n = as_int64(*v);
  if (!n) wrong_type(key, "an integer", *v);
  return n;
}

double Fields::number_or(std::string_view key, double fallback) const {
  return optional_number(key).value_or(fallback);
}

double Fields::positive_number(std::string_view key) const {
  const Json* v = require(key, "a positive number");
  if (!v->is_number() || v->get<double>() <= 0.0) wrong_type(key, "a positive number", *v);
  return v->get<double>();
}

std::optional<double> Fields::optional_number(std::string_view key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  return v->get<double>();
}

bool Fields::bool_or(std::string_view key, bool fallback) const { return optional_bool(key).value_or(fallback); }

std::optional<bool> Fields::optional_bool(std::string_view key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::optional<std::string> Fields::optional_string(std::string_view key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

std::optional<int64_t> Fields::token_id(std::string_view key) const {
  auto id = optional_int(key);
  if (id && *id < 0) return std::nullopt;
  return id;
}

std::vector<int64_t> Fields::token_ids(std::string_view key) const {
  std::vector<int64_t> ids;
  const Json* v = find(key);
  if (!v) return ids;
  constexpr const char* kExpected = "an integer or a list of integers";
  if (!v->is_array()) {
    auto id = as_int64(*v);
    if (!id) wrong_type(key, kExpected, *v);
    if (*id >= 0) ids.push_back(*id);
    return ids;
  }
  for (const Json& e : *v) {
    auto id = as_int64(e);
    if (!id) wrong_type(key, kExpected, *v);
    if (*id >= 0) ids.push_back(*id);
  }
  return ids;
}

std::optional<Fields> Fields::object(std::string_view key) const {
  const Json* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_object()) wrong_type(key, "an object", *v);
  return Fields(*v, origin_, name(key) + ".");
}

}  // namespace tiergen::json_fields
