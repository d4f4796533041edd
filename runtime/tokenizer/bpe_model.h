// The BPE model of tokenizer.json: vocab, ranked merges, and the options that make it GPT-2 style
// (byte-level alphabet), Llama-3 style (ignore_merges) or SentencePiece style (byte_fallback,
// unk_token, fuse_unk).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tiergen::tok {

class Where;

// Lets unordered maps keyed by std::string be probed with a string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // `j` is the "model" object; errors name `where`.
  BpeModel(const nlohmann::json& j, const Where& where);

  // Appends the ids of one pre-token (non-empty, valid UTF-8). Thread-safe.
  void tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  size_t vocab_entries() const { return vocab_.size(); }
  int32_t max_id() const { return max_id_; }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t unk_id() const;

  std::string origin_;
  StringMap vocab_;
  std::unordered_map<int32_t, const std::string*> vocab_r_;  // points at vocab_'s keys
  int32_t max_id_ = -1;
  // (left id, right id) -> (rank, merged id); the key packs both ids.
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;
  std::optional<std::string> unk_token_;
  std::optional<std::string> continuing_subword_prefix_;
  std::optional<std::string> end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // ids of "<0x00>".."<0xFF>" for byte_fallback, -1 where absent

  // Words repeat a lot in real text; caching their ids skips the merge loop. Bounded like
  // tokenizers' cache (entries and word length), guarded so const methods stay thread-safe.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace tiergen::tok
