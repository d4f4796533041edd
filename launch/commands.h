// Subcommands of the `tiergen` executable. Each registers its flags on the app and returns the
// function that runs it; library errors propagate to main(), which prints one line.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "runtime/engine/model.h"
#include "runtime/generate/run_plan.h"
#include "runtime/policy/offload_policy.h"
#include "runtime/tokenizer/tokenizer.h"
#include "stage/kv_stream.h"
#include "stage/stage.h"
#include "stage/weight_stream.h"

namespace tiergen::cli {

// A subcommand and what runs it once it was parsed.
struct Command {
  CLI::App* sub = nullptr;
  std::function<int()> run;
};

Command add_generate(CLI::App& app);
Command add_tokenize(CLI::App& app);
Command add_detokenize(CLI::App& app);
Command add_info(CLI::App& app);
Command add_bench(CLI::App& app);

// Where a model comes from: a folder (--model) or a preset shape with dummy weights (--dummy).
struct ModelSource {
  std::string dir;
  std::string dummy;
  void add_flags(CLI::App& cmd);
  // Exactly one of the two; a folder must exist and hold config.json; a preset must be known.
  void validate() const;
  std::string name() const;
  // config.json or the preset's shape: cheap, allocates nothing large.
  ModelSpec spec() const;
  // The dtype the weights are held in: the checkpoint's, or F16 for dummy weights of an f32 preset.
  DType weight_dtype(const ModelSpec& spec) const;
  std::unique_ptr<Model> load(const LayerLoaded& on_loaded = {}) const;
  // The folder's tokenizer.json, checked against the model's vocabulary; null for dummy models and
  // folders without one.
  std::unique_ptr<Tokenizer> tokenizer(const ModelSpec& spec) const;
  // OutOfMemoryError before anything large is allocated when the run's host memory (weights
  // generated in place, KV cache, activations) exceeds what the machine has or `budget`.
  // A GPU run also checks the GPU's part against `gpu`'s free memory.
  // With an offloading policy, the plan places by its shares and the disk is checked too.
  // Returns the plan it checked.
  MemoryPlan check_memory(const ModelSpec& spec, const RunShape& shape, std::optional<uint64_t> budget,
                          const ComputePlacement& compute, const kernels::Backend* gpu,
                          const OffloadPolicy* policy = nullptr) const;
};

// --percent, --gpu-batch-size, --num-gpu-batches, --offload-dir, --no-overlap
// (launch/offload_options.cc).
struct OffloadOptions {
  std::vector<double> percent;
  std::optional<int64_t> gpu_batch_size;
  int64_t num_gpu_batches = 1;
  std::string offload_dir;
  bool overlap = true;
  bool cpu_cache_compute = false;
  std::string trace_file;  // --trace
  void add_flags(CLI::App& cmd);
  // The policy when --percent was given; InvalidArgumentError for shares that do not add up,
  // UnsupportedError for what is not built yet: activations off the GPU or on disk; on --device cuda
  // a KV cache split between tiers, or on the CPU without --cpu-cache-compute.
  std::optional<OffloadPolicy> policy(bool cuda) const;
  // The blocks a run uses: gpu-batch-size x num-gpu-batches when --gpu-batch-size was given, else
  // `batches` (--batch-size). InvalidArgumentError when --batch-size was given too and differs.
  std::vector<int64_t> blocks(const std::vector<int64_t>& batches, bool batch_given) const;
  // The GPU batch of a block: --gpu-batch-size, else the block cut into --num-gpu-batches.
  int64_t gpu_batch(int64_t block) const;
  // What a run holds while parts of it live away from the compute tier; empty when nothing does.
  struct Active {
    std::unique_ptr<io::OffloadDir> dir;
    std::unique_ptr<WeightStream> weights;
    std::unique_ptr<KvStream> cache;
    std::unique_ptr<kernels::Backend> host;  // where a GPU run's KV cache lives (--cpu-cache-compute)
    // Model's LayerLoaded hook: the weight stream places each layer as it loads (none without one).
    LayerLoaded on_loaded() const;
  };
  // Before the model loads: the private offload folder (when something goes to disk) and the weight
  // stream (when weights live away from the compute tier).
  Active prepare(const OffloadPolicy& policy, kernels::Backend& backend, const ComputePlacement& compute) const;
  // After it loaded: the stage streams the weights, and gets a KV cache with its disk share there.
  void attach(const OffloadPolicy& policy, Active& active, Stage& stage) const;
};

// Records a trace (runtime/core/trace.h) to `path` from construction until close() (which reports
// a write error) or destruction; nothing when `path` is empty.
class TraceFile {
 public:
  explicit TraceFile(const std::string& path);
  ~TraceFile();
  TraceFile(const TraceFile&) = delete;
  TraceFile& operator=(const TraceFile&) = delete;
  void close();

 private:
  bool on_;
};

// --device cpu|cuda[:N] and --dtype: where a run computes and in which dtype.
struct EngineOptions {
  std::string device = "cpu";
  std::optional<std::string> dtype;
  void add_flags(CLI::App& cmd);
  bool cuda() const { return device != "cpu"; }
  // The compute placement for `spec`: F32 on the CPU (the only dtype it computes in); on the GPU
  // --dtype, else the checkpoint's 16-bit type (float16 for an f32 checkpoint).
  ComputePlacement placement(const ModelSpec& spec) const;
  // The backend; UnsupportedError without CUDA, InvalidArgumentError for a device index out of range.
  std::unique_ptr<kernels::Backend> make_backend() const;
  // The source's model with its weights in the backend's tier and the compute dtype (GPU runs), or
  // placed layer by layer by `on_loaded` when there is one (offloading).
  std::unique_ptr<Model> load(const ModelSource& source, kernels::Backend& backend, const ComputePlacement& p,
                              const LayerLoaded& on_loaded = {}) const;
};

// Token ids written as "2,40313,318", "[2, 40313, 318]" or "2 40313 318". A word that is not a
// non-negative 32-bit integer is an InvalidArgumentError naming it.
std::vector<int32_t> parse_token_ids(const std::string& text);

// --threads N: OpenMP threads for the CPU backend (0: all cores), bounded (flag_checks.h).
void add_threads_flag(CLI::App& cmd, int& threads);
void apply_threads(int threads);

// --cpu-mem SIZE: the host memory budget, and its value in bytes (none: what the machine has).
void add_memory_flags(CLI::App& cmd, std::optional<std::string>& cpu_mem);
std::optional<uint64_t> parse_budget(const std::optional<std::string>& text, const char* flag);

}  // namespace tiergen::cli
