// config.json -> ModelSpec. Defaults follow the transformers 5 config classes (OPTConfig, LlamaConfig,
// MistralConfig, Qwen2Config, BloomConfig) so a checkpoint means here what it means there; the one
// deliberate difference is that the shape fields (vocab, hidden, layers, heads, MLP width, positions)
// are required: a config without them is broken, and silently building a 7B-shaped model is worse.
#include <string>

#include "runtime/core/error.h"
#include "runtime/model/families.h"
#include "runtime/model/json_fields.h"
#include "runtime/model/spec.h"

namespace tiergen {

namespace {

using json_fields::Fields;

// Bounds far past every published model (Llama-3.1-405B: 126 layers, hidden 16384, MLP 53248, 128k
// vocabulary) that stop a corrupt config.json from sizing gigabytes of per-layer structures before
// the checkpoint can contradict it.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxWidth = int64_t{1} << 20;
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxPositions = int64_t{1} << 24;

// transformers' ACT2FN names, restricted to what the kernels implement. "gelu" is the exact (erf)
// GELU; gelu_new, gelu_pytorch_tanh and gelu_fast are all the tanh approximation.
Activation parse_activation(const Fields& f, const char* key, const char* fallback) {
  std::string name = f.optional_string(key).value_or(fallback);
  if (name == "relu") return Activation::Relu;
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::GeluTanh;
  if (name == "silu" || name == "swish") return Activation::Silu;
  throw UnsupportedError(f.origin() + ": activation '" + name + "' (field '" + key +
                         "') is not supported (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, "
                         "gelu_fast, silu, swish)");
}

// transformers 5 writes `dtype`; older files `torch_dtype`. The new name wins when both are there.
DType parse_dtype(const Fields& f) {
  const char* key = f.has("dtype") ? "dtype" : "torch_dtype";
  auto name = f.optional_string(key);
  if (!name || *name == "float32") return DType::F32;
  if (*name == "float16") return DType::F16;
  if (*name == "bfloat16") return DType::BF16;
  throw UnsupportedError(f.origin() + ": " + key + " '" + *name +
                         "' is not supported (supported: float32, float16, bfloat16)");
}

// Heads and head_dim: `head_dim` may be given (Llama 3.2, Mistral Nemo) and then need not divide
// hidden_size; otherwise it is hidden_size / heads, which must be exact.
void set_heads(const Fields& f, ModelSpec& s, const char* heads_key, int64_t kv_heads,
               std::optional<int64_t> head_dim) {
  if (head_dim) {
    s.head_dim = *head_dim;
  } else {
    if (s.hidden_size % s.num_heads != 0) {
      f.fail(heads_key,
             "(" + std::to_string(s.num_heads) + ") must divide hidden_size (" + std::to_string(s.hidden_size) + ")");
    }
    s.head_dim = s.hidden_size / s.num_heads;
  }
  if (s.num_heads % kv_heads != 0) {
    f.fail("num_key_value_heads",
           "(" + std::to_string(kv_heads) + ") must divide " + heads_key + " (" + std::to_string(s.num_heads) + ")");
  }
  s.num_kv_heads = kv_heads;
}

}  // namespace

void parse_opt_config(const Fields& f, ModelSpec& s) {
  s.family = Family::Opt;
  s.vocab_size = f.positive_int("vocab_size", kMaxVocab);
  s.hidden_size = f.positive_int("hidden_size", kMaxWidth);
  s.num_layers = f.positive_int("num_hidden_layers", kMaxLayers);
  s.num_heads = f.positive_int("num_attention_heads", kMaxHeads);
  s.intermediate_size = f.positive_int("ffn_dim", kMaxWidth);
  s.max_position_embeddings = f.positive_int("max_position_embeddings", kMaxPositions);
  set_heads(f, s, "num_attention_heads", s.num_heads, std::nullopt);
  // opt-350m embeds at 512 and projects in/out of the 1024-wide decoder.
  s.word_embed_proj_dim = f.positive_int_or("word_embed_proj_dim", s.hidden_size, kMaxWidth);

  s.norm = NormKind::LayerNorm;
  s.norm_eps = 1e-5;  // OPT uses nn.LayerNorm's default; the config has no epsilon
  s.norm_bias = true;
  if (!f.bool_or("layer_norm_elementwise_affine", true)) {
    throw UnsupportedError(f.origin() +
                           ": layer_norm_elementwise_affine=false (LayerNorm without weights) "
                           "is not supported");
  }
  s.pre_norm = f.bool_or("do_layer_norm_before", true);
  // OPTDecoder builds the final norm only for pre-LN models (opt-350m has none).
  s.final_norm = s.pre_norm && !f.bool_or("_remove_final_layer_norm", false);
  s.embed_norm = false;

  s.position = PositionKind::Learned;
  s.position_offset = 2;  // OPTLearnedPositionalEmbedding: table of max_pos + 2 rows, index pos + 2
  s.activation = parse_activation(f, "activation_function", "relu");
  s.gated_mlp = false;
  bool bias = f.bool_or("enable_bias", true);
  s.qkv_bias = s.o_bias = s.mlp_bias = bias;
  s.tie_word_embeddings = f.bool_or("tie_word_embeddings", true);
}

namespace {

// RoPE as transformers 5 reads it (RotaryEmbeddingConfigMixin): a non-empty legacy `rope_scaling`
// replaces `rope_parameters`; `rope_theta` inside the dict wins over the top-level one, which wins
// over 10000; the type is `rope_type`, else the legacy `type`, else "default".
void parse_rope(const Fields& f, ModelSpec& s) {
  std::optional<Fields> rope = f.object("rope_scaling");
  if (!rope || rope->empty()) rope = f.object("rope_parameters");

  s.position = PositionKind::Rope;
  s.rope_theta = f.number_or("rope_theta", 10000.0);
  double partial = f.number_or("partial_rotary_factor", 1.0);
  s.rope_scaling = RopeScaling{};
  if (rope) {
    if (rope->has("full_attention") || rope->has("sliding_attention")) {
      throw UnsupportedError(f.origin() + ": per-layer-type RoPE parameters are not supported");
    }
    s.rope_theta = rope->number_or("rope_theta", s.rope_theta);
    partial = rope->number_or("partial_rotary_factor", partial);
  }
  if (!(s.rope_theta > 0.0)) f.fail("rope_theta", "must be a positive number");
  if (partial != 1.0) {
    throw UnsupportedError(f.origin() + ": partial_rotary_factor " + std::to_string(partial) +
                           " is not supported (only full rotary embeddings)");
  }
  if (!rope) return;

  const char* type_key = rope->has("rope_type") ? "rope_type" : "type";
  std::string type = rope->optional_string(type_key).value_or("default");
  RopeScaling& r = s.rope_scaling;
  if (type == "default") {
    r.type = RopeScaling::Type::Default;
  } else if (type == "linear") {
    r.type = RopeScaling::Type::Linear;
    r.factor = rope->positive_number("factor");
  } else if (type == "dynamic") {
    r.type = RopeScaling::Type::Dynamic;
    r.factor = rope->positive_number("factor");
    r.original_max_position_embeddings =
        rope->positive_int_or("original_max_position_embeddings", s.max_position_embeddings);
  } else if (type == "llama3") {
    r.type = RopeScaling::Type::Llama3;
    r.factor = rope->positive_number("factor");
    r.low_freq_factor = rope->positive_number("low_freq_factor");
    r.high_freq_factor = rope->positive_number("high_freq_factor");
    // standardize_rope_params: a top-level original_max_position_embeddings (Phi-3 style) wins,
    // then the dict's, then max_position_embeddings.
    r.original_max_position_embeddings =
        f.positive_int_or("original_max_position_embeddings",
                          rope->positive_int_or("original_max_position_embeddings", s.max_position_embeddings));
  } else {
    throw UnsupportedError(f.origin() + ": RoPE type '" + type + "' (field '" + rope->name(type_key) +
                           "') is not supported (supported: default, linear, dynamic, llama3)");
  }
}

// Sliding-window attention only changes results once a sequence is longer than the window, so a
// window that covers max_position_embeddings is plain causal attention.
void check_sliding_window(const Fields& f, const ModelSpec& s, std::optional<int64_t> window, const std::string& what) {
  if (window && *window < s.max_position_embeddings) {
    throw UnsupportedError(f.origin() + ": sliding-window attention (" + what + ", window " + std::to_string(*window) +
                           " < max_position_embeddings " + std::to_string(s.max_position_embeddings) +
                           ") is not supported");
  }
}

// Mistral/Qwen2 `sliding_window`: absent is the class default 4096, null is no window.
std::optional<int64_t> sliding_window(const Fields& f) {
  if (!f.written("sliding_window")) return 4096;
  if (!f.has("sliding_window")) return std::nullopt;
  return f.positive_int("sliding_window");
}

// Llama, Mistral and Qwen2 share one decoder: RMSNorm, RoPE, SwiGLU. They differ in biases and in
// the transformers defaults for kv heads and sliding windows.
void parse_rope_decoder(const Fields& f, ModelSpec& s) {
  s.vocab_size = f.positive_int("vocab_size", kMaxVocab);
  s.hidden_size = f.positive_int("hidden_size", kMaxWidth);
  s.num_layers = f.positive_int("num_hidden_layers", kMaxLayers);
  s.num_heads = f.positive_int("num_attention_heads", kMaxHeads);
  s.intermediate_size = f.positive_int("intermediate_size", kMaxWidth);
  s.max_position_embeddings = f.positive_int("max_position_embeddings", kMaxPositions);
  s.word_embed_proj_dim = s.hidden_size;

  // Absent num_key_value_heads takes the class default (Mistral 8, Qwen2 32); null means "= heads".
  int64_t kv_default = s.family == Family::Mistral ? 8 : s.family == Family::Qwen2 ? 32 : s.num_heads;
  int64_t kv_heads =
      f.written("num_key_value_heads") ? f.positive_int_or("num_key_value_heads", s.num_heads, kMaxHeads) : kv_default;
  std::optional<int64_t> head_dim;
  if (f.has("head_dim")) head_dim = f.positive_int("head_dim", kMaxWidth);
  set_heads(f, s, "num_attention_heads", kv_heads, head_dim);

  s.norm = NormKind::RmsNorm;
  s.norm_eps = f.number_or("rms_norm_eps", 1e-6);
  if (!(s.norm_eps > 0.0)) f.fail("rms_norm_eps", "must be a positive number");
  s.norm_bias = false;
  s.pre_norm = s.final_norm = true;
  s.embed_norm = false;
  s.activation = parse_activation(f, "hidden_act", "silu");
  s.gated_mlp = true;
  s.tie_word_embeddings = f.bool_or("tie_word_embeddings", false);
  parse_rope(f, s);

  switch (s.family) {
    case Family::Llama:
      s.qkv_bias = s.o_bias = f.bool_or("attention_bias", false);
      s.mlp_bias = f.bool_or("mlp_bias", false);
      break;
    case Family::Mistral: {
      s.qkv_bias = s.o_bias = s.mlp_bias = false;  // MistralAttention/MLP hard-code bias=False
      check_sliding_window(f, s, sliding_window(f), "sliding_window");
      break;
    }
    case Family::Qwen2: {
      s.qkv_bias = true;  // Qwen2Attention: q/k/v with bias, o_proj without
      s.o_bias = s.mlp_bias = false;
      if (!f.bool_or("use_sliding_window", false)) break;
      // Qwen2Config: layers from max_window_layers on slide, unless layer_types says otherwise.
      bool any_sliding = s.num_layers > f.optional_int("max_window_layers").value_or(28);
      if (const auto* types = f.find("layer_types")) {
        if (!types->is_array()) f.fail("layer_types", "must be a list of strings");
        any_sliding = false;
        for (const auto& t : *types) any_sliding |= t == "sliding_attention";
      }
      if (any_sliding) check_sliding_window(f, s, sliding_window(f), "use_sliding_window");
      break;
    }
    default:
      break;
  }
}

}  // namespace

void parse_bloom_config(const Fields& f, ModelSpec& s) {
  s.family = Family::Bloom;
  s.vocab_size = f.positive_int("vocab_size", kMaxVocab);
  // BloomConfig: a legacy `n_embed` overrides hidden_size; num_hidden_layers / num_attention_heads
  // are attribute_map aliases of n_layer / n_head, set after them, so they win when both appear.
  const char* hidden_key = f.written("n_embed") ? "n_embed" : "hidden_size";
  const char* layers_key = f.written("num_hidden_layers") ? "num_hidden_layers" : "n_layer";
  const char* heads_key = f.written("num_attention_heads") ? "num_attention_heads" : "n_head";
  s.hidden_size = f.positive_int(hidden_key, kMaxWidth);
  s.num_layers = f.positive_int(layers_key, kMaxLayers);
  s.num_heads = f.positive_int(heads_key, kMaxHeads);
  s.intermediate_size = 4 * s.hidden_size;  // BloomMLP: dense_h_to_4h
  s.max_position_embeddings = 0;            // ALiBi: no position table, no trained limit in config
  s.word_embed_proj_dim = s.hidden_size;
  set_heads(f, s, heads_key, s.num_heads, std::nullopt);

  s.norm = NormKind::LayerNorm;
  s.norm_eps = f.number_or("layer_norm_epsilon", 1e-5);
  if (!(s.norm_eps > 0.0)) f.fail("layer_norm_epsilon", "must be a positive number");
  s.norm_bias = true;
  s.pre_norm = s.final_norm = true;
  s.embed_norm = true;  // word_embeddings_layernorm
  if (f.bool_or("apply_residual_connection_post_layernorm", false)) {
    throw UnsupportedError(f.origin() + ": apply_residual_connection_post_layernorm=true is not supported");
  }
  s.position = PositionKind::Alibi;
  s.activation = Activation::GeluTanh;  // BloomGelu is the tanh approximation
  s.gated_mlp = false;
  s.qkv_bias = s.o_bias = s.mlp_bias = true;
  s.tie_word_embeddings = f.bool_or("tie_word_embeddings", true);
}

void parse_llama_config(const Fields& f, ModelSpec& s) {
  s.family = Family::Llama;
  parse_rope_decoder(f, s);
}
void parse_mistral_config(const Fields& f, ModelSpec& s) {
  s.family = Family::Mistral;
  parse_rope_decoder(f, s);
}
void parse_qwen2_config(const Fields& f, ModelSpec& s) {
  s.family = Family::Qwen2;
  parse_rope_decoder(f, s);
}

ModelSpec parse_model_config(const std::string& json_text, const std::string& origin) {
  json_fields::Json doc = json_fields::parse_object(json_text, origin);
  Fields f(doc, origin);

  if (!f.has("model_type")) {
    throw FormatError(origin + ": field 'model_type' is missing (supported: " + supported_model_types() + ")");
  }
  ModelSpec s;
  s.model_type = f.optional_string("model_type").value_or("");
  const FamilyInfo* family = find_family(s.model_type);
  if (!family)
    throw UnsupportedError(origin + ": model_type '" + s.model_type +
                           "' is not supported (supported: " + supported_model_types() + ")");
  family->parse(f, s);
  // GPTQ/AWQ/bitsandbytes checkpoints keep these shapes but store packed integer weights.
  if (f.has("quantization_config")) {
    throw UnsupportedError(origin + ": quantized checkpoints (quantization_config) are not supported");
  }

  s.dtype = parse_dtype(f);
  const FamilyInfo& d = family_info(s.family);
  s.bos_token_id = f.written("bos_token_id") ? f.token_id("bos_token_id") : d.bos;
  s.pad_token_id = f.written("pad_token_id") ? f.token_id("pad_token_id") : d.pad;
  if (f.written("eos_token_id")) {
    s.eos_token_ids = f.token_ids("eos_token_id");
  } else if (d.eos) {
    s.eos_token_ids = {*d.eos};
  }
  return s;
}

ModelSpec load_model_config(const std::filesystem::path& config_json) {
  return parse_model_config(json_fields::read_text_file(config_json), config_json.string());
}

int64_t ModelSpec::num_params() const { return end_params() + num_layers * layer_params(); }

int64_t ModelSpec::end_params(ModelEnds ends) const {
  const int64_t h = hidden_size;
  const int64_t norm_params = norm_bias ? 2 * h : h;
  const int64_t table = vocab_size * word_embed_proj_dim;                             // embed_tokens, lm_head (V, E)
  const int64_t projection = word_embed_proj_dim != h ? h * word_embed_proj_dim : 0;  // OPT project_in, _out
  int64_t embedding = table + projection;
  if (position == PositionKind::Learned) embedding += (max_position_embeddings + position_offset) * h;
  if (embed_norm) embedding += norm_params;
  const int64_t head = table + projection + (final_norm ? norm_params : 0);
  if (ends.embedding && ends.head) return embedding + head - (tie_word_embeddings ? table : 0);
  return (ends.embedding ? embedding : 0) + (ends.head ? head : 0);
}

int64_t ModelSpec::layer_params() const {
  const int64_t h = hidden_size;
  const int64_t q_width = num_heads * head_dim;
  const int64_t kv_width = num_kv_heads * head_dim;
  const int64_t norm_params = norm_bias ? 2 * h : h;
  int64_t layer = h * q_width + 2 * h * kv_width + q_width * h;  // q, k, v, o weights
  if (qkv_bias) layer += q_width + 2 * kv_width;
  if (o_bias) layer += h;
  const int64_t mlp_mats = gated_mlp ? 3 : 2;  // gate/up/down vs fc1/fc2
  layer += mlp_mats * h * intermediate_size;
  if (mlp_bias) layer += (mlp_mats - 1) * intermediate_size + h;
  return layer + 2 * norm_params;  // before/after attention
}

}  // namespace tiergen
