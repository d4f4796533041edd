#include "runtime/model/families.h"

#include <iterator>

#include "runtime/core/error.h"

namespace tiergen {
namespace {

// Qwen2 leaves its special tokens to the tokenizer; the others default as their config classes do.
constexpr FamilyInfo kFamilies[] = {
    {"opt", Family::Opt, parse_opt_config, opt_architecture, 2, 1, 2},
    {"llama", Family::Llama, parse_llama_config, llama_architecture, 1, std::nullopt, 2},
    {"mistral", Family::Mistral, parse_mistral_config, llama_architecture, 1, std::nullopt, 2},
    {"qwen2", Family::Qwen2, parse_qwen2_config, qwen2_architecture, std::nullopt, std::nullopt, std::nullopt},
    {"bloom", Family::Bloom, parse_bloom_config, bloom_architecture, 1, std::nullopt, 2},
};

}  // namespace

std::span<const FamilyInfo> model_families() { return kFamilies; }

const FamilyInfo* find_family(const std::string& model_type) {
  for (const FamilyInfo& f : kFamilies)
    if (model_type == f.model_type) return &f;
  return nullptr;
}

const FamilyInfo& family_info(Family family) {
  for (const FamilyInfo& f : kFamilies)
    if (f.family == family) return f;
  throw InternalError("family " + std::to_string(static_cast<int>(family)) + " is not registered");
}

std::string supported_model_types() {
  std::string s;
  for (const FamilyInfo& f : kFamilies) s += (s.empty() ? "" : ", ") + std::string(f.model_type);
  return s;
}

const char* family_name(Family f) { return family_info(f).model_type; }

ArchitectureNames architecture_names(const ModelSpec& spec) { return family_info(spec.family).names(spec); }

}  // namespace tiergen
