#include <omp.h>

#include <cctype>
#include <climits>
#include <sstream>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"
#include "runtime/generate/run_plan.h"
#include "runtime/model/spec.h"

namespace tiergen::cli {

void ModelSource::add_flags(CLI::App& cmd) {
  cmd.add_option("-m,--model", dir, "Hugging Face model folder (config.json, *.safetensors, tokenizer.json)");
  std::string presets;
  for (const auto& n : preset_model_names()) presets += (presets.empty() ? "" : ", ") + n;
  cmd.add_option("--dummy", dummy, "Use dummy weights of a preset shape instead of a folder: " + presets);
}

void ModelSource::validate() const {
  if (dir.empty() == dummy.empty())
    throw InvalidArgumentError(dir.empty() ? "give a model: --model DIR or --dummy PRESET"
                                           : "give either --model or --dummy, not both");
  if (!dir.empty()) {
    if (!std::filesystem::is_directory(dir))
      throw NotFoundError("model folder '" + dir + "' does not exist or is not a directory");
    // The config first: without it nothing else in the folder can be read, and a missing tokenizer
    // would be the wrong thing to report.
    const std::filesystem::path config = std::filesystem::path(dir) / "config.json";
    if (!std::filesystem::is_regular_file(config))
      throw NotFoundError("model folder '" + dir + "' has no config.json (is it a Hugging Face model folder?)");
  } else {
    preset_model_spec(dummy);  // an unknown preset is named before anything else runs
  }
}

std::string ModelSource::name() const { return dummy.empty() ? dir : dummy; }

ModelSpec ModelSource::spec() const {
  validate();
  if (!dummy.empty()) return preset_model_spec(dummy);
  return load_model_config(std::filesystem::path(dir) / "config.json");
}

DType ModelSource::weight_dtype(const ModelSpec& spec) const {
  // Dummy weights are generated in the benchmarks' 16-bit type; a checkpoint keeps its own.
  if (!dummy.empty()) return spec.dtype == DType::F32 ? DType::F16 : spec.dtype;
  return spec.dtype;
}

std::unique_ptr<Model> ModelSource::load(const LayerLoaded& on_loaded, LayerSpan span) const {
  validate();
  if (!dummy.empty()) {
    const ModelSpec spec = preset_model_spec(dummy);
    return Model::dummy(spec, weight_dtype(spec), 0, on_loaded, span);
  }
  return Model::load(dir, on_loaded, span);
}

std::unique_ptr<Tokenizer> ModelSource::tokenizer(const ModelSpec& spec) const {
  if (dir.empty()) return nullptr;
  const std::filesystem::path p = std::filesystem::path(dir) / "tokenizer.json";
  if (!std::filesystem::exists(p)) return nullptr;
  auto tok = std::make_unique<Tokenizer>(Tokenizer::from_file(p));
  check_tokenizer(*tok, spec);
  return tok;
}

MemoryPlan ModelSource::plan_memory(const ModelSpec& spec, const RunShape& shape, const ComputePlacement& compute,
                                    const OffloadPolicy* policy, ModelEnds ends) const {
  return plan_generation(spec, dummy.empty() ? WeightHome::Mapped : WeightHome::Generated, weight_dtype(spec), compute,
                         shape, policy, ends);
}

MemoryPlan ModelSource::check_memory(const ModelSpec& spec, const RunShape& shape, const Capacities& cap,
                                     const ComputePlacement& compute, const OffloadPolicy* policy,
                                     const std::string& length_flag, ModelEnds ends) const {
  MemoryPlan plan = plan_memory(spec, shape, compute, policy, ends);
  plan.check(cap, policy ? policy->offload_dir : std::string(), memory_hint(policy, length_flag));
  return plan;
}

std::string memory_hint(const OffloadPolicy* policy, const std::string& length_flag) {
  return policy ? "Lower " + length_flag + " or the batch size, or move more to another tier with --percent."
                : "Lower " + length_flag +
                      " or --batch-size, use a smaller model, free memory, or offload with --percent.";
}

Capacities capacities(const BudgetOptions::Bytes& budgets, const kernels::Backend* gpu, const OffloadPolicy* policy) {
  Capacities c;
  c.host = host_memory_limit(budgets.cpu);
  c.device = device_memory_limit(gpu ? gpu->free_memory() : std::nullopt, gpu ? gpu->name() : "the GPU", budgets.gpu);
  if (policy) c.disk = disk_limit(policy->offload_dir, budgets.disk);
  return c;
}

std::vector<int32_t> parse_token_ids(const std::string& text) {
  std::string spaced = text;
  for (char& c : spaced)
    if (c == '[' || c == ']' || c == ',' || std::isspace(static_cast<unsigned char>(c))) c = ' ';
  std::vector<int32_t> ids;
  std::istringstream in(spaced);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < 0 || v > INT32_MAX)
      throw InvalidArgumentError("'" + word + "' is not a token id (a non-negative integer)");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

void add_threads_flag(CLI::App& cmd, int& threads) {
  cmd.add_option(
         "--threads", threads,
         "CPU threads for the CPU backend (default 0: one per core; at most " + std::to_string(max_threads()) + ")")
      ->check(integer_in(0, max_threads()));
}

void apply_threads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

void BudgetOptions::add_flags(CLI::App& cmd) {
  cmd.add_option("--cpu-mem", cpu_mem,
                 "Host memory the run may use, e.g. 16GB or 24GiB (default: what is available); a run that needs "
                 "more is refused before it starts")
      ->check(byte_size());
  cmd.add_option("--gpu-mem", gpu_mem,
                 "GPU memory the run may use, e.g. 24GiB (default: what is free); checked before the run and "
                 "enforced on every allocation, so a policy for a smaller card can be tried on a larger one")
      ->check(byte_size());
  cmd.add_option("--disk-mem", disk_mem,
                 "Disk the run may use in the offload folder (default: the free space of its filesystem)")
      ->check(byte_size());
}

BudgetOptions::Bytes BudgetOptions::bytes(bool cuda) const {
  if (gpu_mem && !cuda)
    throw InvalidArgumentError("--gpu-mem is a budget for --device cuda runs; this one computes on the CPU");
  const auto parse = [](const std::optional<std::string>& text, const char* flag) -> std::optional<uint64_t> {
    if (!text) return std::nullopt;
    return parse_bytes(*text, flag);
  };
  return {parse(cpu_mem, "--cpu-mem"), parse(gpu_mem, "--gpu-mem"), parse(disk_mem, "--disk-mem")};
}

}  // namespace tiergen::cli
