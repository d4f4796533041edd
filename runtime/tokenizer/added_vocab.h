// Added tokens (tokenizer.json "added_tokens"): strings matched in the text before the model sees
// it, special ones (<s>, <|begin_of_text|>) and user-added ones. Ids and matching follow
// tokenizers' AddedVocabulary.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/tokenizer/bpe_model.h"

namespace tiergen::tok {

class Normalizer;

struct AddedToken {
  std::string content;
  bool single_word = false;  // match only where not inside a word
  bool lstrip = false;       // swallow whitespace on the left
  bool rstrip = false;       // swallow whitespace on the right
  bool normalized = true;    // match in the normalized text rather than the raw text
  bool special = false;
};

// A piece of text after splitting around added tokens: [begin, end) bytes, and the token's id or -1.
struct Segment {
  size_t begin;
  size_t end;
  int32_t id;
};

class AddedVocab {
 public:
  // Assigns ids as tokenizers does when it loads tokenizer.json: a token that is in the model
  // vocab takes that id, a new one the next id after the model vocab (the "id" field of the file
  // is not used; the two agree for files that tokenizers wrote).
  void add(const std::vector<AddedToken>& tokens, const BpeModel& model, const Normalizer* normalizer);

  // Splits `text` around the added tokens matched in it: those with normalized=false when
  // `normalized` is false (matched in raw text), the others when true. Leftmost-longest, like
  // tokenizers' Aho-Corasick matching, with single_word/lstrip/rstrip applied.
  void split(std::string_view text, bool normalized, std::vector<Segment>& out) const;

  std::optional<int32_t> token_to_id(std::string_view content) const;
  const AddedToken* token(int32_t id) const;
  // The string decode() uses for `id`: its normalized form for normalized tokens.
  const std::string* decode_form(int32_t id) const;
  bool is_special_content(std::string_view content) const {
    return special_.count(std::string(content)) != 0;
  }
  int32_t max_id() const { return max_id_; }

 private:
  // A byte trie over the patterns of one kind (normalized or raw).
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;
      int32_t id = -1;  // token id when a pattern ends here
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};

    void insert(std::string_view pattern, int32_t id);
    // Longest pattern starting at `pos`: its length, or 0 (patterns are never empty).
    size_t longest_at(std::string_view text, size_t pos, int32_t& id) const;
  };

  void rebuild_tries();

  StringMap by_content_;
  std::unordered_map<int32_t, AddedToken> by_id_;
  std::unordered_map<int32_t, std::string> normalized_form_;  // only where it differs from content
  std::unordered_set<std::string> special_;
  Trie raw_trie_, normalized_trie_;
  int32_t max_id_ = -1;
};

}  // namespace tiergen::tok
