// Pre-tokenizers: cut normalized text into the pieces that the BPE model encodes one by one
// (tokenizer.json "pre_tokenizer"), e.g. GPT-2's regex split followed by the byte-level mapping.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace tiergen::tok {

class Where;

struct PreToken {
  std::string text;
  // The piece begins at offset 0 of the original text: Metaspace's prepend_scheme "first" adds
  // its "▁" only there.
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their sub-pieces, in order; empty sub-pieces are dropped.
  virtual void pre_tokenize(std::vector<PreToken>& pieces) const = 0;
};

// nullptr for a null pre-tokenizer. Supported: Sequence, Split, ByteLevel, Metaspace, Whitespace,
// WhitespaceSplit.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const Where& where);

}  // namespace tiergen::tok
