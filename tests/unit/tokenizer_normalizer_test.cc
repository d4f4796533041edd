// The Unicode normalizers of tokenizer.json (NFC, NFD, NFKC, NFKD, Lowercase, StripAccents), which
// tiergen runs through ICU: checked against strings from an independent implementation, and inside a
// whole tokenizer (Qwen2's tokenizer.json has {"type": "NFC"}).
#include "runtime/tokenizer/normalizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/tokenizer/json_util.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using nlohmann::json;
namespace tt = tiergen::testing;

std::string normalized(const json& spec, std::string text) {
  static const std::string origin = "inline.json";
  const std::unique_ptr<tok::Normalizer> normalizer = tok::make_normalizer(spec, tok::Where(origin));
  normalizer->normalize(text);
  return text;
}

json type(const char* name) { return {{"type", name}}; }

// The expected strings below were generated with Python 3.11.7 (unicodedata 14.0.0), not with
// tiergen or ICU, by printing every non-ASCII code point as a \u escape:
//   normal forms:  unicodedata.normalize(form, s)
//   Lowercase:     "".join(c.lower() for c in s)  -- per character, as tokenizers' Rust code does
//                  (char::to_lowercase); s.lower() differs only in the final sigma (see below)
//   StripAccents:  "".join(c for c in s if not unicodedata.category(c).startswith("M"))
//   Sequence:      the three above in turn: NFD, StripAccents, Lowercase

struct FormCase {
  const char* name;
  const char* input;
  const char* nfc;
  const char* nfd;
  const char* nfkc;
  const char* nfkd;
};

const FormCase kFormCases[] = {
    {"Empty", "", "", "", "", ""},
    {"Ascii", "Hello, World 123", "Hello, World 123", "Hello, World 123", "Hello, World 123", "Hello, World 123"},
    {"ComposedAcute", "caf\u00E9", "caf\u00E9", "cafe\u0301", "caf\u00E9", "cafe\u0301"},
    {"DecomposedAcute", "cafe\u0301", "caf\u00E9", "cafe\u0301", "caf\u00E9", "cafe\u0301"},
    {"MarkReordering", "a\u0302\u0323", "\u1EAD", "a\u0323\u0302", "\u1EAD", "a\u0323\u0302"},
    {"HangulSyllables", "\uD55C\uAD6D\uC5B4", "\uD55C\uAD6D\uC5B4", "\u1112\u1161\u11AB\u1100\u116E\u11A8\u110B\u1165",
     "\uD55C\uAD6D\uC5B4", "\u1112\u1161\u11AB\u1100\u116E\u11A8\u110B\u1165"},
    {"HangulJamo", "\u1112\u1161\u11AB\u1100\u116E\u11A8", "\uD55C\uAD6D", "\u1112\u1161\u11AB\u1100\u116E\u11A8",
     "\uD55C\uAD6D", "\u1112\u1161\u11AB\u1100\u116E\u11A8"},
    {"Ligature", "\uFB01ne \uFB02ow", "\uFB01ne \uFB02ow", "\uFB01ne \uFB02ow", "fine flow", "fine flow"},
    {"FullWidth", "\uFF21\uFF22\uFF23\uFF41\uFF11", "\uFF21\uFF22\uFF23\uFF41\uFF11", "\uFF21\uFF22\uFF23\uFF41\uFF11",
     "ABCa1", "ABCa1"},
    {"Superscript", "x\u00B2 + y\u00B3", "x\u00B2 + y\u00B3", "x\u00B2 + y\u00B3", "x2 + y3", "x2 + y3"},
    {"AngstromSign", "\u212B", "\u00C5", "A\u030A", "\u00C5", "A\u030A"},
    {"KelvinSign", "\u212A", "K", "K", "K", "K"},
    {"DzCaron", "\u01C4\u01C5\u01C6", "\u01C4\u01C5\u01C6", "\u01C4\u01C5\u01C6", "D\u017DD\u017Ed\u017E",
     "DZ\u030CDz\u030Cdz\u030C"},
    {"LongSDotBelow", "\u1E9B\u0323", "\u1E9B\u0323", "\u017F\u0323\u0307", "\u1E69", "s\u0323\u0307"},
    {"Ellipsis", "wait\u2026", "wait\u2026", "wait\u2026", "wait...", "wait..."},
    {"CircledDigit", "\u2460\u2461", "\u2460\u2461", "\u2460\u2461", "12", "12"},
    {"CjkCompatibility", "\uF900", "\u8C48", "\u8C48", "\u8C48", "\u8C48"},
    {"MicroSign", "\u00B5m", "\u00B5m", "\u00B5m", "\u03BCm", "\u03BCm"},
    {"GreekTonos", "\u038C\u03AC", "\u038C\u03AC", "\u039F\u0301\u03B1\u0301", "\u038C\u03AC",
     "\u039F\u0301\u03B1\u0301"},
    {"DottedCapitalI", "\u0130stanbul", "\u0130stanbul", "I\u0307stanbul", "\u0130stanbul", "I\u0307stanbul"},
    {"EmojiZwj", "\U0001F469\u200D\U0001F4BB \U0001F44D\U0001F3FD", "\U0001F469\u200D\U0001F4BB \U0001F44D\U0001F3FD",
     "\U0001F469\u200D\U0001F4BB \U0001F44D\U0001F3FD", "\U0001F469\u200D\U0001F4BB \U0001F44D\U0001F3FD",
     "\U0001F469\u200D\U0001F4BB \U0001F44D\U0001F3FD"},
};

TEST(UnicodeNormalizerTest, NormalFormsMatchPython) {
  for (const FormCase& c : kFormCases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(normalized(type("NFC"), c.input), c.nfc);
    EXPECT_EQ(normalized(type("NFD"), c.input), c.nfd);
    EXPECT_EQ(normalized(type("NFKC"), c.input), c.nfkc);
    EXPECT_EQ(normalized(type("NFKD"), c.input), c.nfkd);
  }
}

// A normal form of a normal form is itself; this also runs the "already normalized" fast path on
// every non-ASCII expected string.
TEST(UnicodeNormalizerTest, NormalFormsAreIdempotent) {
  for (const FormCase& c : kFormCases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(normalized(type("NFC"), c.nfc), c.nfc);
    EXPECT_EQ(normalized(type("NFD"), c.nfd), c.nfd);
    EXPECT_EQ(normalized(type("NFKC"), c.nfkc), c.nfkc);
    EXPECT_EQ(normalized(type("NFKD"), c.nfkd), c.nfkd);
  }
}

struct TextCase {
  const char* name;
  const char* input;
  const char* expected;
};

const TextCase kLowercaseCases[] = {
    {"Empty", "", ""},
    {"Ascii", "Hello, WORLD 123", "hello, world 123"},
    {"Latin1", "\u00C0\u00C9\u00CE\u00D5\u00DC\u00C7 \u00DF", "\u00E0\u00E9\u00EE\u00F5\u00FC\u00E7 \u00DF"},
    // Python's "ΟΔΟΣ".lower() is "οδος" (final sigma from context); tokenizers lowercases each
    // character alone and gives "οδοσ".
    {"GreekFinalSigma", "\u039F\u0394\u039F\u03A3", "\u03BF\u03B4\u03BF\u03C3"},
    {"GreekWords", "\u039F\u0394\u039F\u03A3 \u039A\u0391\u039B\u039F\u03A3",
     "\u03BF\u03B4\u03BF\u03C3 \u03BA\u03B1\u03BB\u03BF\u03C3"},
    // İ takes its full mapping "i" + U+0307 (Rust, Python and ICU's root locale agree); dotless ı
    // stays. A Turkish locale would give "i", which tokenizers never does.
    {"DottedCapitalI", "\u0130stanbul I\u0131", "i\u0307stanbul i\u0131"},
    {"DzTitlecase", "\u01C4\u01C5\u01C6", "\u01C6\u01C6\u01C6"},
    {"KelvinAngstrom", "\u212A\u212B", "k\u00E5"},
    {"CapitalSharpS", "\u1E9E", "\u00DF"},
    {"FullWidth", "\uFF21\uFF22\uFF23", "\uFF41\uFF42\uFF43"},
    {"RomanNumeral", "\u216B", "\u217B"},
    {"Cherokee", "\u13A0\u13F4", "\uAB70\u13FC"},
    {"Deseret", "\U00010400\U00010427", "\U00010428\U0001044F"},  // outside the BMP
    {"Cyrillic", "\u041F\u0420\u0418\u0412\u0415\u0422", "\u043F\u0440\u0438\u0432\u0435\u0442"},
    {"Decomposed", "E\u0301", "e\u0301"},
    {"Cjk", "\u4E2D\u6587", "\u4E2D\u6587"},
    {"EmojiZwj", "\U0001F469\u200D\U0001F4BB", "\U0001F469\u200D\U0001F4BB"},
};

TEST(UnicodeNormalizerTest, LowercaseMatchesPythonPerCharacter) {
  for (const TextCase& c : kLowercaseCases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(normalized(type("Lowercase"), c.input), c.expected);
  }
}

const TextCase kStripAccentsCases[] = {
    {"Empty", "", ""},
    {"Ascii", "plain text", "plain text"},
    {"Decomposed", "cafe\u0301 nai\u0308ve", "cafe naive"},
    {"ComposedKept", "caf\u00E9", "caf\u00E9"},  // StripAccents does not decompose by itself
    {"StackedMarks", "a\u0323\u0302", "a"},
    {"SpacingMark", "\u0915\u093F", "\u0915"},                   // U+093F is Mc: tokenizers strips all of Mark
    {"EnclosingMark", "a\u20DD", "a"},                           // U+20DD is Me
    {"HangulJamo", "\u1112\u1161\u11AB", "\u1112\u1161\u11AB"},  // jamo are letters (Lo)
    {"Emoji", "\U0001F44D\U0001F3FD\u200D", "\U0001F44D\U0001F3FD\u200D"},
    {"VariationSelector", "\u2764\uFE0F", "\u2764"},  // U+FE0F is Mn
};

TEST(UnicodeNormalizerTest, StripAccentsRemovesMarks) {
  for (const TextCase& c : kStripAccentsCases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(normalized(type("StripAccents"), c.input), c.expected);
  }
}

// The BERT-style chain: decompose, drop the accents, lowercase.
const json kNfdStripLower = {{"type", "Sequence"},
                             {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}, {{"type", "Lowercase"}}}}};

const TextCase kSequenceCases[] = {
    {"Mixed", "H\u00E9ll\u00F2 W\u00D6RLD \u0386\u0388", "hello world \u03B1\u03B5"},
    {"DottedCapitalI", "\u0130STANBUL", "istanbul"},
    {"Decomposed", "CAFE\u0301", "cafe"},
    {"Ligature", "\uFB01", "\uFB01"},
    {"Hangul", "\uD55C", "\u1112\u1161\u11AB"},
};

TEST(UnicodeNormalizerTest, SequenceNfdStripAccentsLowercase) {
  for (const TextCase& c : kSequenceCases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(normalized(kNfdStripLower, c.input), c.expected);
  }
}

TEST(UnicodeNormalizerTest, OtherTypesStayUnsupported) {
  EXPECT_THROW_WITH(normalized(type("Precompiled"), "a"), UnsupportedError, "normalizer type 'Precompiled'");
  EXPECT_THROW_WITH(normalized(type("BertNormalizer"), "a"), UnsupportedError, "NFKC, NFKD, Lowercase");
}

// ---- inside a tokenizer ----

// The byte-level BPE reference tokenizer (Llama-3 style pre-tokenizer), with `normalizer` swapped in.
Tokenizer bytelevel_with(const json& normalizer) {
  json j = json::parse(tt::read_file(tt::data_dir() / "hf-reference" / "tokenizers" / "bytelevel-regex.json"));
  j["normalizer"] = normalizer;
  return Tokenizer::from_json(j.dump(), "bytelevel-regex.json");
}

TEST(NormalizerTokenizerTest, NfcMakesDecomposedTextEncodeLikeComposed) {
  const Tokenizer plain = bytelevel_with(nullptr);
  const Tokenizer nfc = bytelevel_with(type("NFC"));
  const std::string composed = "Am\u00E9lie au caf\u00E9";
  const std::string decomposed = "Ame\u0301lie au cafe\u0301";
  // Without a normalizer the two spellings are different bytes and so different tokens.
  ASSERT_NE(plain.encode("e\u0301"), plain.encode("\u00E9"));
  EXPECT_EQ(nfc.encode("e\u0301"), nfc.encode("\u00E9"));
  EXPECT_EQ(nfc.encode("e\u0301"), plain.encode("\u00E9"));
  EXPECT_EQ(nfc.encode(decomposed), plain.encode(composed));
  EXPECT_EQ(nfc.encode(composed), plain.encode(composed));
  EXPECT_EQ(nfc.decode(nfc.encode(decomposed)), composed);
}

TEST(NormalizerTokenizerTest, SequenceNfdStripAccentsLowercase) {
  const Tokenizer plain = bytelevel_with(nullptr);
  const Tokenizer bert_like = bytelevel_with(kNfdStripLower);
  EXPECT_EQ(bert_like.encode("H\u00E9ll\u00F2 W\u00D6RLD"), plain.encode("hello world"));
  EXPECT_EQ(bert_like.encode("\u0130STANBUL"), plain.encode("istanbul"));
}

// Added tokens with normalized=true are matched in normalized text, and their own content is
// normalized when the tokenizer loads: either spelling of the text finds either spelling of the token.
TEST(NormalizerTokenizerTest, NormalizedAddedTokenMatchesEitherSpelling) {
  json j = json::parse(tt::read_file(tt::data_dir() / "hf-reference" / "tokenizers" / "bytelevel-regex.json"));
  j["normalizer"] = type("NFC");
  j["added_tokens"].push_back({{"id", j["model"]["vocab"].size()},
                               {"content", "cafe\u0301"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  const Tokenizer t = Tokenizer::from_json(j.dump(), "bytelevel-regex.json");
  const std::optional<int32_t> id = t.token_to_id("cafe\u0301");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(t.encode("caf\u00E9"), std::vector<int32_t>{*id});
  EXPECT_EQ(t.encode("cafe\u0301"), std::vector<int32_t>{*id});
  std::vector<int32_t> expected = t.encode("un ");  // the text before the token: ordinary BPE
  expected.push_back(*id);
  EXPECT_EQ(t.encode("un cafe\u0301"), expected);
}

// encode() rejects ill-formed UTF-8 before any normalizer sees it, with or without ICU in the chain.
TEST(NormalizerTokenizerTest, InvalidUtf8IsRejectedBeforeNormalizing) {
  for (const json& normalizer : {json(type("NFC")), json(type("NFKD")), json(type("Lowercase")), kNfdStripLower}) {
    SCOPED_TRACE(normalizer.dump());
    const Tokenizer t = bytelevel_with(normalizer);
    EXPECT_THROW_WITH(t.encode("caf\xC3"), InvalidArgumentError, "not valid UTF-8 (byte 3)");
    EXPECT_THROW_WITH(t.encode("e\xCC"), InvalidArgumentError, "not valid UTF-8 (byte 1)");
    EXPECT_THROW_WITH(t.encode("\xED\xA0\x80"), InvalidArgumentError, "not valid UTF-8");  // a surrogate
  }
}

}  // namespace
}  // namespace tiergen
