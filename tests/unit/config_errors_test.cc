// Every way a config.json / generation_config.json is rejected: the error type says what the caller
// can do about it, the message names the file and the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "runtime/core/error.h"
#include "runtime/model/spec.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

using nlohmann::json;

json llama_base() {
  return {{"model_type", "llama"},         {"vocab_size", 100},        {"hidden_size", 64},
          {"num_hidden_layers", 2},        {"num_attention_heads", 4}, {"intermediate_size", 128},
          {"max_position_embeddings", 256}};
}

ModelSpec parse(const json& j) { return parse_model_config(j.dump(), "config.json"); }

TEST(ConfigErrors, UnknownModelTypeListsSupported) {
  json j = llama_base();
  j["model_type"] = "gpt2";
  EXPECT_THROW_WITH(parse(j), UnsupportedError, "model_type 'gpt2' is not supported");
  EXPECT_THROW_WITH(parse(j), UnsupportedError, "opt, llama, mistral, qwen2, bloom");
}

TEST(ConfigErrors, MissingModelType) {
  json j = llama_base();
  j.erase("model_type");
  EXPECT_THROW_WITH(parse(j), FormatError, "config.json: field 'model_type' is missing");
}

TEST(ConfigErrors, MissingHiddenSize) {
  json j = llama_base();
  j.erase("hidden_size");
  EXPECT_THROW_WITH(parse(j), FormatError, "config.json: field 'hidden_size' is missing");
}

TEST(ConfigErrors, WrongType) {
  json j = llama_base();
  j["hidden_size"] = "64";
  EXPECT_THROW_WITH(parse(j), FormatError, "config.json: field 'hidden_size' must be a positive integer");
  j = llama_base();
  j["num_hidden_layers"] = 0;
  EXPECT_THROW_WITH(parse(j), FormatError, "field 'num_hidden_layers' must be a positive integer");
  j = llama_base();
  j["tie_word_embeddings"] = "yes";
  EXPECT_THROW_WITH(parse(j), FormatError, "field 'tie_word_embeddings' must be a boolean");
  j = llama_base();
  j["eos_token_id"] = {1, "two"};
  EXPECT_THROW_WITH(parse(j), FormatError, "field 'eos_token_id' must be an integer or a list of integers");
  j = llama_base();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", "2"}};
  EXPECT_THROW_WITH(parse(j), FormatError, "field 'rope_scaling.factor' must be a positive number");
}

TEST(ConfigErrors, HeadsNotDividing) {
  json j = llama_base();
  j["num_attention_heads"] = 5;  // 64 / 5, no explicit head_dim
  EXPECT_THROW_WITH(parse(j), FormatError, "field 'num_attention_heads' (5) must divide hidden_size (64)");
  j = llama_base();
  j["num_key_value_heads"] = 3;
  EXPECT_THROW_WITH(parse(j), FormatError,
                    "field 'num_key_value_heads' (3) must divide num_attention_heads (4)");
  json b = {{"model_type", "bloom"}, {"vocab_size", 100}, {"hidden_size", 64}, {"n_layer", 2}, {"n_head", 6}};
  EXPECT_THROW_WITH(parse(b), FormatError, "field 'n_head' (6) must divide hidden_size (64)");
}

TEST(ConfigErrors, UnsupportedRopeType) {
  json j = llama_base();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  EXPECT_THROW_WITH(parse(j), UnsupportedError, "RoPE type 'yarn' (field 'rope_parameters.rope_type')");
  j = llama_base();
  j["rope_scaling"] = {{"type", "longrope"}};
  EXPECT_THROW_WITH(parse(j), UnsupportedError, "RoPE type 'longrope' (field 'rope_scaling.type')");
}

TEST(ConfigErrors, Llama3MissingField) {
  json j = llama_base();
  j["rope_parameters"] = {{"rope_type", "llama3"},
                          {"factor", 8.0},
                          {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 64}};
  EXPECT_THROW_WITH(parse(j), FormatError, "config.json: field 'rope_parameters.low_freq_factor' is missing");
  j["rope_parameters"]["low_freq_factor"] = 1.0;
  j["rope_parameters"].erase("factor");
  EXPECT_THROW_WITH(parse(j), FormatError, "field 'rope_parameters.factor' is missing");
}

TEST(ConfigErrors, NotJson) {
  EXPECT_THROW_WITH(parse_model_config("{\"model_type\": \"llama\",", "config.json"), FormatError,
                    "config.json: not valid JSON");
}

TEST(ConfigErrors, NotAnObject) {
  EXPECT_THROW_WITH(parse_model_config("[1, 2, 3]", "config.json"), FormatError,
                    "config.json: expected a JSON object");
}

TEST(ConfigErrors, UnsupportedActivation) {
  json j = llama_base();
  j["hidden_act"] = "quick_gelu";
  EXPECT_THROW_WITH(parse(j), UnsupportedError, "activation 'quick_gelu' (field 'hidden_act')");
}

TEST(ConfigErrors, UnsupportedFeatures) {
  json m = llama_base();
  m["model_type"] = "mistral";
  m["num_key_value_heads"] = 4;
  m["max_position_embeddings"] = 32768;  // Mistral-7B-v0.1: sliding_window absent -> 4096
  EXPECT_THROW_WITH(parse(m), UnsupportedError, "sliding-window attention (sliding_window, window 4096");
  m["sliding_window"] = nullptr;
  EXPECT_NO_THROW(parse(m));

  json q = llama_base();
  q["model_type"] = "qwen2";
  q["num_key_value_heads"] = 2;
  q["use_sliding_window"] = true;
  q["sliding_window"] = 128;
  q["max_window_layers"] = 1;
  EXPECT_THROW_WITH(parse(q), UnsupportedError, "use_sliding_window");
  q["max_window_layers"] = 28;  // every layer below max_window_layers: full attention
  EXPECT_NO_THROW(parse(q));

  json b = {{"model_type", "bloom"}, {"vocab_size", 100}, {"hidden_size", 64},
            {"n_layer", 2},          {"n_head", 4},       {"apply_residual_connection_post_layernorm", true}};
  EXPECT_THROW_WITH(parse(b), UnsupportedError, "apply_residual_connection_post_layernorm");

  json d = llama_base();
  d["dtype"] = "float8_e4m3fn";
  EXPECT_THROW_WITH(parse(d), UnsupportedError, "dtype 'float8_e4m3fn'");
  d = llama_base();
  d["quantization_config"] = {{"quant_method", "gptq"}};
  EXPECT_THROW_WITH(parse(d), UnsupportedError, "quantization_config");
}

TEST(ConfigErrors, LoadNamesThePath) {
  testing::TempDir dir;
  EXPECT_THROW_WITH(load_model_config(dir / "config.json"), NotFoundError, (dir / "config.json").string());
  testing::write_file(dir / "config.json", "{}");
  EXPECT_THROW_WITH(load_model_config(dir / "config.json"), FormatError,
                    (dir / "config.json").string() + ": field 'model_type' is missing");
  EXPECT_THROW_WITH(load_model_config(dir.path()), IoError, dir.path().string());
}

TEST(GenerationConfigErrors, MalformedNamesFileAndField) {
  testing::TempDir dir;
  auto file = dir / "generation_config.json";
  testing::write_file(file, R"({"temperature": "hot"})");
  EXPECT_THROW_WITH(load_generation_config(file), FormatError,
                    file.string() + ": field 'temperature' must be a number");
  testing::write_file(file, R"({"eos_token_id": 1.5})");
  EXPECT_THROW_WITH(load_generation_config(file), FormatError, "field 'eos_token_id'");
  testing::write_file(file, R"({"top_p": 1.5})");
  EXPECT_THROW_WITH(load_generation_config(file), FormatError, "field 'top_p' must be in [0, 1]");
  testing::write_file(file, "not json");
  EXPECT_THROW_WITH(load_generation_config(file), FormatError, file.string() + ": not valid JSON");
}

}  // namespace
}  // namespace tiergen
