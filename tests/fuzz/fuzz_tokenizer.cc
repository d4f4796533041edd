// libFuzzer target: any bytes given as tokenizer.json must either load or raise a tiergen::Error,
// and a tokenizer that loads must encode and decode without crashing. Anything else (a crash, a
// sanitizer report, another exception type escaping) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace {

// Inputs that reach most code paths: spaces, digits, punctuation, non-ASCII, special-token
// look-alikes, and text that only byte fallback or <unk> can cover.
constexpr std::string_view kTexts[] = {
    "Hello world! It's 2026; we're testing.",
    "",
    " ",
    "  leading and trailing  \t\r\n",
    "na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\xA4\x97 <s> </s> <|endoftext|> <unk>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  try {
    const tiergen::Tokenizer tokenizer = tiergen::Tokenizer::from_json(json, "fuzz-input.json");
    for (std::string_view text : kTexts) {
      for (bool add_special : {false, true}) {
        try {
          const std::vector<int32_t> ids = tokenizer.encode(text, add_special);
          (void)tokenizer.decode(ids, false);
          (void)tokenizer.decode(ids, true);
        } catch (const tiergen::Error&) {
          // e.g. a post-processor id missing from the vocab: a clean error is the right outcome.
        }
      }
    }
    // Ids the tokenizer did not produce, including ones outside the vocab.
    const std::vector<int32_t> probe = {0, 1, 2, tokenizer.vocab_size() - 1, tokenizer.vocab_size(), -1};
    for (int32_t id : probe) {
      (void)tokenizer.id_to_token(id);
      (void)tokenizer.is_special(id);
      try {
        (void)tokenizer.decode(std::vector<int32_t>{id});
      } catch (const tiergen::Error&) {
      }
    }
  } catch (const tiergen::Error&) {
  }
  return 0;
}
