// Normalizers: string-to-string rewrites applied to the text between added tokens before
// pre-tokenization (tokenizer.json "normalizer"). Offsets are not tracked: tiergen needs ids only.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace tiergen::tok {

class Where;

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;  // `text` is valid UTF-8 and stays so
};

// nullptr for a null normalizer. Supported: Sequence, Prepend, Replace, Strip, ByteLevel, NFC, NFD,
// NFKC, NFKD, Lowercase, StripAccents (the Unicode ones through ICU, see unicode_normalize.h).
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const Where& where);

}  // namespace tiergen::tok
