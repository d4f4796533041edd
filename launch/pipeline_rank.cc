#include "launch/pipeline_rank.h"

#include <filesystem>

#include "comm/local_transport.h"
#include "comm/mpi_transport.h"
#include "launch/flag_checks.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen::cli {

void PipelineOptions::add_flags(CLI::App& cmd) {
  cmd.add_option("--micro-batches", micro_batches,
                 "Under mpirun: blocks of sequences in flight through the pipeline at once, each in its own KV cache "
                 "slots (default: one per stage)")
      ->check(integer_in(1, 1024));
  cmd.add_option("--stage-layers", stage_layers,
                 "Under mpirun -np N: the first decoder layer of stages 1..N-1, e.g. 16 or 10,20,30 (default: equal "
                 "shares)")
      ->delimiter(',');
  cmd.add_option("--comm-timeout", comm_timeout,
                 "Under mpirun: the longest wait for another rank during a run, e.g. 60s or 5m; past it the rank "
                 "stops, naming the one it waited for (default 120s)");
  cmd.add_option("--load-timeout", load_timeout,
                 "Under mpirun: the longest wait for rank 0 to read the prompts and for every rank to load its layers "
                 "(default 1h)");
  cmd.add_option("--cluster-config", cluster_config,
                 "Under mpirun: a YAML file with one entry per rank: its device, budgets, --percent, threads and "
                 "first layer (cluster-configs/, docs/pipeline.md)");
}

PipelineRank::PipelineRank(const PipelineOptions& o, const ModelSpec& spec) {
  std::optional<ClusterConfig> config;
  if (!o.cluster_config.empty()) config = load_cluster_config(o.cluster_config);
  timeout_ = parse_duration(config && config->comm_timeout ? *config->comm_timeout : o.comm_timeout,
                            config && config->comm_timeout ? o.cluster_config + ": comm_timeout" : "--comm-timeout");
  load_timeout_ = parse_duration(o.load_timeout, "--load-timeout");
  if (comm::launched_by_mpirun()) {
    if (!comm::have_mpi())
      throw UnsupportedError("started by mpirun with " + std::to_string(comm::mpirun_size()) +
                             " ranks, but this tiergen was built without MPI (install libopenmpi-dev and rebuild)");
    t_ = comm::make_mpi_transport();
    mpi_ = true;
  } else {
    hub_ = std::make_unique<comm::LocalHub>(1);
    t_ = hub_->endpoint(0);
  }
  if (!o.stage_layers.empty() && t_->size() == 1)
    throw InvalidArgumentError("--stage-layers cuts a pipeline of several ranks: start it with mpirun -np N");
  std::vector<int64_t> first_layers = o.stage_layers;
  micro_ = o.micro_batches > 0 ? o.micro_batches : t_->size();
  if (config) {
    if (static_cast<int>(config->stages.size()) != t_->size())
      throw InvalidArgumentError(o.cluster_config + " describes " + std::to_string(config->stages.size()) +
                                 " stages, but mpirun started " + std::to_string(t_->size()) + " rank" +
                                 (t_->size() == 1 ? "" : "s") + ": start it with mpirun -np " +
                                 std::to_string(config->stages.size()));
    if (!o.stage_layers.empty() && !config->first_layers().empty())
      throw InvalidArgumentError("--stage-layers and the first_layer entries of " + o.cluster_config +
                                 " both cut the layers: give one");
    if (first_layers.empty()) first_layers = config->first_layers();
    if (config->micro_batches) micro_ = *config->micro_batches;
    config_ = config->stages[static_cast<size_t>(t_->rank())];
  }
  span_ = comm::stage_spans(spec.num_layers, t_->size(), first_layers)[static_cast<size_t>(t_->rank())];
  stage_spec_ = spec;
  model_layers_ = spec.num_layers;
  // The embedding and head are counted with every stage's plan (a small part of a large model).
  const auto [first, end] = comm::decoder_layers(span_, spec.num_layers);
  stage_spec_.num_layers = end - first;
}

PipelineRank::~PipelineRank() = default;

void PipelineRank::apply(EngineOptions& engine, BudgetOptions& budgets, OffloadOptions& offload, int& threads) const {
  if (!config_) return;
  if (config_->device) engine.device = *config_->device;
  if (config_->gpu_mem) budgets.gpu_mem = config_->gpu_mem;
  if (config_->cpu_mem) budgets.cpu_mem = config_->cpu_mem;
  if (config_->disk_mem) budgets.disk_mem = config_->disk_mem;
  if (config_->percent) offload.percent = *config_->percent;
  if (config_->threads) threads = *config_->threads;
}

std::string PipelineRank::describe() const {
  return "stage " + std::to_string(t_->rank()) + " of " + std::to_string(t_->size()) + " (" + t_->describe(t_->rank()) +
         "): " + comm::describe_span(span_, model_layers_);
}

std::string PipelineRank::trace_path(const std::string& file) const {
  if (file.empty() || size() == 1) return file;
  const std::filesystem::path p(file);
  return (p.parent_path() / (p.stem().string() + ".rank" + std::to_string(t_->rank()) + p.extension().string()))
      .string();
}

int PipelineRank::run(const std::function<int()>& body) {
  const int rc = comm::reporting_failures(*t_, body);
  if (mpi_) comm::finish_mpi(*t_, timeout_);
  return rc;
}

PipelineRank::Loaded PipelineRank::load(const ModelSource& source, EngineOptions& engine, const OffloadOptions& offload,
                                        std::optional<OffloadPolicy>& policy, const std::vector<RunShape>& shapes,
                                        const BudgetOptions::Bytes& budgets, const std::string& length_flag) {
  Loaded l;
  // Each rank drives the GPU of its place on its node, unless the command named one.
  if (engine.device == "cuda" && size() > 1) engine.device = "cuda:" + std::to_string(comm::node_local_rank(*t_));
  const ComputePlacement compute = engine.placement(stage_spec_);
  // Every rank checks its own plan; all learn any rank's failure before anything is loaded.
  std::exception_ptr failed;
  try {
    l.backend = engine.make_backend();
    const OffloadPolicy* pol = policy ? &*policy : nullptr;
    l.capacities = capacities(budgets, l.backend.get(), pol);
    for (const RunShape& shape : shapes) {
      if (policy)
        policy->gpu_batch_size = offload.gpu_batch(shape.block_slots > 0 ? shape.block_slots : shape.cache_slots);
      l.plans.push_back(source.check_memory(stage_spec_, shape, l.capacities, compute, pol, length_flag));
    }
  } catch (...) {
    failed = std::current_exception();
  }
  comm::agree(*t_, failed, timeout_);
  l.backend->set_memory_limit(budgets.gpu);
  if (policy) l.offloaded = offload.prepare(*policy, *l.backend, compute);
  l.model = engine.load(source, *l.backend, compute, l.offloaded.on_loaded(), span_);
  l.stage = std::make_unique<Stage>(*l.model, *l.backend, span_.begin, std::min(span_.end, l.model->layers().size()),
                                    StageDtypes{compute.activations, compute.kv_cache});
  if (policy) offload.attach(*policy, l.offloaded, *l.stage);
  // Loading takes each rank its own time; the run starts when all are ready.
  comm::agree(*t_, nullptr, load_timeout_);
  return l;
}

}  // namespace tiergen::cli
