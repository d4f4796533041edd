// Llama-2/3 and Mistral: RMSNorm, RoPE, SwiGLU MLP, optional GQA; no biases unless the config
// says attention_bias / mlp_bias.
#include "runtime/model/architecture.h"

namespace tiergen {

ArchitectureNames llama_architecture(const ModelSpec& spec) {
  ArchitectureNames a;
  a.embed = "model.embed_tokens";
  a.final_norm = "model.norm";
  a.lm_head = "lm_head";
  a.layer = [](int64_t i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerNames n;
    n.attn_norm = p + "input_layernorm";
    n.q = p + "self_attn.q_proj";
    n.k = p + "self_attn.k_proj";
    n.v = p + "self_attn.v_proj";
    n.o = p + "self_attn.o_proj";
    n.mlp_norm = p + "post_attention_layernorm";
    n.fc1 = p + "mlp.gate_proj";
    n.up = p + "mlp.up_proj";
    n.fc2 = p + "mlp.down_proj";
    return n;
  };
  return a;
}

}  // namespace tiergen
