// Malformed and unsupported tokenizer.json files: each is a typed error that names the file and
// the problem, never a crash (the loader is also fuzzed: tests/fuzz/fuzz_tokenizer.cc).
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "runtime/core/error.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using nlohmann::json;

constexpr const char* kOrigin = "bad/tokenizer.json";

// A small valid tokenizer; each test breaks one thing in it.
json valid() {
  return json::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 3, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
    "post_processor": null,
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
              "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}
  })");
}

Tokenizer load(const json& j) { return Tokenizer::from_json(j.dump(), kOrigin); }

// Expects a FormatError whose message names the file and contains `problem`.
void expect_format_error(const json& j, const std::string& problem) {
  EXPECT_THROW_WITH(load(j), FormatError, problem);
  EXPECT_THROW_WITH(load(j), FormatError, kOrigin);
}

void expect_unsupported(const json& j, const std::string& problem) {
  EXPECT_THROW_WITH(load(j), UnsupportedError, problem);
  EXPECT_THROW_WITH(load(j), UnsupportedError, kOrigin);
}

TEST(TokenizerErrorsTest, ValidBaselineLoads) {
  const Tokenizer t = load(valid());
  EXPECT_EQ(t.encode("ab<s>a"), (std::vector<int32_t>{2, 3, 0}));
}

TEST(TokenizerErrorsTest, NotJson) {
  EXPECT_THROW_WITH(Tokenizer::from_json("{\"model\": ", kOrigin), FormatError, "not valid JSON");
  EXPECT_THROW_WITH(Tokenizer::from_json("", kOrigin), FormatError, kOrigin);
}

TEST(TokenizerErrorsTest, NotAnObject) {
  EXPECT_THROW_WITH(Tokenizer::from_json("[1, 2]", kOrigin), FormatError,
                    "expected a JSON object at the top level");
}

TEST(TokenizerErrorsTest, MissingModel) {
  json j = valid();
  j.erase("model");
  expect_format_error(j, "missing 'model'");
  j["model"] = nullptr;
  expect_format_error(j, "missing 'model'");
  j["model"] = "BPE";
  expect_format_error(j, "model: expected an object");
}

TEST(TokenizerErrorsTest, UnsupportedModelType) {
  json j = valid();
  j["model"]["type"] = "WordPiece";
  expect_unsupported(j, "model type 'WordPiece'");
  j["model"]["type"] = 5;
  expect_format_error(j, "model.type: expected a string");
}

TEST(TokenizerErrorsTest, VocabWrongType) {
  json j = valid();
  j["model"]["vocab"] = json::array({"a", "b"});
  expect_format_error(j, "model.vocab: expected an object, got array");
  j["model"].erase("vocab");
  expect_format_error(j, "missing field 'vocab'");
}

TEST(TokenizerErrorsTest, VocabIdNotANonNegativeInteger) {
  json j = valid();
  j["model"]["vocab"]["b"] = -1;
  expect_format_error(j, "model.vocab.b: token id -1 is negative");
  j["model"]["vocab"]["b"] = "1";
  expect_format_error(j, "expected a non-negative integer token id, got string");
  j["model"]["vocab"]["b"] = 1.5;
  expect_format_error(j, "got number");
  j["model"]["vocab"]["b"] = 1ull << 40;
  expect_format_error(j, "out of range");
}

TEST(TokenizerErrorsTest, Merges) {
  json j = valid();
  j["model"]["merges"] = json::array({json::array({"a", "z"})});
  expect_format_error(j, "model.merges[0]: merge token 'z' is not in the vocab");
  j["model"]["merges"] = {"a z"};
  expect_format_error(j, "merge token 'z' is not in the vocab");
  j["model"]["merges"] = {"a b c"};
  expect_format_error(j, "not two tokens separated by one space");
  j["model"]["merges"] = {42};
  expect_format_error(j, "expected a merge");
  j["model"]["merges"] = {"b a"};
  expect_format_error(j, "merged token 'ba' is not in the vocab");
  j["model"]["merges"] = "a b";
  expect_format_error(j, "model.merges: expected an array");
  j["model"].erase("merges");
  expect_format_error(j, "missing field 'merges'");
}

TEST(TokenizerErrorsTest, ModelOptions) {
  json j = valid();
  j["model"]["dropout"] = 0.1;
  expect_unsupported(j, "dropout");
  j["model"]["dropout"] = 2.0;
  expect_format_error(j, "not in [0, 1]");
  j = valid();
  j["model"]["byte_fallback"] = "yes";
  expect_format_error(j, "model.byte_fallback: expected a boolean");
  j = valid();
  j["model"]["unk_token"] = 0;
  expect_format_error(j, "model.unk_token: expected a string");
}

TEST(TokenizerErrorsTest, UnkTokenMissingFromVocab) {
  // Only an error when a character actually needs it, as in tokenizers.
  json j = valid();
  j["model"]["unk_token"] = "<unk>";
  j["pre_tokenizer"] = nullptr;
  const Tokenizer t = load(j);
  EXPECT_EQ(t.encode("ab"), std::vector<int32_t>{2});
  EXPECT_THROW_WITH(t.encode("abz"), FormatError, "unk_token '<unk>'");
}

TEST(TokenizerErrorsTest, AddedTokens) {
  json j = valid();
  j["added_tokens"][0]["id"] = "3";
  expect_format_error(j, "added_tokens[0].id: expected a non-negative integer token id");
  j = valid();
  j["added_tokens"][0].erase("content");
  expect_format_error(j, "added_tokens[0]: missing field 'content'");
  j = valid();
  j["added_tokens"][0]["special"] = 1;
  expect_format_error(j, "added_tokens[0].special: expected a boolean");
  j = valid();
  j["added_tokens"] = json::array({json{{"content", "<s>"}}});
  expect_format_error(j, "missing field 'id'");
  j["added_tokens"] = "none";
  expect_format_error(j, "added_tokens: expected an array");
}

TEST(TokenizerErrorsTest, UnsupportedComponents) {
  json j = valid();
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  expect_unsupported(j, "pre-tokenizer type 'BertPreTokenizer'");
  j = valid();
  j["normalizer"] = {{"type", "Precompiled"}};
  expect_unsupported(j, "normalizer type 'Precompiled'");
  j = valid();
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  expect_unsupported(j, "decoder type 'WordPiece'");
  j = valid();
  j["post_processor"] = {{"type", "Unknown"}};
  expect_unsupported(j, "post-processor type 'Unknown'");
  j = valid();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}}}}};
  expect_unsupported(j, "pre_tokenizer.pretokenizers[0]: pre-tokenizer type 'Digits'");
  j = valid();
  j["version"] = "2.0";
  expect_unsupported(j, "version '2.0'");
}

TEST(TokenizerErrorsTest, MalformedComponents) {
  json j = valid();
  j["pre_tokenizer"] = {{"behavior", "Isolated"}};
  expect_format_error(j, "pre_tokenizer: missing field 'type'");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_format_error(j, "pre_tokenizer.pattern: invalid regex");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "[a[^b]]"}}}, {"behavior", "Isolated"}};
  expect_unsupported(j, "negated nested character classes");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}};
  expect_format_error(j, "unknown split behavior 'Sideways'");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Glob", "a"}}}, {"behavior", "Isolated"}};
  expect_format_error(j, "'String' or 'Regex'");
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {nullptr}}};
  expect_format_error(j, "expected a pre-tokenizer, got null");
  j = valid();
  j["decoder"] = {{"type", "Strip"}, {"content", "ab"}, {"start", 1}, {"stop", 0}};
  expect_format_error(j, "decoder.content: expected a single character");
  j = valid();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", "Prepend"}};
  expect_format_error(j, "normalizer.normalizers: expected an array");
}

TEST(TokenizerErrorsTest, TemplateProcessing) {
  json j = valid();
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}}}},
                         {"special_tokens", json::object()}};
  expect_format_error(j, "special token '<bos>' is not defined in special_tokens");
  j["post_processor"]["single"] = {{{"Sequence", {{"id", "B"}, {"type_id", 0}}}}};
  expect_format_error(j, "only use sequence A");
  j["post_processor"]["single"] = {{{"Other", 1}}};
  expect_format_error(j, "post_processor.single[0]: expected a 'Sequence' or 'SpecialToken'");
}

TEST(TokenizerErrorsTest, DeepNestingIsRejected) {
  json inner = {{"type", "ByteLevel"}};
  for (int i = 0; i < 200; ++i) inner = {{"type", "Sequence"}, {"pretokenizers", json::array({inner})}};
  json j = valid();
  j["pre_tokenizer"] = inner;
  expect_format_error(j, "nested too deeply");
}

TEST(TokenizerErrorsTest, FileErrors) {
  EXPECT_THROW_WITH(Tokenizer::from_file("/nonexistent/dir/tokenizer.json"), NotFoundError,
                    "/nonexistent/dir/tokenizer.json");
  testing::TempDir dir;
  testing::write_file(dir / "tokenizer.json", "{ broken");
  EXPECT_THROW_WITH(Tokenizer::from_file(dir / "tokenizer.json"), FormatError,
                    (dir / "tokenizer.json").string());
}

TEST(TokenizerErrorsTest, UsageErrors) {
  const Tokenizer t = load(valid());
  const std::vector<int32_t> ids = {0, 99};
  EXPECT_THROW_WITH(t.decode(ids), InvalidArgumentError, "token id 99");
  EXPECT_THROW_WITH(t.encode("\xFF"), InvalidArgumentError, "not valid UTF-8");
}

// Every truncation of a valid file either loads or is a tiergen::Error: never another exception.
TEST(TokenizerErrorsTest, TruncatedFilesFailCleanly) {
  const std::string text = valid().dump();
  for (size_t n = 0; n < text.size(); ++n) {
    try {
      const Tokenizer t = Tokenizer::from_json(std::string_view(text).substr(0, n), kOrigin);
      (void)t.encode("ab a");
    } catch (const Error&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << "prefix of " << n << " bytes: unexpected exception: " << e.what();
    }
  }
}

// Every field replaced by values of other JSON types: typed errors only.
TEST(TokenizerErrorsTest, WrongTypesEverywhereFailCleanly) {
  const std::vector<json> replacements = {nullptr, true, -1, 1.5, "x", json::array(), json::object()};
  const json base = valid();
  const json flat = base.flatten();
  for (const auto& [pointer, value] : flat.items()) {
    for (const json& r : replacements) {
      json mutated = base;
      mutated[json::json_pointer(pointer)] = r;
      try {
        const Tokenizer t = load(mutated);
        (void)t.decode(t.encode("ab <s> ba", true));
      } catch (const Error&) {
      } catch (const std::exception& e) {
        ADD_FAILURE() << pointer << " = " << r.dump() << ": unexpected exception: " << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace tiergen
