#include "runtime/tokenizer/json_util.h"

#include <fmt/format.h>

#include <limits>

#include "runtime/core/error.h"

namespace tiergen::tok {

Where Where::operator[](std::string_view key) const {
  Where w = *this;
  if (!w.path_.empty()) w.path_ += '.';
  w.path_ += key;
  ++w.depth_;
  return w;
}

Where Where::operator[](size_t index) const {
  Where w = *this;
  w.path_ += fmt::format("[{}]", index);
  ++w.depth_;
  return w;
}

void Where::fail(std::string_view problem) const {
  if (path_.empty()) throw FormatError(fmt::format("{}: {}", *origin_, problem));
  throw FormatError(fmt::format("{}: {}: {}", *origin_, path_, problem));
}

void Where::unsupported(std::string_view problem) const {
  if (path_.empty()) throw UnsupportedError(fmt::format("{}: {}", *origin_, problem));
  throw UnsupportedError(fmt::format("{}: {}: {}", *origin_, path_, problem));
}

const char* json_kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    default:
      return "other";
  }
}

const json* find_field(const json& obj, std::string_view key) {
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

const json& require_field(const json& obj, std::string_view key, const Where& where) {
  const json* field = find_field(obj, key);
  if (field == nullptr) where.fail(fmt::format("missing field '{}'", key));
  return *field;
}

const json& require_object(const json& j, const Where& where) {
  if (!j.is_object()) where.fail(fmt::format("expected an object, got {}", json_kind(j)));
  return j;
}

const json& require_array(const json& j, const Where& where) {
  if (!j.is_array()) where.fail(fmt::format("expected an array, got {}", json_kind(j)));
  return j;
}

std::string require_string(const json& j, const Where& where) {
  if (!j.is_string()) where.fail(fmt::format("expected a string, got {}", json_kind(j)));
  return j.get<std::string>();
}

int32_t require_id(const json& j, const Where& where) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<uint64_t>();
    if (v <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) return static_cast<int32_t>(v);
    where.fail(fmt::format("token id {} is out of range (ids must fit in int32)", v));
  }
  if (j.is_number_integer()) where.fail(fmt::format("token id {} is negative", j.get<int64_t>()));
  where.fail(fmt::format("expected a non-negative integer token id, got {}", json_kind(j)));
}

std::optional<std::string> optional_string(const json& obj, std::string_view key, const Where& where) {
  const json* field = find_field(obj, key);
  if (field == nullptr || field->is_null()) return std::nullopt;
  return require_string(*field, where[key]);
}

bool optional_bool(const json& obj, std::string_view key, bool fallback, const Where& where) {
  const json* field = find_field(obj, key);
  if (field == nullptr || field->is_null()) return fallback;
  if (!field->is_boolean()) where[key].fail(fmt::format("expected a boolean, got {}", json_kind(*field)));
  return field->get<bool>();
}

int64_t optional_int(const json& obj, std::string_view key, int64_t fallback, const Where& where) {
  const json* field = find_field(obj, key);
  if (field == nullptr || field->is_null()) return fallback;
  if (field->is_number_unsigned()) {
    const auto v = field->get<uint64_t>();
    if (v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return static_cast<int64_t>(v);
  } else if (field->is_number_integer()) {
    return field->get<int64_t>();
  }
  where[key].fail(fmt::format("expected an integer, got {}", json_kind(*field)));
}

std::string component_type(const json& obj, const Where& where) {
  require_object(obj, where);
  return require_string(require_field(obj, "type", where), where["type"]);
}

}  // namespace tiergen::tok
