// generation_config.json: the sampling defaults a checkpoint ships with. Every field is optional;
// unset fields stay unset so the caller can tell "the model says" from "the runtime default".
#include <string>
#include <system_error>

#include "runtime/model/json_fields.h"
#include "runtime/model/spec.h"

namespace tiergen {

GenerationConfig parse_generation_config(const std::string& json_text, const std::string& origin) {
  json_fields::Json doc = json_fields::parse_object(json_text, origin);
  json_fields::Fields f(doc, origin);

  GenerationConfig g;
  g.eos_token_ids = f.token_ids("eos_token_id");
  g.bos_token_id = f.token_id("bos_token_id");
  g.pad_token_id = f.token_id("pad_token_id");
  g.do_sample = f.optional_bool("do_sample");
  g.temperature = f.optional_number("temperature");
  g.top_k = f.optional_int("top_k");
  g.top_p = f.optional_number("top_p");
  g.repetition_penalty = f.optional_number("repetition_penalty");
  g.max_new_tokens = f.optional_int("max_new_tokens");

  // Out-of-range values would be silently clamped or crash a sampler later; name them here instead.
  auto check = [&](const char* key, bool ok, const char* range) {
    if (!ok) f.fail(key, std::string("must be ") + range + ", got " + f.find(key)->dump());
  };
  if (g.temperature) check("temperature", *g.temperature >= 0.0, ">= 0");
  if (g.top_k) check("top_k", *g.top_k >= 0, ">= 0");
  if (g.top_p) check("top_p", *g.top_p >= 0.0 && *g.top_p <= 1.0, "in [0, 1]");
  if (g.repetition_penalty) check("repetition_penalty", *g.repetition_penalty > 0.0, "> 0");
  if (g.max_new_tokens) check("max_new_tokens", *g.max_new_tokens >= 0, ">= 0");
  return g;
}

GenerationConfig load_generation_config(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return {};  // optional in a model folder
  return parse_generation_config(json_fields::read_text_file(file), file.string());
}

}  // namespace tiergen
