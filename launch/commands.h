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
Command add_plan(CLI::App& app);
// The coordinator and its clients (launch/cmd_coordinator.cc, cmd_worker.cc, cmd_jobs.cc): submit,
// jobs, watch, results, cancel, workers.
Command add_coordinator(CLI::App& app);
Command add_worker(CLI::App& app);
std::vector<Command> add_job_commands(CLI::App& app);
// A command of a build without gRPC: it exists, and says what the build lacks.
Command add_without_grpc(CLI::App& app, const char* name);

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
  std::unique_ptr<Model> load(const LayerLoaded& on_loaded = {}, LayerSpan span = {}) const;
  // The folder's tokenizer.json, checked against the model's vocabulary; null for dummy models and
  // folders without one.
  std::unique_ptr<Tokenizer> tokenizer(const ModelSpec& spec) const;
  // The run's memory plan: host memory (weights generated in place or mapped, KV cache,
  // activations), the GPU's part of a GPU run and, with an offloading policy, each tier's share and
  // the disk.
  MemoryPlan plan_memory(const ModelSpec& spec, const RunShape& shape, const ComputePlacement& compute,
                         const OffloadPolicy* policy = nullptr, ModelEnds ends = {}) const;
  // The plan, checked against `cap` before anything large is allocated: OutOfMemoryError (host,
  // GPU) or IoError (disk) naming what does not fit and what to change (`length_flag`: the
  // command's flag for new tokens). Returns the plan.
  MemoryPlan check_memory(const ModelSpec& spec, const RunShape& shape, const Capacities& cap,
                          const ComputePlacement& compute, const OffloadPolicy* policy, const std::string& length_flag,
                          ModelEnds ends = {}) const;
};

// --percent, --gpu-batch-size, --num-gpu-batches, --offload-dir, --no-overlap, --pin-weight
// (launch/offload_options.cc).
struct OffloadOptions {
  std::vector<double> percent;
  std::optional<int64_t> gpu_batch_size;
  int64_t num_gpu_batches = 1;
  std::string offload_dir;
  bool overlap = true;
  bool cpu_cache_compute = false;
  int pin_weight = 1;      // FlexGen's --pin-weight 0/1
  std::string trace_file;  // --trace
  // `runs`: the command runs the model (generate, bench), so --trace applies; plan has no run.
  void add_flags(CLI::App& cmd, bool runs = true);
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
                              const LayerLoaded& on_loaded = {}, LayerSpan span = {}) const;
};

// Token ids written as "2,40313,318", "[2, 40313, 318]" or "2 40313 318". A word that is not a
// non-negative 32-bit integer is an InvalidArgumentError naming it.
std::vector<int32_t> parse_token_ids(const std::string& text);

// --threads N: OpenMP threads for the CPU backend (0: all cores), bounded (flag_checks.h).
void add_threads_flag(CLI::App& cmd, int& threads);
void apply_threads(int threads);

// --cpu-mem, --gpu-mem, --disk-mem SIZE: what a run may use of host memory, of the GPU's and of the
// offload folder's filesystem (none: what the machine has). The memory plan is checked against
// them before anything is allocated; the GPU budget also caps the backend's allocations.
struct BudgetOptions {
  std::optional<std::string> cpu_mem, gpu_mem, disk_mem;
  void add_flags(CLI::App& cmd);
  // In bytes; InvalidArgumentError naming the flag for a size that is not one, and for --gpu-mem
  // on a run that computes on the CPU (`cuda` false).
  struct Bytes {
    std::optional<uint64_t> cpu, gpu, disk;
  };
  Bytes bytes(bool cuda) const;
};

// What each tier can give a run: the budgets, the GPU's free memory (`gpu`, null for CPU runs or
// where no GPU is visible) and the offload folder's free space (`policy`'s folder, when it has one).
Capacities capacities(const BudgetOptions::Bytes& budgets, const kernels::Backend* gpu, const OffloadPolicy* policy);
// What to change when a plan does not fit, with or without an offloading policy.
// What to change when a plan does not fit; `length_flag` is the command's flag for new tokens.
std::string memory_hint(const OffloadPolicy* policy, const std::string& length_flag);

}  // namespace tiergen::cli
