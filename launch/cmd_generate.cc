// tiergen generate: prompts (arguments, --prompt-file, stdin, or --input-ids) -> continuations.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launch/commands.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "stage/stage.h"

namespace tiergen::cli {
namespace {

struct GenerateArgs {
  ModelSource source;
  std::vector<std::string> prompts;
  std::string prompt_file;
  std::vector<std::string> input_ids;
  int64_t max_new_tokens = -1;
  double temperature = -1, top_p = -1, repetition_penalty = -1;
  int64_t top_k = -1;
  uint64_t seed = 0;
  bool greedy = false, sample = false, ignore_eos = false, json = false, no_special = false;
  std::vector<std::string> stops;
  int64_t batch_size = 64;
  int threads = 0;
};

std::vector<std::string> read_lines(std::istream& in) {
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

int run_generate(GenerateArgs& a) {
  apply_threads(a.threads);
  a.source.validate();
  // Prompts: arguments, then the file, then token-id prompts; stdin when none was given.
  std::vector<std::string> texts = a.prompts;
  if (!a.prompt_file.empty()) {
    if (a.prompt_file == "-") {
      auto lines = read_lines(std::cin);
      texts.insert(texts.end(), lines.begin(), lines.end());
    } else {
      std::ifstream f(a.prompt_file);
      if (!f) throw NotFoundError("cannot open prompt file '" + a.prompt_file + "'");
      auto lines = read_lines(f);
      texts.insert(texts.end(), lines.begin(), lines.end());
    }
  }
  std::vector<std::vector<int32_t>> id_prompts;
  for (const auto& s : a.input_ids) {
    id_prompts.push_back(parse_token_ids(s));
    if (id_prompts.back().empty()) throw InvalidArgumentError("--input-ids '" + s + "' holds no token ids");
  }
  if (texts.empty() && id_prompts.empty()) {
    if (isatty(STDIN_FILENO))
      throw InvalidArgumentError("no prompts: give them as arguments, with --prompt-file, --input-ids, or on stdin");
    texts = read_lines(std::cin);
    if (texts.empty()) throw InvalidArgumentError("no prompts on stdin");
  }

  auto tokenizer = a.source.tokenizer();
  if (!texts.empty() && !tokenizer)
    throw InvalidArgumentError("text prompts need a tokenizer.json in the model folder; use --input-ids with " +
                               std::string(a.source.dummy.empty() ? "this model" : "--dummy"));
  auto model = a.source.load();
  GenerationConfig gc;
  if (!a.source.dir.empty())
    gc = load_generation_config(std::filesystem::path(a.source.dir) / "generation_config.json");

  SamplingParams sp;
  sp.do_sample = gc.do_sample.value_or(false);
  if (a.sample) sp.do_sample = true;
  if (a.greedy) sp.do_sample = false;
  sp.temperature = a.temperature >= 0 ? a.temperature : gc.temperature.value_or(1.0);
  if (sp.temperature == 0.0) {  // temperature 0 means greedy, as most tools read it
    sp.do_sample = false;
    sp.temperature = 1.0;
  }
  sp.top_k = a.top_k >= 0 ? a.top_k : gc.top_k.value_or(0);
  sp.top_p = a.top_p >= 0 ? a.top_p : gc.top_p.value_or(1.0);
  sp.repetition_penalty = a.repetition_penalty >= 0 ? a.repetition_penalty : gc.repetition_penalty.value_or(1.0);
  validate(sp);

  std::vector<int32_t> eos;
  if (!a.ignore_eos) {
    const auto& src = gc.eos_token_ids.empty() ? model->spec().eos_token_ids : gc.eos_token_ids;
    for (int64_t id : src) eos.push_back(static_cast<int32_t>(id));
  }
  const int64_t max_new = a.max_new_tokens >= 0 ? a.max_new_tokens : gc.max_new_tokens.value_or(32);

  std::vector<Request> reqs;
  std::vector<std::string> shown;  // the prompt as printed
  auto add = [&](std::vector<int32_t> ids, std::string text) {
    Request r;
    r.input_ids = std::move(ids);
    r.sampling = sp;
    r.sampling.seed = a.seed + reqs.size();  // request i draws from seed + i, batched or alone
    r.max_new_tokens = max_new;
    r.eos_ids = eos;
    r.stop_strings = a.stops;
    reqs.push_back(std::move(r));
    shown.push_back(std::move(text));
  };
  for (const auto& t : texts) add(tokenizer->encode(t, !a.no_special), t);
  for (auto& ids : id_prompts) add(ids, "");
  auto backend = kernels::make_cpu_backend();
  Stage stage(*model, *backend);
  Generator gen(stage, tokenizer.get(), a.batch_size);
  const std::vector<Result> results = gen.generate(reqs);
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    if (a.json) {
      nlohmann::json j;
      j["index"] = i;
      if (i < texts.size()) j["prompt"] = shown[i];
      j["input_ids"] = r.input_ids;
      j["output_ids"] = r.output_ids;
      j["text"] = r.text;
      j["finish_reason"] = finish_reason_name(r.finish);
      std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      std::string text = r.text;
      if (!tokenizer) {
        text.clear();
        for (int32_t id : r.output_ids) text += (text.empty() ? "" : ",") + std::to_string(id);
        text = "[" + text + "]";
      }
      std::cout << shown[i] << text << "\n\n";
    }
  }
  std::cout.flush();
  return 0;
}

}  // namespace

Command add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate continuations of prompts (the main job)");
  a->source.add_flags(*cmd);
  cmd->add_option("prompts", a->prompts, "Prompts (text). Without any, prompts are read from stdin, one per line");
  cmd->add_option("-f,--prompt-file", a->prompt_file, "Read prompts from a file, one per line ('-': stdin)");
  cmd->add_option("--input-ids", a->input_ids, "A prompt as comma-separated token ids, e.g. 2,40313,318 (repeatable)")
      ->expected(1)  // one prompt per flag, so positional prompts after it stay prompts
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);
  cmd->add_option("-n,--max-new-tokens", a->max_new_tokens,
                  "Tokens to generate per prompt (default: generation_config.json, else 32)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--greedy", a->greedy, "Greedy decoding (argmax), overriding generation_config.json");
  cmd->add_flag("--sample", a->sample, "Sample from the distribution, overriding generation_config.json");
  cmd->add_option("--temperature", a->temperature, "Sampling temperature (> 0; 0 means greedy)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0: off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling: keep the most likely tokens up to this mass (0, 1]");
  cmd->add_option("--repetition-penalty", a->repetition_penalty, "Penalise tokens already in the context (1: off)");
  cmd->add_option("--seed", a->seed, "Random seed; prompt i samples with seed + i (default 0)");
  cmd->add_option("--stop", a->stops, "Stop a sequence when its output contains this string (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the model's end-of-sequence tokens");
  cmd->add_flag("--no-special-tokens", a->no_special,
                "Do not add the tokenizer's special tokens (e.g. BOS) to prompts");
  cmd->add_option("-b,--batch-size", a->batch_size, "Sequences run together in one batch (default 64)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", a->json, "Print one JSON object per prompt: input_ids, output_ids, text, finish_reason");
  add_threads_flag(*cmd, a->threads);
  cmd->get_option("--greedy")->excludes("--sample");
  return {cmd, [a] { return run_generate(*a); }};
}

}  // namespace tiergen::cli
