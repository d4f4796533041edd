// ModelSpec: what a Hugging Face config.json says, normalised across families. Everything the engine
// needs to build a model's layer list comes from here; nothing downstream reads config.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"

namespace tiergen {

enum class Family { Opt, Llama, Mistral, Qwen2, Bloom };
enum class NormKind { LayerNorm, RmsNorm };
enum class PositionKind { Learned, Rope, Alibi };
enum class Activation { Relu, GeluTanh, Gelu, Silu };

const char* family_name(Family f);

struct RopeScaling {
  enum class Type { Default, Linear, Dynamic, Llama3 };
  Type type = Type::Default;
  double factor = 1.0;
  double low_freq_factor = 1.0;                  // llama3
  double high_freq_factor = 4.0;                 // llama3
  int64_t original_max_position_embeddings = 0;  // llama3, dynamic (0: use max_position_embeddings)
};

// The parts of a model besides its decoder layers that a run holds: all of them when it runs the
// model alone; a pipeline stage the embedding side if it is the first, the head side if the last.
struct ModelEnds {
  bool embedding = true;  // the token table, learned positions, the embedding norm, OPT's project_in
  bool head = true;       // the final norm, OPT's project_out, the LM head (the token table where tied)
};

struct ModelSpec {
  std::string model_type;  // as written in config.json ("llama", "opt", ...)
  Family family = Family::Llama;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // == num_heads without GQA
  int64_t head_dim = 0;      // explicit `head_dim` or hidden_size / num_heads
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;  // 0 for ALiBi (BLOOM): no position table, no limit in config
  int64_t word_embed_proj_dim = 0;      // OPT: embedding width; project_in/out when != hidden_size

  NormKind norm = NormKind::RmsNorm;
  double norm_eps = 1e-5;
  bool pre_norm = true;     // OPT do_layer_norm_before=false: post-LN
  bool final_norm = true;   // a norm after the last layer
  bool embed_norm = false;  // BLOOM word_embeddings_layernorm

  PositionKind position = PositionKind::Rope;
  int64_t position_offset = 0;  // OPT learned positions start at index 2
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;

  Activation activation = Activation::Silu;
  bool gated_mlp = true;  // gate_proj/up_proj/down_proj (SwiGLU) vs fc1/fc2
  bool qkv_bias = false;
  bool o_bias = false;
  bool mlp_bias = false;
  bool norm_bias = false;  // LayerNorm has a bias
  bool tie_word_embeddings = false;

  DType dtype = DType::F32;  // the checkpoint's declared dtype (`torch_dtype` / `dtype`)
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::vector<int64_t> eos_token_ids;

  // Parameter count implied by the shapes (embeddings counted once when tied).
  int64_t num_params() const;
  // The parameters of one decoder layer.
  int64_t layer_params() const;
  // The parameters of `ends` (a tied token table once where both are held).
  int64_t end_params(ModelEnds ends = {}) const;
};

// Parses config.json text. `origin` names the file in errors. Unknown model_type, a missing or
// mistyped required field, or inconsistent dimensions throw FormatError/UnsupportedError naming
// `origin` and the field.
ModelSpec parse_model_config(const std::string& json_text, const std::string& origin);
ModelSpec load_model_config(const std::filesystem::path& config_json);

// Shapes of well-known models for dummy-weight runs: "opt-125m" ... "opt-175b",
// "llama-2-7b", "llama-2-13b", "llama-2-70b". Unknown names throw InvalidArgumentError listing
// the known ones.
ModelSpec preset_model_spec(const std::string& name);
std::vector<std::string> preset_model_names();

// generation_config.json
struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;  // `eos_token_id` may be an int or a list
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<int64_t> top_k;
  std::optional<double> top_p;
  std::optional<double> repetition_penalty;
  std::optional<int64_t> max_new_tokens;
};
GenerationConfig parse_generation_config(const std::string& json_text, const std::string& origin);
// Missing file: an empty GenerationConfig (it is optional in a model folder).
GenerationConfig load_generation_config(const std::filesystem::path& file);

}  // namespace tiergen
