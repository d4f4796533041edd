// Shapes of well-known checkpoints, for dummy-weight runs and memory planning without a download.
// Each preset is the relevant part of the model's Hugging Face config.json, run through the same
// parser as a real file, so a preset can never mean something a config.json would not.
#include <algorithm>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/json_fields.h"
#include "runtime/model/spec.h"

namespace tiergen {

namespace {

using json_fields::Json;

struct Preset {
  const char* name;
  Json config;
};

// facebook/opt-*: fp16, vocab 50272, 2048 positions, ReLU, tied embeddings.
Json opt(int64_t hidden, int64_t layers, int64_t heads, int64_t ffn) {
  return Json{{"model_type", "opt"},
              {"hidden_size", hidden},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"ffn_dim", ffn},
              {"vocab_size", 50272},
              {"max_position_embeddings", 2048},
              {"activation_function", "relu"},
              {"do_layer_norm_before", true},
              {"word_embed_proj_dim", hidden},
              {"torch_dtype", "float16"},
              {"bos_token_id", 2},
              {"eos_token_id", 2},
              {"pad_token_id", 1}};
}

// meta-llama/Llama-2-*-hf: fp16, vocab 32000, 4096 positions, rms_norm_eps 1e-5, untied.
Json llama2(int64_t hidden, int64_t layers, int64_t heads, int64_t kv_heads, int64_t ffn) {
  return Json{{"model_type", "llama"},
              {"hidden_size", hidden},
              {"num_hidden_layers", layers},
              {"num_attention_heads", heads},
              {"num_key_value_heads", kv_heads},
              {"intermediate_size", ffn},
              {"vocab_size", 32000},
              {"max_position_embeddings", 4096},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", false},
              {"torch_dtype", "float16"},
              {"bos_token_id", 1},
              {"eos_token_id", 2}};
}

const std::vector<Preset>& presets() {
  static const std::vector<Preset> table = [] {
    // opt-350m is the odd one: post-LN (no final norm) and 512-wide embeddings projected to 1024.
    Json opt350m = opt(1024, 24, 16, 4096);
    opt350m["do_layer_norm_before"] = false;
    opt350m["word_embed_proj_dim"] = 512;
    return std::vector<Preset>{
        {"opt-125m", opt(768, 12, 12, 3072)},
        {"opt-350m", opt350m},
        {"opt-1.3b", opt(2048, 24, 32, 8192)},
        {"opt-2.7b", opt(2560, 32, 32, 10240)},
        {"opt-6.7b", opt(4096, 32, 32, 16384)},
        {"opt-13b", opt(5120, 40, 40, 20480)},
        {"opt-30b", opt(7168, 48, 56, 28672)},
        {"opt-66b", opt(9216, 64, 72, 36864)},
        {"opt-175b", opt(12288, 96, 96, 49152)},
        {"llama-2-7b", llama2(4096, 32, 32, 32, 11008)},
        {"llama-2-13b", llama2(5120, 40, 40, 40, 13824)},
        {"llama-2-70b", llama2(8192, 80, 64, 8, 28672)},
    };
  }();
  return table;
}

}  // namespace

std::vector<std::string> preset_model_names() {
  std::vector<std::string> names;
  for (const Preset& p : presets()) names.emplace_back(p.name);
  return names;
}

ModelSpec preset_model_spec(const std::string& name) {
  const auto& table = presets();
  auto it = std::find_if(table.begin(), table.end(), [&](const Preset& p) { return name == p.name; });
  if (it == table.end()) {
    std::string known;
    for (const Preset& p : table) known += (known.empty() ? "" : ", ") + std::string(p.name);
    throw InvalidArgumentError("unknown model preset '" + name + "' (known: " + known + ")");
  }
  return parse_model_config(it->config.dump(), "preset " + name);
}

}  // namespace tiergen
