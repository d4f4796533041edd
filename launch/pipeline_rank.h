// This process's place in a pipeline (launch/pipeline_rank.cc): the same `tiergen generate|bench`
// runs alone or as one rank of `mpirun -np N tiergen ...`. Alone it is a pipeline of one; under
// mpirun each rank loads and runs its own stage, rank 0 reads the prompts, drives the Generator and
// prints, and every wait between ranks is bounded by --comm-timeout.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "comm/layer_balance.h"
#include "comm/local_transport.h"
#include "comm/pipeline.h"
#include "comm/stage_link.h"
#include "comm/transport.h"
#include "launch/cluster_config.h"
#include "launch/commands.h"

namespace tiergen::cli {

// --micro-batches, --stage-layers, --comm-timeout, --load-timeout.
struct PipelineOptions {
  int micro_batches = 0;              // blocks in flight; 0: one per stage
  std::vector<int64_t> stage_layers;  // the first decoder layer of each stage after the first
  std::string comm_timeout = "120s", load_timeout = "1h";
  std::string cluster_config;       // launch/cluster_config.h
  std::string stage_link = "auto";  // comm/stage_link.h
  void add_flags(CLI::App& cmd);
};

class PipelineRank {
 public:
  // Joins the mpirun job when there is one (else a pipeline of one) and finds this rank's layers.
  // InvalidArgumentError for flags that do not fit the model or the rank count.
  PipelineRank(const PipelineOptions& o, const ModelSpec& spec);
  ~PipelineRank();

  comm::Transport& transport() { return *t_; }
  bool first() const { return t_->rank() == 0; }
  int size() const { return t_->size(); }
  int micro_batches() const { return micro_; }
  comm::Duration timeout() const { return timeout_; }
  // The wait for what takes long before a run: rank 0 reading and tokenizing the prompts, loading.
  comm::Duration load_timeout() const { return load_timeout_; }
  LayerSpan span() const { return span_; }
  // The model as this rank's memory plan sees it: its decoder layers, with ends().
  const ModelSpec& stage_spec() const { return stage_spec_; }
  // The ends of the model this rank holds: the embedding on the first, the head on the last.
  ModelEnds ends() const { return comm::span_ends(span_, model_spec_.num_layers); }
  // This rank's settings from --cluster-config, over the command line's (nothing without one).
  void apply(EngineOptions& engine, BudgetOptions& budgets, OffloadOptions& offload, int& threads) const;
  // The GPU batch this rank's cluster-config entry gives it, else 0 (it cuts blocks as rank 0
  // does), for comm::serve_stage.
  int64_t stage_gpu_batch() const { return config_ && config_->gpu_batch_size ? *config_->gpu_batch_size : 0; }
  // "stage 1 of 2 (rank 1 (host a)): decoder layers 16-31, the head".
  // After load(): how the layers were assigned when the stages differed (empty: equal shares or
  // the given cuts).
  const std::string& balance_note() const { return balance_note_; }
  std::string describe() const;
  // --trace FILE for this rank: FILE alone, else FILE with ".rankR" before its extension, one per rank.
  std::string trace_path(const std::string& file) const;

  // Under mpirun, on rank 0 between runs: every stage's computing and waiting times since the last
  // report, as lines for `out` (nothing for a pipeline of one), and, when `trace_file` is set, the
  // ranks' spans of that period merged into it, one process per rank (each rank's own file is
  // trace_path's).
  std::string report(comm::PipelineExecutor& exec, const std::string& trace_file) const;

  // Who assigns the layers instead of this group (a coordinator, for `tiergen worker`): on rank 0,
  // with every stage's estimated cost and a JSON description of each rank (host, device, budgets),
  // it returns the first layer of every stage after the first (empty: equal shares) and a note for
  // the log. Set before load(); used when no cuts were given and there is more than one stage.
  struct Assignment {
    std::vector<int64_t> first_layers;
    std::string note;
  };
  using Assigner = std::function<Assignment(const std::vector<comm::StageCost>&, const std::vector<std::string>&)>;
  void set_assigner(Assigner a) { assigner_ = std::move(a); }
  // Whether the layers are balanced by cost (no cuts given, several stages).
  bool balanced() const { return balance_; }
  // This rank's description for an assigner: {"rank", "host", "device", the budgets}.
  std::string rank_json(const EngineOptions& engine, const BudgetOptions::Bytes& budgets) const;

  // Runs `body` (which returns the exit status); when it throws, the other ranks are told why and
  // the error goes on to main(). After success, the ranks end together (MPI finalised).
  int run(const std::function<int()>& body);

  // This rank's stage: the memory plan checked for each of `shapes` (on every rank, before any
  // loads), then its layers loaded, placed by the policy, and every rank waited for.
  struct Loaded {
    std::unique_ptr<kernels::Backend> backend;
    OffloadOptions::Active offloaded;
    std::unique_ptr<Model> model;
    std::unique_ptr<Stage> stage;
    std::vector<MemoryPlan> plans;  // one per shape
    Capacities capacities;
    std::unique_ptr<comm::StageLinks> links;  // last: its device links end before the backend
  };
  // What load() does before it loads: this rank's backend (none for a plan of a GPU this machine
  // lacks, when `planning`), its capacities, the layer assignment (balanced when the stages differ),
  // and its memory plan per shape; `failed`: what went wrong on this rank, for comm::agree.
  struct Assigned {
    std::unique_ptr<kernels::Backend> backend;
    Capacities capacities;
    std::vector<MemoryPlan> plans;
    std::exception_ptr failed;
    bool sized = false;  // the capacities are known (the backend, if any, was made)
  };
  Assigned assign(const ModelSource& source, EngineOptions& engine, const OffloadOptions& offload,
                  std::optional<OffloadPolicy>& policy, const std::vector<RunShape>& shapes,
                  const BudgetOptions::Bytes& budgets, const std::string& length_flag, bool planning);
  Loaded load(const ModelSource& source, EngineOptions& engine, const OffloadOptions& offload,
              std::optional<OffloadPolicy>& policy, const std::vector<RunShape>& shapes,
              const BudgetOptions::Bytes& budgets, const std::string& length_flag);

 private:
  void set_span(const std::vector<int64_t>& first_layers);
  // Without given cuts, stages whose settings differ get layers by cost (comm/layer_balance.h):
  // each estimates its decode step per layer from its measured rates and the layers its budgets
  // hold, and all find the same split. Equal stages keep the equal split, measuring nothing.
  void rebalance(const ModelSource& source, const EngineOptions& engine, kernels::Backend& backend,
                 std::optional<OffloadPolicy>& policy, const OffloadOptions& offload,
                 const std::vector<RunShape>& shapes, const Capacities& cap, const BudgetOptions::Bytes& budgets,
                 const std::string& length_flag);
  comm::StageCost stage_cost(const ModelSource& source, const EngineOptions& engine, kernels::Backend& backend,
                             std::optional<OffloadPolicy>& policy, const OffloadOptions& offload,
                             const std::vector<RunShape>& shapes, const Capacities& cap,
                             const BudgetOptions::Bytes& budgets, const std::string& length_flag) const;

  std::unique_ptr<comm::LocalHub> hub_;  // a pipeline of one
  std::unique_ptr<comm::Transport> t_;
  int micro_ = 1;
  comm::Duration timeout_, load_timeout_;
  LayerSpan span_;
  ModelSpec model_spec_, stage_spec_;  // the whole model's, and this stage's decoder layers
  bool balance_ = false;               // no cuts given: balanced by cost when the stages differ
  std::string balance_note_;
  bool mpi_ = false;
  std::optional<StageConfig> config_;  // this rank's stage in --cluster-config
  comm::LinkMode link_mode_ = comm::LinkMode::Auto;
  Assigner assigner_;
};

}  // namespace tiergen::cli
