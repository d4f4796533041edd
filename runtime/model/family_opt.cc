// OPT (facebook/opt-*): learned positions (offset 2), LayerNorm with bias, ReLU MLP, biases
// everywhere; opt-350m's shape adds project_in/project_out and post-LayerNorm.
#include "runtime/model/architecture.h"

namespace tiergen {

ArchitectureNames opt_architecture(const ModelSpec& spec) {
  ArchitectureNames a;
  const std::string d = "model.decoder.";
  a.embed = d + "embed_tokens";
  a.pos_embed = d + "embed_positions";
  if (spec.word_embed_proj_dim != spec.hidden_size) {
    a.project_in = d + "project_in";
    a.project_out = d + "project_out";
  }
  if (spec.final_norm) a.final_norm = d + "final_layer_norm";
  a.lm_head = "lm_head";
  a.layer = [d](int64_t i) {
    const std::string p = d + "layers." + std::to_string(i) + ".";
    LayerNames n;
    n.attn_norm = p + "self_attn_layer_norm";
    n.q = p + "self_attn.q_proj";
    n.k = p + "self_attn.k_proj";
    n.v = p + "self_attn.v_proj";
    n.o = p + "self_attn.out_proj";
    n.mlp_norm = p + "final_layer_norm";
    n.fc1 = p + "fc1";
    n.fc2 = p + "fc2";
    return n;
  };
  return a;
}

}  // namespace tiergen
