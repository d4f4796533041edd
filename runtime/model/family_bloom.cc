// BLOOM: ALiBi instead of positions, LayerNorm after the embedding, fused query_key_value laid out
// (n_heads, 3, head_dim), GELU (tanh) MLP, tied LM head.
#include "runtime/model/architecture.h"

namespace tiergen {

ArchitectureNames bloom_architecture(const ModelSpec& spec) {
  ArchitectureNames a;
  a.embed = "transformer.word_embeddings";
  a.embed_norm = "transformer.word_embeddings_layernorm";
  a.final_norm = "transformer.ln_f";
  a.lm_head = "lm_head";
  a.qkv_interleaved_per_head = true;
  a.layer = [](int64_t i) {
    const std::string p = "transformer.h." + std::to_string(i) + ".";
    LayerNames n;
    n.attn_norm = p + "input_layernorm";
    n.qkv = p + "self_attention.query_key_value";
    n.o = p + "self_attention.dense";
    n.mlp_norm = p + "post_attention_layernorm";
    n.fc1 = p + "mlp.dense_h_to_4h";
    n.fc2 = p + "mlp.dense_4h_to_h";
    return n;
  };
  return a;
}

}  // namespace tiergen
