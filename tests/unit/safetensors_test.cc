// SafetensorsFile: valid files read back exactly and zero-copy; every class of malformed file is a
// FormatError (or IoError) whose message names the file and the problem.
#include "runtime/model/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using testing::TempDir;
using testing::write_file;

struct Entry {
  std::string name;
  std::string dtype;  // as safetensors spells it
  Shape shape;
  std::string data;  // raw little-endian bytes
};

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  std::string out(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// 8-byte little-endian length, the header text as given, then the data section.
std::string raw_file(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// A well-formed file: tensors laid out back to back in the given order, header padded with spaces
// to a multiple of 8 as the reference writer does (so data is 8-byte aligned in the mapping).
std::string build_file(const std::vector<Entry>& entries,
                       const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string data;
  for (const Entry& e : entries) {
    header[e.name] = {
        {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {data.size(), data.size() + e.data.size()}}};
    data += e.data;
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  return raw_file(text, data);
}

// A one-tensor header with `entry` as the tensor's JSON object text.
std::string one_tensor(const std::string& entry, const std::string& data) {
  return raw_file("{\"w\":" + entry + "}", data);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  // Writes `bytes` to a fresh file and opens it.
  std::shared_ptr<SafetensorsFile> open_bytes(const std::string& bytes) {
    write_file(path(), bytes);
    return SafetensorsFile::open(path());
  }
  std::filesystem::path path() const { return dir_ / "t.safetensors"; }

  TempDir dir_;
};

// Runs `bytes` through both entry points (mapped file and in-memory buffer): they share the
// validation, and the fuzzer only exercises the second.
#define EXPECT_FORMAT_ERROR(bytes, substring)                                                        \
  do {                                                                                               \
    const std::string b_ = (bytes);                                                                  \
    EXPECT_THROW_WITH(open_bytes(b_), FormatError, substring);                                       \
    EXPECT_THROW_WITH(open_bytes(b_), FormatError, path().string());                                 \
    EXPECT_THROW_WITH(SafetensorsFile::parse_buffer(b_, "buf.safetensors"), FormatError, substring); \
  } while (0)

TEST_F(SafetensorsTest, RoundTripReadsValuesExactly) {
  std::vector<float> f32 = {1.5f, -2.25f, 3.0e-8f, std::numeric_limits<float>::infinity(), 0.0f, -0.0f};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x0001, 0x7bff};  // 1, -2, smallest subnormal, 65504
  std::vector<uint16_t> bf16 = {0x3f80, 0xbfc0, 0x7f7f};         // 1, -1.5, ~3.39e38
  std::vector<int64_t> i64 = {0, -1, std::numeric_limits<int64_t>::max(),
                              std::numeric_limits<int64_t>::min()};
  auto f = open_bytes(build_file({{"a", "F32", {2, 3}, bytes_of(f32)},
                                  {"b", "F16", {4}, bytes_of(f16)},
                                  {"c", "BF16", {1, 3}, bytes_of(bf16)},
                                  {"d", "I64", {2, 2}, bytes_of(i64)}}));

  Tensor a = f->tensor("a");
  EXPECT_EQ(a.dtype(), DType::F32);
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(std::memcmp(a.raw(), f32.data(), a.nbytes()), 0);  // bitwise: keeps -0.0 and inf
  Tensor b = f->tensor("b");
  EXPECT_EQ(b.dtype(), DType::F16);
  EXPECT_EQ(std::vector<uint16_t>(b.data<uint16_t>(), b.data<uint16_t>() + 4), f16);
  EXPECT_EQ(b.to_f32().data<float>()[3], 65504.0f);
  Tensor c = f->tensor("c");
  EXPECT_EQ(c.dtype(), DType::BF16);
  EXPECT_EQ(c.shape(), (Shape{1, 3}));
  EXPECT_EQ(c.to_f32().data<float>()[1], -1.5f);
  Tensor d = f->tensor("d");
  EXPECT_EQ(d.dtype(), DType::I64);
  EXPECT_EQ(std::vector<int64_t>(d.data<int64_t>(), d.data<int64_t>() + 4), i64);
  EXPECT_EQ(f->header().tensors.size(), 4u);
}

TEST_F(SafetensorsTest, TensorsAreZeroCopyViewsOfTheMapping) {
  auto f = open_bytes(build_file({{"x", "F32", {3}, bytes_of(std::vector<float>{1, 2, 3})},
                                  {"y", "I32", {2}, bytes_of(std::vector<int32_t>{7, 8})}}));
  Tensor y = f->tensor("y");
  EXPECT_EQ(y.tier(), Tier::Mmap);
  EXPECT_EQ(y.dtype(), DType::I32);
  const char* base = static_cast<const char*>(y.storage()->data());
  const char* p = static_cast<const char*>(y.raw());
  EXPECT_GE(p, base);
  EXPECT_LE(p + y.nbytes(), base + y.storage()->nbytes());
  EXPECT_EQ(y.storage()->nbytes(), std::filesystem::file_size(path()));
  // Same storage for every tensor of the file: one mapping, shared.
  EXPECT_EQ(f->tensor("x").storage().get(), y.storage().get());
  // The view keeps the mapping alive after the file object is gone.
  f.reset();
  EXPECT_EQ(y.data<int32_t>()[1], 8);
}

TEST_F(SafetensorsTest, ReadsMetadata) {
  auto f = open_bytes(build_file({{"x", "U8", {2}, "ab"}}, {{"format", "pt"}, {"note", "h\u00e9llo"}}));
  EXPECT_EQ(f->header().metadata.size(), 2u);
  EXPECT_EQ(f->header().metadata.at("format"), "pt");
  EXPECT_EQ(f->header().metadata.at("note"), "h\u00e9llo");
  EXPECT_EQ(f->header().tensors.size(), 1u);  // __metadata__ is not a tensor
  EXPECT_EQ(f->find("__metadata__"), nullptr);
}

TEST_F(SafetensorsTest, EmptyFileHasNoTensors) {
  auto f = open_bytes(raw_file("{}"));
  EXPECT_TRUE(f->header().tensors.empty());
  EXPECT_TRUE(f->header().metadata.empty());
  EXPECT_EQ(f->find("x"), nullptr);
  EXPECT_TRUE(SafetensorsFile::parse_buffer(raw_file("{}      "), "buf").tensors.empty());
}

TEST_F(SafetensorsTest, HeaderMayBePaddedWithSpaces) {
  auto f =
      open_bytes(raw_file("{\"w\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]}}         ", "xy"));
  EXPECT_EQ(f->tensor("w").data<char>()[1], 'y');
}

TEST_F(SafetensorsTest, ZeroSizeTensorsAndEveryDtypeAreAccepted) {
  const char* dtypes[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16",
                          "I8",  "U64", "U32", "U16",  "U8",  "BOOL"};
  std::vector<Entry> entries;
  for (const char* dt : dtypes) {
    DType t = *dtype_from_safetensors(dt);
    entries.push_back({std::string("t_") + dt, dt, {3}, std::string(3 * dtype_size(t), '\x01')});
    entries.push_back({std::string("z_") + dt, dt, {0, 5}, ""});  // shares its offset with a neighbour
  }
  auto f = open_bytes(build_file(entries));
  EXPECT_EQ(f->header().tensors.size(), entries.size());
  EXPECT_EQ(f->tensor("t_BOOL").dtype(), DType::Bool);
  EXPECT_EQ(f->tensor("z_F64").numel(), 0);
}

TEST_F(SafetensorsTest, MissingTensorIsNotFoundNamingFile) {
  auto f = open_bytes(raw_file("{}"));
  EXPECT_THROW_WITH(f->tensor("nope"), NotFoundError, "'nope'");
  EXPECT_THROW_WITH(f->tensor("nope"), NotFoundError, path().string());
}

TEST_F(SafetensorsTest, MissingFileIsIoError) {
  EXPECT_THROW_WITH(SafetensorsFile::open(dir_ / "absent.safetensors"), IoError, "No such file");
  EXPECT_THROW_WITH(SafetensorsFile::open(dir_ / "absent.safetensors"), IoError, "absent.safetensors");
}

TEST_F(SafetensorsTest, DirectoryIsIoError) {
  EXPECT_THROW_WITH(SafetensorsFile::open(dir_.path()), IoError, "not a regular file");
}

// --- malformed files: one class per test --------------------------------------------------------

TEST_F(SafetensorsTest, ShorterThanEightBytes) {
  EXPECT_FORMAT_ERROR(std::string("\x02\x00\x00", 3), "shorter than the 8-byte header length");
}

TEST_F(SafetensorsTest, ZeroLengthFile) { EXPECT_FORMAT_ERROR("", "file is 0 bytes, shorter than"); }

TEST_F(SafetensorsTest, HeaderLengthOverLimit) {
  std::string bytes(8, '\0');
  uint64_t n = 100'000'001;
  std::memcpy(bytes.data(), &n, 8);  // little-endian host
  EXPECT_FORMAT_ERROR(bytes + "{}", "header length 100000001 exceeds the limit of 100000000");
  n = ~uint64_t{0};  // 8 + n would wrap
  std::memcpy(bytes.data(), &n, 8);
  EXPECT_FORMAT_ERROR(bytes + "{}", "exceeds the limit");
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  std::string bytes = raw_file("{}");
  bytes[0] = 3;  // claims 3 bytes, 2 follow
  EXPECT_FORMAT_ERROR(bytes, "header length 3 runs past the end of the file");
}

TEST_F(SafetensorsTest, HeaderNotUtf8) {
  EXPECT_FORMAT_ERROR(raw_file("{\"w\xff\":{}}"), "not valid UTF-8 (bad byte at offset 3)");
  EXPECT_FORMAT_ERROR(raw_file("{\"\xc0\xaf\":1}"), "not valid UTF-8");      // overlong '/'
  EXPECT_FORMAT_ERROR(raw_file("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");  // surrogate
  EXPECT_FORMAT_ERROR(raw_file("{\"\xe2\x82\":1}"), "not valid UTF-8");      // cut sequence
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  EXPECT_FORMAT_ERROR(raw_file("{\"w\": "), "header is not valid JSON");
  EXPECT_FORMAT_ERROR(raw_file("hello"), "header is not valid JSON");
  EXPECT_FORMAT_ERROR(raw_file(""), "header is not valid JSON");
  EXPECT_FORMAT_ERROR(raw_file("{} {}"), "header is not valid JSON");
  EXPECT_FORMAT_ERROR(raw_file(R"({"__metadata__":{"a":"b"},"x":1e400})"), "number overflow");
}

TEST_F(SafetensorsTest, HeaderNotObject) {
  EXPECT_FORMAT_ERROR(raw_file("[]"), "header must be a JSON object, got array");
  EXPECT_FORMAT_ERROR(raw_file("7"), "header must be a JSON object, got number");
}

TEST_F(SafetensorsTest, HeaderNestsTooDeep) {
  EXPECT_FORMAT_ERROR(raw_file("{\"w\":" + std::string(100, '[') + std::string(100, ']') + "}"),
                      "nests deeper than 64 levels");
}

TEST_F(SafetensorsTest, TensorEntryNotObject) {
  EXPECT_FORMAT_ERROR(one_tensor("[1, 2]", ""), "tensor 'w': entry must be an object, got array");
}

TEST_F(SafetensorsTest, TensorEntryMissingField) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"shape":[1],"data_offsets":[0,4]})", "abcd"),
                      "tensor 'w': missing \"dtype\"");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","data_offsets":[0,4]})", "abcd"),
                      "tensor 'w': missing \"shape\"");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1]})", "abcd"),
                      "tensor 'w': missing \"data_offsets\"");
}

TEST_F(SafetensorsTest, TensorEntryMistypedField) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":4,"shape":[1],"data_offsets":[0,4]})", "abcd"),
                      "\"dtype\" must be a string, got 4");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})", "abcd"),
                      "\"shape\" must be an array, got 1");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", "abcd"),
                      "\"data_offsets\" must be an array [begin, end]");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":{"a":0}})", "abcd"),
                      "\"data_offsets\" must be an array [begin, end]");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":["1"],"data_offsets":[0,4]})", "abcd"),
                      "shape[0] must be a non-negative integer, got \"1\"");
  EXPECT_FORMAT_ERROR(raw_file(R"({"__metadata__":{"a":1}})"),
                      "\"__metadata__\" value for \"a\" must be a string");
  EXPECT_FORMAT_ERROR(raw_file(R"({"__metadata__":[]})"), "\"__metadata__\" must be an object of strings");
}

TEST_F(SafetensorsTest, UnknownDtype) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]})", "a"),
                      "tensor 'w': unknown dtype \"F8_E4M3\"");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", "abcd"),
                      "unknown dtype \"f32\"");
}

TEST_F(SafetensorsTest, NegativeShapeDim) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]})", "abcd"),
                      "tensor 'w': shape[1] is negative (-1)");
}

TEST_F(SafetensorsTest, NonIntegerShapeDim) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})", "abcd"),
                      "shape[0] must be a non-negative integer, got 1.0");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1e30],"data_offsets":[0,4]})", "abcd"),
                      "shape[0] must be a non-negative integer");
  EXPECT_FORMAT_ERROR(
      one_tensor(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]})", "abcd"),
      "shape[0] = 18446744073709551615 is too large");
}

TEST_F(SafetensorsTest, NegativeOffset) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[-4,0]})", "abcd"),
                      "data_offsets begin is negative (-4)");
}

TEST_F(SafetensorsTest, NonIntegerOffset) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4.5]})", "abcd"),
                      "data_offsets end must be a non-negative integer, got 4.5");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[null,4]})", "abcd"),
                      "data_offsets begin must be a non-negative integer, got null");
}

TEST_F(SafetensorsTest, BeginAfterEnd) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})", "abcd"),
                      "tensor 'w': data_offsets begin 4 > end 0");
}

TEST_F(SafetensorsTest, SizeDoesNotMatchShape) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", "abcd"),
                      "span 4 bytes but shape (2) x F32 needs 8");
}

TEST_F(SafetensorsTest, SizeOverflows) {
  // 2^62 elements fit in int64, but x 4 bytes does not fit in 64 bits: must not wrap to 0.
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})", ""),
                      "byte size of shape (4611686018427387904) x F32 overflows 64 bits");
  // 2^32 x 2^32 wraps the element count itself.
  EXPECT_FORMAT_ERROR(
      one_tensor(R"({"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]})", ""),
      "element count of shape (4294967296, 4294967296, 0) overflows 64 bits");
}

TEST_F(SafetensorsTest, GapBetweenTensors) {
  EXPECT_FORMAT_ERROR(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                               R"("b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
                               "12345"),
                      "gap between 'a' (ends at 2) and 'b' (begins at 3)");
}

TEST_F(SafetensorsTest, FirstTensorNotAtZero) {
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"U8","shape":[2],"data_offsets":[1,3]})", "123"),
                      "first tensor 'w' begins at 1, expected 0");
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  EXPECT_FORMAT_ERROR(raw_file(R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                               R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                               "1234"),
                      "overlap: 'b' begins at 2, inside 'a' (ends at 3)");
  // Two tensors on the very same bytes.
  EXPECT_FORMAT_ERROR(raw_file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                               R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                               "12"),
                      "overlap: 'b' begins at 0, inside 'a'");
}

TEST_F(SafetensorsTest, TrailingBytes) {
  EXPECT_FORMAT_ERROR(build_file({{"w", "U8", {2}, "ab"}}) + "junk",
                      "trailing bytes: the data section has 6 bytes but tensors end at 2");
  EXPECT_FORMAT_ERROR(raw_file("{}", "x"), "trailing bytes");
}

TEST_F(SafetensorsTest, TruncatedData) {
  std::string full = build_file({{"w", "F32", {4}, bytes_of(std::vector<float>{1, 2, 3, 4})}});
  EXPECT_FORMAT_ERROR(full.substr(0, full.size() - 1),
                      "truncated data: tensors end at byte 16 of the data section but it has only 15 bytes");
}

TEST_F(SafetensorsTest, DuplicateTensorName) {
  EXPECT_FORMAT_ERROR(raw_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                               R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                               "ab"),
                      "duplicate tensor name 'w'");
  EXPECT_FORMAT_ERROR(one_tensor(R"({"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]})", "a"),
                      "duplicate key \"dtype\" inside 'w'");
}

// --- real files -----------------------------------------------------------------------------------

TEST(SafetensorsReference, ExpectedOutputsMatchExpectedJson) {
  const auto dir = testing::hf_model_dir("qwen2-tiny");
  auto f = SafetensorsFile::open(dir / "expected.safetensors");
  auto expected = nlohmann::json::parse(testing::read_file(dir / "expected.json"));

  Tensor ids = f->tensor("p0.input_ids");
  EXPECT_EQ(ids.dtype(), DType::I64);
  ASSERT_EQ(ids.rank(), 1);
  // The same token ids, written independently into the JSON: checks I64 decoding end to end.
  std::vector<int64_t> want = expected["cases"][0]["input_ids"].get<std::vector<int64_t>>();
  EXPECT_EQ(std::vector<int64_t>(ids.data<int64_t>(), ids.data<int64_t>() + ids.numel()), want);

  Tensor logits = f->tensor("p0.logits");
  EXPECT_EQ(logits.dtype(), DType::F32);
  EXPECT_EQ(logits.shape(), (Shape{4, 1200}));
  Tensor h = f->tensor("p0.hidden.0");
  EXPECT_EQ(h.shape(), (Shape{static_cast<int64_t>(want.size()), 64}));
  for (int64_t i = 0; i < logits.numel(); ++i) ASSERT_TRUE(std::isfinite(logits.data<float>()[i])) << i;
  std::vector<int64_t> greedy = expected["cases"][0]["greedy"].get<std::vector<int64_t>>();
  Tensor g = f->tensor("p0.greedy");
  EXPECT_EQ(std::vector<int64_t>(g.data<int64_t>(), g.data<int64_t>() + g.numel()), greedy);
}

}  // namespace
}  // namespace tiergen
