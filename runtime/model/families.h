// The model families, registered in one table (families.cc): a config.json `model_type`, the
// Family it builds, how its config fields become a ModelSpec, how its checkpoint names map onto the
// generic layer list, and the special-token ids its transformers class defaults to. Adding a family
// is a family_*.cc with its parser and names, an enum value, and one row of that table.
// Internal to tiergen_model: the rest of the tree sees ModelSpec and architecture_names().
#pragma once

#include <optional>
#include <span>
#include <string>

#include "runtime/model/architecture.h"
#include "runtime/model/json_fields.h"
#include "runtime/model/spec.h"

namespace tiergen {

struct FamilyInfo {
  const char* model_type;  // as config.json writes it
  Family family;
  // config.json's fields -> the family's part of the spec (shapes, norms, positions, biases...).
  void (*parse)(const json_fields::Fields& f, ModelSpec& s);
  // The checkpoint's tensor names.
  ArchitectureNames (*names)(const ModelSpec& spec);
  // Special-token ids when config.json leaves them out: the transformers 5 class defaults.
  std::optional<int64_t> bos, pad, eos;
};

std::span<const FamilyInfo> model_families();
// The row of `model_type`, or null.
const FamilyInfo* find_family(const std::string& model_type);
const FamilyInfo& family_info(Family f);
// "opt, llama, mistral, qwen2, bloom"
std::string supported_model_types();

// The parsers, one per family file (config.cc, shared by the RoPE decoder families).
void parse_opt_config(const json_fields::Fields& f, ModelSpec& s);
void parse_llama_config(const json_fields::Fields& f, ModelSpec& s);
void parse_mistral_config(const json_fields::Fields& f, ModelSpec& s);
void parse_qwen2_config(const json_fields::Fields& f, ModelSpec& s);
void parse_bloom_config(const json_fields::Fields& f, ModelSpec& s);

}  // namespace tiergen
