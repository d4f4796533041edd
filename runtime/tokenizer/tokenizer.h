// Tokenizer built from a Hugging Face tokenizer.json: normalizer, pre-tokenizer, BPE model
// (byte-level or SentencePiece-style with byte fallback), added/special tokens, post-processor and
// decoder. Encoding and decoding match the `tokenizers` library for the supported components;
// an unsupported component is an UnsupportedError naming it, a malformed file a FormatError.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tiergen {

class Tokenizer {
 public:
  static Tokenizer from_file(const std::filesystem::path& tokenizer_json);
  static Tokenizer from_json(std::string_view json_text, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special_tokens=true applies the post-processor (e.g. prepends BOS), as transformers does
  // when a prompt is encoded for generation.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const;  // largest id + 1 over vocab and added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // The file (or origin) it was loaded from, for error messages.
  const std::string& origin() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiergen
