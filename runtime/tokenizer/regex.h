// PCRE2 regexes for tokenizer patterns (the Split pre-tokenizer, Replace, the GPT-2 split). The
// `tokenizers` library uses Oniguruma; PCRE2 with UTF + UCP accepts the same patterns that
// tokenizer.json files use (\p{L}, (?i:...), lookahead) and find_all walks matches the way
// Oniguruma's find_iter does, so empty matches split text at the same places.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tiergen::tok {

class Where;

class Regex {
 public:
  // `what` names the pattern in errors ("<file>: pre_tokenizer.pattern"); a pattern that does not
  // compile is a FormatError.
  Regex(std::string_view pattern, std::string what);

  // A pattern matching `literal` exactly (the `{"String": ...}` form of tokenizer.json patterns).
  static std::string escape(std::string_view literal);
  // Rewrites the Oniguruma syntax that PCRE2 reads differently (nested character classes, \h);
  // constructs it cannot express are an UnsupportedError naming `what`.
  static std::string from_oniguruma(std::string_view pattern, const std::string& what);

  // All matches as [start, end) byte offsets, left to right, non-overlapping. `text` must be valid
  // UTF-8. A pathological pattern that exceeds PCRE2's match limit is a FormatError.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  bool search(std::string_view text, size_t from, size_t& start, size_t& end) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;  // immutable after compilation, so matching is thread-safe
};

// Parses a tokenizer.json pattern, `{"String": "..."}` or `{"Regex": "..."}`, into a Regex.
Regex pattern_from_json(const nlohmann::json& j, const Where& where);

}  // namespace tiergen::tok
