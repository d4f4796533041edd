// Post-processors: add the special tokens a model expects around an encoded sequence (BOS for
// Llama-3, <s> ... </s> for RoBERTa). Applied only when encode() is asked to add special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <vector>

namespace tiergen::tok {

class Where;

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;  // single sequence
};

// nullptr for a null post-processor. Supported: TemplateProcessing, ByteLevel, RobertaProcessing,
// BertProcessing, Sequence.
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const Where& where);

}  // namespace tiergen::tok
