// Decoders: turn the token strings of decoded ids back into text (tokenizer.json "decoder"):
// undo the byte-level mapping, turn "▁" back into spaces, reassemble <0xNN> byte tokens.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace tiergen::tok {

class Where;

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the list of token strings; decode() concatenates what is left at the end.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a null decoder. Supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip,
// Metaspace, BPEDecoder.
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const Where& where);

}  // namespace tiergen::tok
