// config.json / generation_config.json parsing: the reference checkpoints, each synthetic form HF
// writes (legacy rope_scaling, rope_parameters, aliases), parameter counts and presets.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/core/error.h"
#include "runtime/model/spec.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using nlohmann::json;
using testing::hf_model_dir;

ModelSpec reference(const std::string& name) { return load_model_config(hf_model_dir(name) / "config.json"); }

// The smallest config.json each family accepts; tests add or override fields.
json llama_base() {
  return {{"model_type", "llama"},         {"vocab_size", 100},        {"hidden_size", 64},
          {"num_hidden_layers", 2},        {"num_attention_heads", 4}, {"intermediate_size", 128},
          {"max_position_embeddings", 256}};
}

ModelSpec parse(const json& j) { return parse_model_config(j.dump(), "test.json"); }

// ---- the reference checkpoints ----------------------------------------------------------------

TEST(ConfigReference, OptTiny) {
  ModelSpec s = reference("opt-tiny");
  EXPECT_EQ(s.family, Family::Opt);
  EXPECT_STREQ(family_name(s.family), "opt");
  EXPECT_EQ(s.vocab_size, 50272);
  EXPECT_EQ(s.hidden_size, 64);
  EXPECT_EQ(s.num_layers, 3);
  EXPECT_EQ(s.num_heads, 4);
  EXPECT_EQ(s.num_kv_heads, 4);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_EQ(s.intermediate_size, 256);
  EXPECT_EQ(s.max_position_embeddings, 256);
  EXPECT_EQ(s.word_embed_proj_dim, 64);
  EXPECT_EQ(s.norm, NormKind::LayerNorm);
  EXPECT_TRUE(s.norm_bias);
  EXPECT_DOUBLE_EQ(s.norm_eps, 1e-5);
  EXPECT_TRUE(s.pre_norm);
  EXPECT_TRUE(s.final_norm);
  EXPECT_FALSE(s.embed_norm);
  EXPECT_EQ(s.position, PositionKind::Learned);
  EXPECT_EQ(s.position_offset, 2);
  EXPECT_EQ(s.activation, Activation::Relu);
  EXPECT_FALSE(s.gated_mlp);
  EXPECT_TRUE(s.qkv_bias && s.o_bias && s.mlp_bias);
  EXPECT_TRUE(s.tie_word_embeddings);
  EXPECT_EQ(s.dtype, DType::F16);
  EXPECT_EQ(s.bos_token_id, 2);
  EXPECT_EQ(s.pad_token_id, 1);
  EXPECT_EQ(s.eos_token_ids, std::vector<int64_t>{2});
}

TEST(ConfigReference, OptTinyPostLnProj) {
  ModelSpec s = reference("opt-tiny-postln-proj");
  EXPECT_EQ(s.family, Family::Opt);
  EXPECT_EQ(s.hidden_size, 64);
  EXPECT_EQ(s.num_layers, 2);
  EXPECT_EQ(s.word_embed_proj_dim, 32);
  EXPECT_FALSE(s.pre_norm);
  EXPECT_FALSE(s.final_norm);  // OPTDecoder has no final norm for post-LN models
}

TEST(ConfigReference, LlamaTinyGqaWithLlama3RopeParameters) {
  ModelSpec s = reference("llama-tiny-gqa");
  EXPECT_EQ(s.family, Family::Llama);
  EXPECT_EQ(s.model_type, "llama");
  EXPECT_EQ(s.vocab_size, 1200);
  EXPECT_EQ(s.hidden_size, 64);
  EXPECT_EQ(s.num_layers, 3);
  EXPECT_EQ(s.num_heads, 8);
  EXPECT_EQ(s.num_kv_heads, 2);
  EXPECT_EQ(s.head_dim, 8);
  EXPECT_EQ(s.intermediate_size, 172);
  EXPECT_EQ(s.max_position_embeddings, 512);
  EXPECT_EQ(s.norm, NormKind::RmsNorm);
  EXPECT_FALSE(s.norm_bias);
  EXPECT_DOUBLE_EQ(s.norm_eps, 1e-5);
  EXPECT_EQ(s.position, PositionKind::Rope);
  EXPECT_DOUBLE_EQ(s.rope_theta, 5e5);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_DOUBLE_EQ(s.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(s.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(s.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(s.rope_scaling.original_max_position_embeddings, 64);
  EXPECT_EQ(s.activation, Activation::Silu);
  EXPECT_TRUE(s.gated_mlp);
  EXPECT_FALSE(s.qkv_bias || s.o_bias || s.mlp_bias);
  EXPECT_FALSE(s.tie_word_embeddings);
  EXPECT_EQ(s.dtype, DType::BF16);
  EXPECT_EQ(s.bos_token_id, 0);
  EXPECT_FALSE(s.pad_token_id.has_value());
  EXPECT_EQ(s.eos_token_ids, std::vector<int64_t>{1});
}

TEST(ConfigReference, MistralTiny) {
  ModelSpec s = reference("mistral-tiny");
  EXPECT_EQ(s.family, Family::Mistral);
  EXPECT_EQ(s.vocab_size, 800);
  EXPECT_EQ(s.num_heads, 4);
  EXPECT_EQ(s.num_kv_heads, 4);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_EQ(s.intermediate_size, 160);
  EXPECT_DOUBLE_EQ(s.norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(s.rope_theta, 10000.0);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Default);
  EXPECT_FALSE(s.qkv_bias || s.o_bias || s.mlp_bias);
  EXPECT_FALSE(s.tie_word_embeddings);
  EXPECT_EQ(s.dtype, DType::F16);
  EXPECT_EQ(s.bos_token_id, 1);
  EXPECT_EQ(s.eos_token_ids, std::vector<int64_t>{2});
}

TEST(ConfigReference, Qwen2Tiny) {
  ModelSpec s = reference("qwen2-tiny");
  EXPECT_EQ(s.family, Family::Qwen2);
  EXPECT_EQ(s.num_heads, 4);
  EXPECT_EQ(s.num_kv_heads, 2);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_DOUBLE_EQ(s.rope_theta, 1e6);
  EXPECT_TRUE(s.qkv_bias);
  EXPECT_FALSE(s.o_bias);
  EXPECT_FALSE(s.mlp_bias);
  EXPECT_TRUE(s.tie_word_embeddings);  // explicit in this file; Qwen2Config's default is false
  EXPECT_EQ(s.dtype, DType::BF16);
}

TEST(ConfigReference, BloomTiny) {
  for (const auto& [name, hidden, heads] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"bloom-tiny", 64, 8}, {"bloom-tiny-6heads", 96, 6}}) {
    SCOPED_TRACE(name);
    ModelSpec s = reference(name);
    EXPECT_EQ(s.family, Family::Bloom);
    EXPECT_EQ(s.vocab_size, 1200);
    EXPECT_EQ(s.hidden_size, hidden);
    EXPECT_EQ(s.num_layers, 2);
    EXPECT_EQ(s.num_heads, heads);
    EXPECT_EQ(s.num_kv_heads, heads);
    EXPECT_EQ(s.head_dim, hidden / heads);
    EXPECT_EQ(s.intermediate_size, 4 * hidden);
    EXPECT_EQ(s.norm, NormKind::LayerNorm);
    EXPECT_TRUE(s.norm_bias);
    EXPECT_TRUE(s.embed_norm);
    EXPECT_TRUE(s.pre_norm && s.final_norm);
    EXPECT_EQ(s.position, PositionKind::Alibi);
    EXPECT_EQ(s.activation, Activation::GeluTanh);
    EXPECT_FALSE(s.gated_mlp);
    EXPECT_TRUE(s.qkv_bias && s.o_bias && s.mlp_bias);
    EXPECT_TRUE(s.tie_word_embeddings);
    EXPECT_EQ(s.pad_token_id, 2);
  }
}

TEST(ConfigReference, FortuneTiny) {
  ModelSpec s = load_model_config(testing::source_dir() / "models" / "fortune-tiny" / "config.json");
  EXPECT_EQ(s.family, Family::Llama);
  EXPECT_EQ(s.vocab_size, 4096);
  EXPECT_EQ(s.hidden_size, 256);
  EXPECT_EQ(s.num_layers, 6);
  EXPECT_EQ(s.num_heads, 4);
  EXPECT_EQ(s.num_kv_heads, 2);
  EXPECT_EQ(s.head_dim, 64);
  EXPECT_EQ(s.intermediate_size, 704);
  EXPECT_DOUBLE_EQ(s.rope_theta, 10000.0);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Default);
  EXPECT_TRUE(s.tie_word_embeddings);
}

// Expected values: the sum of every tensor's element count in the checkpoint's
// model*.safetensors files, read from the safetensors JSON headers with a python3 script
// (struct.unpack('<Q') for the header length, json.loads, product of each "shape").
TEST(ConfigNumParams, MatchesCheckpointTensorTotals) {
  const std::vector<std::pair<std::string, int64_t>> totals = {
      {"bloom-tiny", 177024},   {"bloom-tiny-6heads", 339264}, {"llama-tiny-gqa", 283840},
      {"mistral-tiny", 196928}, {"opt-tiny", 3384000},         {"opt-tiny-postln-proj", 1729280},
      {"qwen2-tiny", 163392},
  };
  for (const auto& [name, total] : totals) EXPECT_EQ(reference(name).num_params(), total) << name;
  EXPECT_EQ(load_model_config(testing::source_dir() / "models" / "fortune-tiny" / "config.json").num_params(),
            5475584);
}

// ---- synthetic forms ---------------------------------------------------------------------------

TEST(ConfigRope, LegacyRopeScalingTypeLinear) {
  json j = llama_base();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
  ModelSpec s = parse(j);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Linear);
  EXPECT_DOUBLE_EQ(s.rope_scaling.factor, 2.0);
  EXPECT_DOUBLE_EQ(s.rope_theta, 10000.0);
}

TEST(ConfigRope, DynamicDefaultsOriginalMaxToMaxPositions) {
  json j = llama_base();
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  ModelSpec s = parse(j);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Dynamic);
  EXPECT_DOUBLE_EQ(s.rope_scaling.factor, 4.0);
  EXPECT_EQ(s.rope_scaling.original_max_position_embeddings, 256);
}

TEST(ConfigRope, TopLevelRopeTheta) {
  json j = llama_base();
  j["rope_theta"] = 1e6;
  EXPECT_DOUBLE_EQ(parse(j).rope_theta, 1e6);
  // Inside the dict wins over top level, as in transformers' convert_rope_params_to_dict.
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  EXPECT_DOUBLE_EQ(parse(j).rope_theta, 5e5);
}

TEST(ConfigRope, Llama3InLegacyRopeScaling) {
  json j = llama_base();
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  ModelSpec s = parse(j);
  EXPECT_EQ(s.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_DOUBLE_EQ(s.rope_scaling.factor, 32.0);
  EXPECT_EQ(s.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(s.rope_theta, 500000.0);
}

TEST(ConfigRope, RopeScalingReplacesRopeParameters) {
  json j = llama_base();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e4}};
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 3}};
  EXPECT_EQ(parse(j).rope_scaling.type, RopeScaling::Type::Linear);
  j["rope_scaling"] = nullptr;  // null rope_scaling falls back to rope_parameters
  EXPECT_EQ(parse(j).rope_scaling.type, RopeScaling::Type::Default);
}

TEST(ConfigSynthetic, BloomAliases) {
  json j = {{"model_type", "bloom"},
            {"vocab_size", 100},
            {"n_embed", 96},
            {"num_hidden_layers", 3},
            {"num_attention_heads", 6}};
  ModelSpec s = parse(j);
  EXPECT_EQ(s.hidden_size, 96);
  EXPECT_EQ(s.num_layers, 3);
  EXPECT_EQ(s.num_heads, 6);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_EQ(s.bos_token_id, 1);  // BloomConfig defaults
  EXPECT_EQ(s.eos_token_ids, std::vector<int64_t>{2});
}

TEST(ConfigSynthetic, EosListAndNullPad) {
  json j = llama_base();
  j["eos_token_id"] = {128001, 128008, 128009};
  j["pad_token_id"] = nullptr;
  ModelSpec s = parse(j);
  EXPECT_EQ(s.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_FALSE(s.pad_token_id.has_value());
  j["eos_token_id"] = nullptr;
  EXPECT_TRUE(parse(j).eos_token_ids.empty());
}

TEST(ConfigSynthetic, HeadDimNullOrExplicit) {
  json j = llama_base();
  j["head_dim"] = nullptr;
  EXPECT_EQ(parse(j).head_dim, 16);
  // Explicit head_dim need not be hidden/heads (Mistral Nemo style: 4 heads x 32 on a 64 model).
  j["head_dim"] = 32;
  ModelSpec s = parse(j);
  EXPECT_EQ(s.head_dim, 32);
  EXPECT_EQ(s.num_params(), 100 * 64 * 2 + 64 + 2 * (64 * 128 * 4 + 3 * 64 * 128 + 2 * 64));
}

TEST(ConfigSynthetic, TransformersDefaults) {
  ModelSpec s = parse(llama_base());
  EXPECT_EQ(s.num_kv_heads, 4);  // LlamaConfig: None -> num_attention_heads
  EXPECT_DOUBLE_EQ(s.norm_eps, 1e-6);
  EXPECT_FALSE(s.tie_word_embeddings);
  EXPECT_EQ(s.dtype, DType::F32);
  EXPECT_EQ(s.bos_token_id, 1);
  EXPECT_EQ(s.eos_token_ids, std::vector<int64_t>{2});

  json m = llama_base();
  m["model_type"] = "mistral";
  m["num_attention_heads"] = 16;        // MistralConfig: absent num_key_value_heads is 8
  m["max_position_embeddings"] = 4096;  // absent sliding_window is 4096: covers every position
  EXPECT_EQ(parse(m).num_kv_heads, 8);

  json q = llama_base();
  q["model_type"] = "qwen2";
  q["num_key_value_heads"] = nullptr;  // null -> num_attention_heads
  ModelSpec qs = parse(q);
  EXPECT_EQ(qs.num_kv_heads, 4);
  EXPECT_FALSE(qs.bos_token_id.has_value());  // Qwen2Config has no token defaults
  EXPECT_TRUE(qs.eos_token_ids.empty());
}

TEST(ConfigSynthetic, LegacyTorchDtypeAndActivations) {
  json j = llama_base();
  j["torch_dtype"] = "float16";
  EXPECT_EQ(parse(j).dtype, DType::F16);
  j["dtype"] = "bfloat16";  // the transformers 5 name wins
  EXPECT_EQ(parse(j).dtype, DType::BF16);

  json o = {{"model_type", "opt"},          {"vocab_size", 100},        {"hidden_size", 64},
            {"num_hidden_layers", 2},       {"num_attention_heads", 4}, {"ffn_dim", 128},
            {"max_position_embeddings", 64}};
  o["activation_function"] = "gelu";
  EXPECT_EQ(parse(o).activation, Activation::Gelu);
  o["activation_function"] = "gelu_new";
  EXPECT_EQ(parse(o).activation, Activation::GeluTanh);
  o["enable_bias"] = false;
  ModelSpec s = parse(o);
  EXPECT_FALSE(s.qkv_bias || s.o_bias || s.mlp_bias);
}

// ---- presets -----------------------------------------------------------------------------------

TEST(ConfigPresets, NamesAndShapes) {
  std::vector<std::string> names = preset_model_names();
  EXPECT_EQ(names.size(), 12u);
  for (const std::string& n : names) EXPECT_NO_THROW(preset_model_spec(n)) << n;

  ModelSpec o = preset_model_spec("opt-350m");
  EXPECT_EQ(o.hidden_size, 1024);
  EXPECT_EQ(o.word_embed_proj_dim, 512);
  EXPECT_FALSE(o.pre_norm);
  EXPECT_FALSE(o.final_norm);
  ModelSpec big = preset_model_spec("opt-66b");
  EXPECT_EQ(big.num_heads, 72);
  EXPECT_EQ(big.head_dim, 128);
  EXPECT_EQ(big.dtype, DType::F16);
  ModelSpec l = preset_model_spec("llama-2-70b");
  EXPECT_EQ(l.num_kv_heads, 8);
  EXPECT_EQ(l.intermediate_size, 28672);
  EXPECT_EQ(l.max_position_embeddings, 4096);
}

// Published parameter counts (`model.num_parameters()` on the HF checkpoints; the Llama 2 paper's
// 7B/13B/70B are these rounded).
TEST(ConfigPresets, NumParamsMatchPublishedCounts) {
  EXPECT_EQ(preset_model_spec("opt-125m").num_params(), 125239296);
  EXPECT_EQ(preset_model_spec("opt-350m").num_params(), 331196416);
  EXPECT_EQ(preset_model_spec("opt-1.3b").num_params(), 1315758080);
  EXPECT_EQ(preset_model_spec("llama-2-7b").num_params(), 6738415616);
  EXPECT_EQ(preset_model_spec("llama-2-13b").num_params(), 13015864320);
  EXPECT_EQ(preset_model_spec("llama-2-70b").num_params(), 68976648192);
}

TEST(ConfigPresets, UnknownNameListsKnownOnes) {
  EXPECT_THROW_WITH(preset_model_spec("gpt-5"), InvalidArgumentError, "opt-125m");
}

// ---- generation_config.json --------------------------------------------------------------------

TEST(GenerationConfig, ReferenceEosInt) {
  GenerationConfig g = load_generation_config(hf_model_dir("bloom-tiny") / "generation_config.json");
  EXPECT_EQ(g.eos_token_ids, std::vector<int64_t>{1});
  EXPECT_EQ(g.bos_token_id, 0);
  EXPECT_EQ(g.pad_token_id, 2);
  EXPECT_FALSE(g.do_sample.has_value());
  EXPECT_FALSE(g.temperature.has_value());
}

TEST(GenerationConfig, SamplingFields) {
  GenerationConfig g =
      load_generation_config(testing::source_dir() / "models" / "fortune-tiny" / "generation_config.json");
  EXPECT_EQ(g.do_sample, true);
  EXPECT_DOUBLE_EQ(g.temperature.value(), 0.8);
  EXPECT_DOUBLE_EQ(g.top_p.value(), 0.95);
  EXPECT_EQ(g.max_new_tokens, 96);
  EXPECT_FALSE(g.top_k.has_value());
}

TEST(GenerationConfig, EosList) {
  GenerationConfig g = parse_generation_config(
      R"({"eos_token_id": [128001, 128009], "top_k": 50, "repetition_penalty": 1.1})", "gen.json");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{128001, 128009}));
  EXPECT_EQ(g.top_k, 50);
  EXPECT_DOUBLE_EQ(g.repetition_penalty.value(), 1.1);
}

TEST(GenerationConfig, MissingFileIsEmpty) {
  testing::TempDir dir;
  GenerationConfig g = load_generation_config(dir / "generation_config.json");
  EXPECT_TRUE(g.eos_token_ids.empty());
  EXPECT_FALSE(g.bos_token_id || g.do_sample || g.temperature || g.max_new_tokens);
}

}  // namespace
}  // namespace tiergen
