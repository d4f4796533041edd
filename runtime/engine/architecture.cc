#include "runtime/engine/architecture.h"

#include "runtime/core/error.h"

namespace tiergen {

ArchitectureNames architecture_names(const ModelSpec& spec) {
  switch (spec.family) {
    case Family::Opt:
      return opt_architecture(spec);
    case Family::Llama:
    case Family::Mistral:
      return llama_architecture(spec);
    case Family::Qwen2:
      return qwen2_architecture(spec);
    case Family::Bloom:
      return bloom_architecture(spec);
  }
  throw UnsupportedError("no architecture for model_type '" + spec.model_type + "'");
}

}  // namespace tiergen
