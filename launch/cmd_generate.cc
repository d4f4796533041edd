// tiergen generate: prompts (arguments, --prompt-file, stdin, or --input-ids) -> continuations.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "launch/pipeline_rank.h"
#include "launch/progress.h"
#include "launch/request_defaults.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "stage/stage.h"

namespace tiergen::cli {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct GenerateArgs {
  OffloadOptions offload;
  ModelSource source;
  std::vector<std::string> prompts;
  std::string prompt_file;
  std::vector<std::string> input_ids;
  // Unset: the model's generation_config.json, else the runtime default.
  std::optional<int64_t> max_new_tokens, top_k;
  std::optional<double> temperature, top_p, repetition_penalty;
  uint64_t seed = 0;
  bool greedy = false, sample = false, ignore_eos = false, json = false, no_special = false;
  std::vector<std::string> stops;
  int64_t batch_size = 64;
  CLI::Option* batch_flag = nullptr;  // given or not: it must agree with --gpu-batch-size
  int threads = 0;
  BudgetOptions budgets;
  ProgressOptions progress;
  EngineOptions engine;
  PipelineOptions pipeline;
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

// --prompt-file: one prompt per non-empty line; '-' is stdin. A file that is missing, a directory,
// or holds no prompt is an error naming it: never a silent fall-back to reading stdin.
std::vector<std::string> read_prompt_file(const std::string& path) {
  if (path == "-") {
    auto lines = read_lines(std::cin);
    if (lines.empty()) throw FormatError("--prompt-file -: no prompts on stdin");
    return lines;
  }
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw IoError("prompt file '" + path + "' is a directory");
  std::ifstream f(path);
  if (!f) throw NotFoundError("cannot open prompt file '" + path + "': " + errno_message(errno));
  auto lines = read_lines(f);
  if (f.bad()) throw IoError("cannot read prompt file '" + path + "': " + errno_message(errno));
  if (lines.empty()) throw FormatError("prompt file '" + path + "' holds no prompts (it is empty or blank)");
  return lines;
}

// Rank 0 (or the only process): prompts in, the run driven through the pipeline, outputs out.
int lead_generate(GenerateArgs& a, const BudgetOptions::Bytes& budgets, const ModelSpec& spec, PipelineRank& rank) {
  // Prompts: arguments, then the file, then token-id prompts; stdin only when none was given.
  std::vector<std::string> texts = a.prompts;
  if (!a.prompt_file.empty()) {
    auto lines = read_prompt_file(a.prompt_file);
    texts.insert(texts.end(), lines.begin(), lines.end());
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

  auto tokenizer = a.source.tokenizer(spec);
  if (!texts.empty() && !tokenizer)
    throw InvalidArgumentError("text prompts need a tokenizer.json in the model folder; use --input-ids with " +
                               std::string(a.source.dummy.empty() ? "this model" : "--dummy"));
  GenerationConfig gc;
  if (!a.source.dir.empty())
    gc = load_generation_config(std::filesystem::path(a.source.dir) / "generation_config.json");

  const SamplingParams sp =
      resolve_sampling(gc, {a.temperature, a.top_p, a.repetition_penalty, a.top_k, a.greedy, a.sample});
  const std::vector<int32_t> eos = stop_token_ids(gc, spec, a.ignore_eos);
  const int64_t max_new = max_new_tokens(gc, a.max_new_tokens);

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
  // Everything about the run is checked before the weights are loaded or generated.
  validate_requests(spec, reqs, tokenizer != nullptr);
  std::optional<OffloadPolicy> policy = a.offload.policy(a.engine.cuda());
  const int64_t block = a.offload.blocks({a.batch_size}, a.batch_flag->count() > 0).front();
  const RunShape shape =
      comm::share_shape(rank.transport(), run_shape(reqs, block, rank.micro_batches()), rank.timeout());
  PipelineRank::Loaded stage = rank.load(a.source, a.engine, a.offload, policy, {shape}, budgets, "--max-new-tokens");
  if (!rank.balance_note().empty()) std::cerr << "tiergen: " << rank.balance_note() << "\n";
  if (!stage.links->note().empty()) std::cerr << "tiergen: " << stage.links->note() << "\n";
  comm::PipelineExecutor exec(*stage.stage, rank.transport(), a.offload.gpu_batch(block), rank.micro_batches(),
                              rank.timeout(), stage.links.get());
  Generator gen(exec, tokenizer.get(), block);
  int64_t most_tokens = 0;
  for (const Request& r : reqs) most_tokens += r.max_new_tokens;
  std::vector<Result> results;
  {
    ProgressLine progress(a.progress, most_tokens);
    gen.on_step = [&](const GenerateStats& st) { progress.update(st); };
    TraceFile trace(rank.trace_path(a.offload.trace_file));
    results = gen.generate(reqs);
    if (const std::string times = rank.report(exec, a.offload.trace_file); !times.empty())
      std::cerr << "tiergen: " << times;
    exec.stop();
    trace.close();
  }
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

// Every other rank: its stage, checked and loaded like rank 0's, serving the steps rank 0 sends.
int serve_generate(GenerateArgs& a, const BudgetOptions::Bytes& budgets, PipelineRank& rank) {
  std::optional<OffloadPolicy> policy = a.offload.policy(a.engine.cuda());
  // Rank 0 may take long to read and tokenize a large prompt file: the load deadline, not --comm-timeout.
  const RunShape shape = comm::share_shape(rank.transport(), RunShape{}, rank.load_timeout());
  PipelineRank::Loaded stage = rank.load(a.source, a.engine, a.offload, policy, {shape}, budgets, "--max-new-tokens");
  TraceFile trace(rank.trace_path(a.offload.trace_file));
  comm::serve_stage(*stage.stage, rank.transport(), rank.timeout(), stage.links.get(), rank.stage_gpu_batch());
  trace.close();
  return 0;
}

int run_generate(GenerateArgs& a) {
  a.source.validate();
  const ModelSpec spec = a.source.spec();
  // Alone, a pipeline of one; under mpirun, rank 0 reads the prompts, drives and prints.
  PipelineRank rank(a.pipeline, spec);
  return rank.run([&] {
    rank.apply(a.engine, a.budgets, a.offload, a.threads);
    apply_threads(a.threads);
    const BudgetOptions::Bytes budgets = a.budgets.bytes(a.engine.cuda());
    return rank.first() ? lead_generate(a, budgets, spec, rank) : serve_generate(a, budgets, rank);
  });
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
      ->check(integer_in(0, INT32_MAX));
  cmd->add_flag("--greedy", a->greedy, "Greedy decoding (argmax), overriding generation_config.json");
  cmd->add_flag("--sample", a->sample, "Sample from the distribution, overriding generation_config.json");
  cmd->add_option("--temperature", a->temperature, "Sampling temperature (> 0; 0 means greedy)")
      ->check(number_in(0, false, kInf, false));
  cmd->add_option("--top-k", a->top_k, "Keep the k most likely tokens (0: off)")->check(integer_in(0));
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling: keep the most likely tokens up to this mass (0, 1]")
      ->check(number_in(0, true, 1, false));
  cmd->add_option("--repetition-penalty", a->repetition_penalty, "Penalise tokens already in the context (1: off)")
      ->check(number_in(0, true, kInf, false));
  cmd->add_option("--seed", a->seed, "Random seed; prompt i samples with seed + i (default 0)")->check(seed_value());
  cmd->add_option("--stop", a->stops, "Stop a sequence when its output contains this string (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the model's end-of-sequence tokens");
  cmd->add_flag("--no-special-tokens", a->no_special,
                "Do not add the tokenizer's special tokens (e.g. BOS) to prompts");
  a->batch_flag = cmd->add_option("-b,--batch-size", a->batch_size, "Sequences run together in one batch (default 64)")
                      ->check(integer_in(1, 1 << 20));
  cmd->add_flag("--json", a->json, "Print one JSON object per prompt: input_ids, output_ids, text, finish_reason");
  add_threads_flag(*cmd, a->threads);
  a->budgets.add_flags(*cmd);
  a->progress.add_flags(*cmd);
  a->engine.add_flags(*cmd);
  a->offload.add_flags(*cmd);
  a->pipeline.add_flags(*cmd);
  cmd->get_option("--greedy")->excludes("--sample");
  return {cmd, [a] { return run_generate(*a); }};
}

}  // namespace tiergen::cli
