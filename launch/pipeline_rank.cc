#include "launch/pipeline_rank.h"

#include <nlohmann/json.hpp>

#include <omp.h>

#include <algorithm>
#include <filesystem>

#include "comm/layer_balance.h"
#include "comm/local_transport.h"
#include "comm/mpi_transport.h"
#include "launch/flag_checks.h"
#include "runtime/core/error.h"
#include "runtime/core/trace.h"
#include "runtime/core/units.h"
#include "runtime/generate/rates.h"
#include "runtime/policy/roofline.h"

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
  cmd.add_option("--stage-link", stage_link,
                 "Under mpirun: how hidden states go between stages: auto (NCCL between two GPUs, else through host "
                 "memory), host, or nccl (an error where a pair of stages cannot use it); default auto");
}

PipelineRank::PipelineRank(const PipelineOptions& o, const ModelSpec& spec) {
  std::optional<ClusterConfig> config;
  if (!o.cluster_config.empty()) config = load_cluster_config(o.cluster_config);
  timeout_ = parse_duration(config && config->comm_timeout ? *config->comm_timeout : o.comm_timeout,
                            config && config->comm_timeout ? o.cluster_config + ": comm_timeout" : "--comm-timeout");
  load_timeout_ = parse_duration(o.load_timeout, "--load-timeout");
  link_mode_ = comm::parse_link_mode(o.stage_link);
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
  balance_ = first_layers.empty() && t_->size() > 1;
  model_spec_ = spec;
  set_span(first_layers);
}

void PipelineRank::set_span(const std::vector<int64_t>& first_layers) {
  span_ = comm::stage_spans(model_spec_.num_layers, t_->size(), first_layers)[static_cast<size_t>(t_->rank())];
  stage_spec_ = model_spec_;
  // The plan counts the embedding and the head where the stage holds them (ends()).
  const auto [first, end] = comm::decoder_layers(span_, model_spec_.num_layers);
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
  // Stage 0's GPU batch also sizes the blocks; the other stages cut rank 0's blocks their own way
  // (their policy's GPU batch, set in assign, and serve_stage), so their blocks stay rank 0's.
  if (config_->gpu_batch_size && t_->rank() == 0) offload.gpu_batch_size = *config_->gpu_batch_size;
}

std::string PipelineRank::describe() const {
  return "stage " + std::to_string(t_->rank()) + " of " + std::to_string(t_->size()) + " (" + t_->describe(t_->rank()) +
         "): " + comm::describe_span(span_, model_spec_.num_layers);
}

std::string PipelineRank::trace_path(const std::string& file) const {
  if (file.empty() || size() == 1) return file;
  const std::filesystem::path p(file);
  return (p.parent_path() / (p.stem().string() + ".rank" + std::to_string(t_->rank()) + p.extension().string()))
      .string();
}

std::string PipelineRank::report(comm::PipelineExecutor& exec, const std::string& trace_file) const {
  if (size() == 1) return {};
  const std::vector<comm::StageTimes> times = exec.report(!trace_file.empty());
  if (!trace_file.empty()) {
    std::vector<std::string> events;
    events.reserve(times.size());
    for (const comm::StageTimes& s : times) events.push_back(s.trace_events);
    trace::write_merged(trace_file, events);
  }
  return "pipeline stages (their time over the run):\n" + comm::describe_times(times);
}

int PipelineRank::run(const std::function<int()>& body) {
  const int rc = comm::reporting_failures(*t_, body);
  if (mpi_) comm::finish_mpi(*t_, timeout_);
  return rc;
}

namespace {

// What decides a stage's speed and room, as text: stages whose settings all read the same share
// the layers equally, without measuring anything.
std::string stage_signature(const EngineOptions& engine, const kernels::Backend& be,
                            const BudgetOptions::Bytes& budgets, const OffloadPolicy* policy) {
  auto opt = [](const std::optional<uint64_t>& b) { return b ? std::to_string(*b) : std::string("-"); };
  std::string sig = engine.device + "|" + be.name() + "|" + opt(budgets.gpu) + "|" + opt(budgets.cpu) + "|" +
                    opt(budgets.disk) + "|" + std::to_string(omp_get_max_threads());
  if (policy)
    sig +=
        "|" + policy->describe() + "|" + std::to_string(policy->cpu_cache_compute) + std::to_string(policy->pin_weight);
  return sig;
}

// The memory plan of `spec` (with `ends`) for each of `shapes`, checked against `cap`: the policy's
// GPU batch is set for each shape as the run will cut it. OutOfMemoryError (or IoError, disk) when
// one does not fit.
std::vector<MemoryPlan> check_plans(const ModelSource& source, const ModelSpec& spec, ModelEnds ends,
                                    const std::vector<RunShape>& shapes, const Capacities& cap,
                                    const ComputePlacement& compute, std::optional<OffloadPolicy>& policy,
                                    const OffloadOptions& offload, const std::string& length_flag) {
  std::vector<MemoryPlan> plans;
  for (const RunShape& shape : shapes) {
    if (policy)
      policy->gpu_batch_size = offload.gpu_batch(shape.block_slots > 0 ? shape.block_slots : shape.cache_slots);
    plans.push_back(source.check_memory(spec, shape, cap, compute, policy ? &*policy : nullptr, length_flag, ends));
  }
  return plans;
}

}  // namespace

comm::StageCost PipelineRank::stage_cost(const ModelSource& source, const EngineOptions& engine,
                                         kernels::Backend& backend, std::optional<OffloadPolicy>& policy,
                                         const OffloadOptions& offload, const std::vector<RunShape>& shapes,
                                         const Capacities& cap, const BudgetOptions::Bytes& budgets,
                                         const std::string& length_flag) const {
  const ComputePlacement compute = engine.placement(model_spec_);
  // The most layers whose memory plan fits every shape (a plan grows with its layers).
  auto fits = [&](int64_t n) {
    ModelSpec s = model_spec_;
    s.num_layers = n;
    try {
      check_plans(source, s, ends(), shapes, cap, compute, policy, offload, length_flag);
    } catch (const OutOfMemoryError&) {
      return false;
    } catch (const IoError&) {  // the disk tier's room
      return false;
    }
    return true;
  };
  comm::StageCost c;
  int64_t lo = 0, hi = model_spec_.num_layers;  // fits(lo); the answer is in [lo, hi]
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (fits(mid))
      lo = mid;
    else
      hi = mid - 1;
  }
  c.max_layers = lo;
  // The rates of this stage's device, measured now: the probe's buffers are not the run's.
  const bool gpu = compute.tier == Tier::Gpu;
  backend.set_memory_limit(std::nullopt);
  const DeviceRates rates = measure_rates(backend, compute.activations, compute.weights, gpu && policy);
  backend.set_memory_limit(budgets.gpu);
  const RunShape& big = *std::max_element(shapes.begin(), shapes.end(), [](const RunShape& a, const RunShape& b) {
    return a.cache_slots * a.cache_capacity < b.cache_slots * b.cache_capacity;
  });
  const int64_t block = big.block_slots > 0 ? big.block_slots : big.cache_slots;
  const double streamed = gpu && policy ? 1.0 - policy->weights.gpu / 100.0 : 0.0;
  const bool host_cache = gpu && policy && policy->cpu_cache_compute && policy->cache.cpu > 0;
  const StepCost step = decode_step_cost(model_spec_, block, big.cache_capacity, compute.weights, compute.kv_cache,
                                         streamed, host_cache, rates);
  c.seconds_per_layer = step.per_layer;
  c.fixed_seconds = t_->rank() + 1 == t_->size() ? step.head : 0.0;
  return c;
}

void PipelineRank::rebalance(const ModelSource& source, const EngineOptions& engine, kernels::Backend& backend,
                             std::optional<OffloadPolicy>& policy, const OffloadOptions& offload,
                             const std::vector<RunShape>& shapes, const Capacities& cap,
                             const BudgetOptions::Bytes& budgets, const std::string& length_flag) {
  if (!assigner_) {
    const auto sigs =
        comm::all_gather_text(*t_, stage_signature(engine, backend, budgets, policy ? &*policy : nullptr), timeout_);
    if (std::all_of(sigs.begin(), sigs.end(), [&](const auto& s) { return s == sigs.front(); })) return;
  }
  // The stages differ (or an assigner decides): each estimates its decode step per layer and the
  // layers it has room for.
  comm::StageCost mine;
  std::exception_ptr failed;
  try {
    mine = stage_cost(source, engine, backend, policy, offload, shapes, cap, budgets, length_flag);
  } catch (...) {
    failed = std::current_exception();
  }
  comm::agree(*t_, failed, timeout_);
  std::vector<comm::StageCost> costs;
  for (const auto& c : comm::all_gather_values(*t_, std::vector<comm::StageCost>{mine}, timeout_))
    costs.push_back(c.front());
  if (assigner_) {
    const auto ranks = comm::all_gather_text(*t_, rank_json(engine, budgets), timeout_);
    // Rank 0 asks; every rank learns the answer (or rank 0's failure to get one).
    Assignment got;
    failed = nullptr;
    if (first()) {
      try {
        got = assigner_(costs, ranks);
      } catch (...) {
        failed = std::current_exception();
      }
    }
    comm::agree(*t_, failed, load_timeout_);
    std::string cuts;
    for (int64_t f : got.first_layers) cuts += std::to_string(f) + ",";
    const auto shared = comm::all_gather_text(*t_, first() ? cuts + "|" + got.note : std::string(), timeout_);
    const std::string& text = shared.front();
    const size_t bar = text.find('|');
    std::vector<int64_t> first_layers;
    for (size_t at = 0; at < bar;) {
      const size_t comma = text.find(',', at);
      first_layers.push_back(std::stoll(text.substr(at, comma - at)));
      at = comma + 1;
    }
    set_span(first_layers);
    balance_note_ = text.substr(bar + 1);
    return;
  }
  // Where the budgets cannot hold the model in any split, the equal one stays: each rank's memory
  // check then names the stages that cannot hold their share, and what to change.
  if (!comm::can_hold(model_spec_.num_layers, costs)) return;
  // Every rank has the same estimates and so finds the same split.
  const std::vector<int64_t> first = comm::balance_layers(model_spec_.num_layers, costs);
  set_span(first);
  balance_note_ = "layers balanced by each stage's estimated decode step: " +
                  comm::describe_balance(first, model_spec_.num_layers, costs);
}

std::string PipelineRank::rank_json(const EngineOptions& engine, const BudgetOptions::Bytes& budgets) const {
  nlohmann::json j = {{"rank", t_->rank()},
                      {"host", t_->describe(t_->rank())},
                      {"device", engine.device},
                      {"gpu_budget_bytes", budgets.gpu.value_or(0)},
                      {"cpu_budget_bytes", budgets.cpu.value_or(0)},
                      {"disk_budget_bytes", budgets.disk.value_or(0)}};
  return j.dump();
}

PipelineRank::Assigned PipelineRank::assign(const ModelSource& source, EngineOptions& engine,
                                            const OffloadOptions& offload, std::optional<OffloadPolicy>& policy,
                                            const std::vector<RunShape>& shapes, const BudgetOptions::Bytes& budgets,
                                            const std::string& length_flag, bool planning) {
  Assigned a;
  // Each rank drives the GPU of its place on its node, unless the command named one.
  if (engine.device == "cuda" && size() > 1) engine.device = "cuda:" + std::to_string(comm::node_local_rank(*t_));
  // A stage's own GPU batch is what its plan, its buffers and its cut of a block are made for.
  if (policy && stage_gpu_batch() > 0) policy->gpu_batch_size = stage_gpu_batch();
  // Every rank checks its own plan; all learn any rank's failure before anything is loaded.
  const OffloadPolicy* pol = policy ? &*policy : nullptr;
  try {
    // A plan for a GPU this machine lacks is checked against --gpu-mem alone.
    if (!planning || !engine.cuda() || kernels::cuda_available()) a.backend = engine.make_backend();
    a.capacities = capacities(budgets, a.backend.get(), pol);
    a.sized = true;
  } catch (...) {
    a.failed = std::current_exception();
  }
  if (balance_) {  // the layer assignment comes first: each rank's plan is for its own layers
    comm::agree(*t_, a.failed, timeout_);
    // Balancing measures each stage's device: a plan made where some stage's GPU is absent keeps
    // the equal split, and says so.
    const auto here = comm::all_gather(*t_, {static_cast<std::byte>(a.backend != nullptr)}, timeout_);
    if (std::all_of(here.begin(), here.end(), [](const auto& b) { return b.front() != std::byte{0}; }))
      rebalance(source, engine, *a.backend, policy, offload, shapes, a.capacities, budgets, length_flag);
    else
      balance_note_ =
          "equal shares of the layers: where the stages differ, a run balances them by each stage's cost, measured "
          "on its device, which is not on this machine";
  }
  const ComputePlacement compute = engine.placement(stage_spec_);
  try {
    if (!a.failed)
      a.plans = check_plans(source, stage_spec_, ends(), shapes, a.capacities, compute, policy, offload, length_flag);
  } catch (...) {
    a.failed = std::current_exception();
  }
  return a;
}

PipelineRank::Loaded PipelineRank::load(const ModelSource& source, EngineOptions& engine, const OffloadOptions& offload,
                                        std::optional<OffloadPolicy>& policy, const std::vector<RunShape>& shapes,
                                        const BudgetOptions::Bytes& budgets, const std::string& length_flag) {
  Assigned a = assign(source, engine, offload, policy, shapes, budgets, length_flag, false);
  comm::agree(*t_, a.failed, timeout_);
  Loaded l;
  l.backend = std::move(a.backend);
  l.capacities = a.capacities;
  l.plans = std::move(a.plans);
  const ComputePlacement compute = engine.placement(stage_spec_);
  // The links between the stages before the weights: a pair that cannot have the links asked for
  // is an error on every rank before anything loads, and the links are up when the run starts.
  l.links = std::make_unique<comm::StageLinks>(
      comm::StageLinks::connect(*t_, *l.backend, compute.activations, link_mode_, timeout_));
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
