// Architecture: how a family's checkpoint names map onto the generic layer list
//   [InputEmbed, (Attention_i, Mlp_i) x num_layers, OutputHead]
// Attention and MLP are separate layers (FlexGen's granularity), so later offloading can stream and
// place them independently. A family is data: one small family_*.cc that fills ArchitectureNames,
// registered with its config parser in runtime/model/families.cc.
#pragma once

#include <functional>
#include <string>

#include "runtime/model/spec.h"

namespace tiergen {

// Checkpoint tensor prefixes (without ".weight"/".bias"); empty = the model has no such tensor.
struct LayerNames {
  std::string attn_norm;  // norm before (pre-LN) or after (post-LN) attention
  std::string q, k, v;    // separate projections ...
  std::string qkv;        // ... or one fused projection
  std::string o;
  std::string mlp_norm;
  std::string fc1;  // non-gated: up projection;  gated: gate_proj
  std::string up;   // gated only
  std::string fc2;  // down projection
};

struct ArchitectureNames {
  std::string embed;       // token embedding table (V, word_embed_proj_dim)
  std::string pos_embed;   // learned positions (max_pos + offset, C)
  std::string embed_norm;  // BLOOM word_embeddings_layernorm
  std::string project_in;  // OPT when word_embed_proj_dim != hidden
  std::string project_out;
  std::string final_norm;
  std::string lm_head;  // empty or absent in the checkpoint with tied embeddings: use `embed`
  // BLOOM fuses q, k, v into (n_heads, 3, head_dim) interleaved rows.
  bool qkv_interleaved_per_head = false;
  std::function<LayerNames(int64_t layer)> layer;
};

ArchitectureNames architecture_names(const ModelSpec& spec);

// One function per family file.
ArchitectureNames opt_architecture(const ModelSpec& spec);
ArchitectureNames llama_architecture(const ModelSpec& spec);  // Llama and Mistral
ArchitectureNames qwen2_architecture(const ModelSpec& spec);
ArchitectureNames bloom_architecture(const ModelSpec& spec);

}  // namespace tiergen
