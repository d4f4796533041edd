// Qwen2: Llama's layout and names; differs only in data (q/k/v biases, tied embeddings, large RoPE
// theta), which ModelSpec carries.
#include "runtime/model/architecture.h"

namespace tiergen {

ArchitectureNames qwen2_architecture(const ModelSpec& spec) { return llama_architecture(spec); }

}  // namespace tiergen
