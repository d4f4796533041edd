// safetensors header validation: everything that can be checked without touching tensor bytes.
// A header that passes guarantees that every tensor's [begin, end) lies inside the data section, that
// the tensors tile it exactly, and that each byte range matches shape x dtype, so views handed out
// later can never read out of bounds.
#include <algorithm>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/core/utf8.h"
#include "runtime/model/safetensors.h"

namespace tiergen {
namespace {

using nlohmann::json;

// The reference implementation refuses larger headers; a bigger one is almost surely garbage and
// would make us allocate a huge DOM before noticing.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A real header nests 3 deep (object -> tensor object -> shape array). The limit keeps a hostile
// "[[[[..." from growing the parser's stacks with the 100 MB budget.
constexpr size_t kMaxJsonDepth = 64;
constexpr size_t kLengthPrefixBytes = 8;

[[noreturn]] void fail(const std::string& origin, const std::string& problem) {
  throw FormatError(origin + ": " + problem);
}

// First pass over the header: a SAX handler that builds nothing and rejects what the DOM parser
// would silently accept: duplicate keys (nlohmann keeps the last one, so a second "w" entry
// would shadow the first and leave its bytes unaccounted for) and excessive nesting. Syntax
// errors are reported here too, so the second (DOM) pass cannot fail.
class StrictJsonChecker {
 public:
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const std::string&) { return true; }
  bool string(std::string&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(size_t) { return push(true); }
  bool start_array(size_t) { return push(false); }
  bool end_object() { return pop(); }
  bool end_array() { return pop(); }

  bool key(std::string& k) {
    if (frames_.size() == 1) top_key_ = k;
    if (!frames_.back().keys.insert(k).second) {
      error_ = frames_.size() == 1 ? "duplicate tensor name '" + k + "'"
                                   : "duplicate key \"" + k + "\" inside '" + top_key_ + "'";
      return false;
    }
    return true;
  }

  bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& e) {
    error_ = std::string("header is not valid JSON: ") + e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  struct Frame {
    bool is_object;
    std::unordered_set<std::string> keys;
  };

  bool push(bool is_object) {
    if (frames_.size() >= kMaxJsonDepth) {
      error_ = "header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    frames_.push_back({is_object, {}});
    return true;
  }
  bool pop() {
    frames_.pop_back();
    return true;
  }

  std::vector<Frame> frames_;
  std::string top_key_;
  std::string error_;
};

// A non-negative integer that fits in int64 (so shapes and offsets survive every later signed
// computation); `what` names the field in the message.
uint64_t read_count(const json& v, const std::string& origin, const std::string& tensor,
                    const std::string& what) {
  std::string where = "tensor '" + tensor + "': " + what;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX))
      fail(origin, where + " = " + std::to_string(u) + " is too large");
    return u;
  }
  if (v.is_number_integer()) {
    // nlohmann stores non-negative literals as unsigned; a signed value here is "-0" or negative.
    int64_t i = v.get<int64_t>();
    if (i < 0) fail(origin, where + " is negative (" + std::to_string(i) + ")");
    return static_cast<uint64_t>(i);
  }
  fail(origin, where + " must be a non-negative integer, got " + v.dump());
}

const json& require_field(const json& entry, const char* field, const std::string& origin,
                          const std::string& tensor) {
  auto it = entry.find(field);
  if (it == entry.end()) fail(origin, "tensor '" + tensor + "': missing \"" + field + "\"");
  return *it;
}

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, const std::string& origin) {
  const std::string ctx = "tensor '" + name + "': ";
  if (!entry.is_object())
    fail(origin, ctx + "entry must be an object, got " + std::string(entry.type_name()));

  TensorInfo t;
  t.name = name;

  const json& dtype = require_field(entry, "dtype", origin, name);
  if (!dtype.is_string()) fail(origin, ctx + "\"dtype\" must be a string, got " + dtype.dump());
  auto dt = dtype_from_safetensors(dtype.get_ref<const std::string&>());
  if (!dt) fail(origin, ctx + "unknown dtype " + dtype.dump());
  t.dtype = *dt;

  const json& shape = require_field(entry, "shape", origin, name);
  if (!shape.is_array()) fail(origin, ctx + "\"shape\" must be an array, got " + shape.dump());
  for (size_t i = 0; i < shape.size(); ++i) {
    uint64_t d = read_count(shape[i], origin, name, "shape[" + std::to_string(i) + "]");
    t.shape.push_back(static_cast<int64_t>(d));
  }

  const json& offsets = require_field(entry, "data_offsets", origin, name);
  if (!offsets.is_array() || offsets.size() != 2)
    fail(origin, ctx + "\"data_offsets\" must be an array [begin, end], got " + offsets.dump());
  t.begin = read_count(offsets[0], origin, name, "data_offsets begin");
  t.end = read_count(offsets[1], origin, name, "data_offsets end");
  if (t.begin > t.end)
    fail(origin, ctx + "data_offsets begin " + std::to_string(t.begin) + " > end " + std::to_string(t.end));

  // Element count in the order later code multiplies it (shape_numel), so that no partial product
  // overflows there either; then bytes.
  int64_t numel = 1;
  for (int64_t d : t.shape)
    if (__builtin_mul_overflow(numel, d, &numel))
      fail(origin, ctx + "element count of shape " + shape_str(t.shape) + " overflows 64 bits");
  uint64_t nbytes;
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel), static_cast<uint64_t>(dtype_size(t.dtype)),
                             &nbytes))
    fail(origin, ctx + "byte size of shape " + shape_str(t.shape) + " x " + dtype_name(t.dtype) +
                     " overflows 64 bits");
  if (t.end - t.begin != nbytes)
    fail(origin, ctx + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ") span " +
                     std::to_string(t.end - t.begin) + " bytes but shape " + shape_str(t.shape) + " x " +
                     dtype_name(t.dtype) + " needs " + std::to_string(nbytes));
  return t;
}

std::map<std::string, std::string> parse_metadata(const json& meta, const std::string& origin) {
  std::map<std::string, std::string> out;
  if (meta.is_null()) return out;  // the reference writer may emit null for "no metadata"
  if (!meta.is_object())
    fail(origin, "\"__metadata__\" must be an object of strings, got " + std::string(meta.type_name()));
  for (const auto& [k, v] : meta.items()) {
    if (!v.is_string())
      fail(origin, "\"__metadata__\" value for \"" + k + "\" must be a string, got " + v.dump());
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

// The tensors, sorted by offset, must tile [0, data_size) exactly: no gaps (unaccounted bytes are
// a sign of a corrupt or hand-edited file), no overlaps (two tensors aliasing the same bytes),
// nothing past the end (a view would read outside the mapping).
void check_layout(const std::vector<TensorInfo>& tensors, uint64_t data_size, const std::string& origin) {
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin != expected) {
      std::string b = std::to_string(t.begin), e = std::to_string(expected);
      if (!prev) fail(origin, "gap: first tensor '" + t.name + "' begins at " + b + ", expected 0");
      if (t.begin > expected)
        fail(origin, "gap between '" + prev->name + "' (ends at " + e + ") and '" + t.name + "' (begins at " +
                         b + ")");
      fail(origin,
           "overlap: '" + t.name + "' begins at " + b + ", inside '" + prev->name + "' (ends at " + e + ")");
    }
    expected = t.end;
    prev = &t;
  }
  if (expected > data_size)
    fail(origin, "truncated data: tensors end at byte " + std::to_string(expected) +
                     " of the data section but it has only " + std::to_string(data_size) + " bytes");
  if (expected < data_size)
    fail(origin, "trailing bytes: the data section has " + std::to_string(data_size) +
                     " bytes but tensors end at " + std::to_string(expected));
}

}  // namespace

SafetensorsHeader parse_safetensors_header(std::string_view header_json, uint64_t data_size,
                                           const std::string& origin) {
  if (size_t bad = find_invalid_utf8(header_json); bad != std::string_view::npos)
    fail(origin, "header is not valid UTF-8 (bad byte at offset " + std::to_string(bad) + ")");

  StrictJsonChecker checker;
  if (!json::sax_parse(header_json.begin(), header_json.end(), &checker)) fail(origin, checker.error());
  json root = json::parse(header_json.begin(), header_json.end());
  if (!root.is_object()) fail(origin, "header must be a JSON object, got " + std::string(root.type_name()));

  SafetensorsHeader out;
  out.tensors.reserve(root.size());
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      out.metadata = parse_metadata(entry, origin);
    } else {
      out.tensors.push_back(parse_tensor_entry(name, entry, origin));
    }
  }
  // Zero-size tensors share an offset with their neighbour; the name makes the order total.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  check_layout(out.tensors, data_size, origin);
  return out;
}

SafetensorsHeader SafetensorsFile::parse_buffer(std::string_view bytes, const std::string& origin) {
  if (bytes.size() < kLengthPrefixBytes)
    fail(origin, "file is " + std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > kMaxHeaderBytes)
    fail(origin, "header length " + std::to_string(n) + " exceeds the limit of " +
                     std::to_string(kMaxHeaderBytes) + " bytes");
  uint64_t rest = bytes.size() - kLengthPrefixBytes;
  if (n > rest)
    fail(origin, "header length " + std::to_string(n) + " runs past the end of the file (" +
                     std::to_string(rest) + " bytes follow the length)");
  return parse_safetensors_header(bytes.substr(kLengthPrefixBytes, n), rest - n, origin);
}

}  // namespace tiergen
