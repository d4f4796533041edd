// tiergen plan: the memory plan of a run (a model, a placement policy, a block shape) per tier,
// checked against the budgets and what the machine has, without loading a weight. It is the same
// plan `generate` and `bench` check before they allocate anything, so a policy can be tried out on
// any machine, also one without the GPU it is meant for (--gpu-mem then stands in for the card).
// Under mpirun (mpirun -np N tiergen plan --cluster-config FILE ...) it prints each stage's layers
// and plan, the layers assigned as a run would assign them.
#include <climits>
#include <iostream>
#include <sstream>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "launch/pipeline_rank.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen::cli {
namespace {

struct PlanArgs {
  ModelSource source;
  EngineOptions engine;
  OffloadOptions offload;
  BudgetOptions budgets;
  PipelineOptions pipeline;
  int64_t batch_size = 1;
  CLI::Option* batch_flag = nullptr;
  int64_t prompt_len = 512, gen_len = 32;
};

// Under mpirun every rank plans its own stage (its layers, device, budgets and policy) as a run
// would, the layers balanced the same way; rank 0 prints every stage's plan, then every rank stops
// with the first stage's error when one does not fit.
int run_plan(PlanArgs& a, PipelineRank& rank) {
  const ModelSpec s = a.source.spec();
  const BudgetOptions::Bytes budgets = a.budgets.bytes(a.engine.cuda());
  check_context(s, a.prompt_len, a.gen_len, "--prompt-len + --gen-len");
  std::optional<OffloadPolicy> policy = a.offload.policy(a.engine.cuda());
  const int64_t block = a.offload.blocks({a.batch_size}, a.batch_flag->count() > 0).front();
  const int64_t gpu_batch = std::min(block, a.offload.gpu_batch(block));
  const RunShape shape = uniform_run_shape(block, a.prompt_len, a.gen_len, rank.micro_batches());
  PipelineRank::Assigned as = rank.assign(a.source, a.engine, a.offload, policy, {shape}, budgets, "--gen-len", true);
  if (policy) policy->gpu_batch_size = gpu_batch;
  const OffloadPolicy* pol = policy ? &*policy : nullptr;
  const ComputePlacement compute = a.engine.placement(rank.stage_spec());

  // This stage's part: where it computes, its policy, its block, and its memory plan per tier (the
  // table marks what does not fit; the check below is the error).
  std::ostringstream mine;
  if (rank.size() > 1) mine << rank.describe() << "\n";
  const int64_t batches = (block + gpu_batch - 1) / gpu_batch;
  mine << "compute: " << (a.engine.cuda() ? a.engine.device : "cpu") << ", " << dtype_name(compute.activations) << "\n"
       << "policy: " << (policy ? policy->describe() : "everything on the compute device (no --percent)") << "\n"
       << "block: " << block << (block == 1 ? " sequence (" : " sequences (") << batches
       << (batches == 1 ? " GPU batch of " : " GPU batches of ") << gpu_batch << "), " << a.prompt_len << " prompt + "
       << a.gen_len << " new tokens each";
  if (rank.size() > 1) mine << "; " << rank.micro_batches() << " blocks in flight";
  mine << "\n";
  if (as.sized) mine << a.source.plan_memory(rank.stage_spec(), shape, compute, pol, rank.ends()).table(as.capacities);
  const std::vector<std::string> stages = comm::all_gather_text(rank.transport(), mine.str(), rank.timeout());
  if (rank.first()) {
    const uint64_t weights = static_cast<uint64_t>(s.num_params()) * dtype_size(compute.weights);
    std::cout << "model: " << a.source.name() << " (" << family_name(s.family) << ", " << s.num_layers << " layers, "
              << s.num_params() << " parameters, " << format_bytes(weights) << " in " << dtype_name(compute.weights)
              << ")\n";
    if (rank.size() > 1) std::cout << "pipeline: " << rank.size() << " stages\n";
    if (!rank.balance_note().empty()) std::cout << rank.balance_note() << "\n";
    for (const std::string& st : stages) std::cout << st;
    std::cout.flush();
  }
  comm::agree(rank.transport(), as.failed, rank.timeout());
  if (rank.first()) std::cout << (rank.size() > 1 ? "fits: yes, every stage\n" : "fits: yes\n");
  return 0;
}

}  // namespace

Command add_plan(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Print a run's memory plan per tier (GPU, host, disk) and check it against the budgets, loading nothing");
  a->source.add_flags(*cmd);
  a->engine.add_flags(*cmd);
  a->offload.add_flags(*cmd, /*runs=*/false);
  a->budgets.add_flags(*cmd);
  a->pipeline.add_flags(*cmd);
  a->batch_flag = cmd->add_option("-b,--batch-size", a->batch_size, "Sequences per block (default 1)")
                      ->check(integer_in(1, 1 << 20));
  cmd->add_option("--prompt-len", a->prompt_len, "Prompt tokens per sequence (default 512)")
      ->check(integer_in(1, INT32_MAX));
  cmd->add_option("--gen-len", a->gen_len, "Generated tokens per sequence (default 32)")
      ->check(integer_in(1, INT32_MAX));
  return {cmd, [a] {
            PipelineRank rank(a->pipeline, a->source.spec());
            return rank.run([&] {
              int threads = 0;
              rank.apply(a->engine, a->budgets, a->offload, threads);
              apply_threads(threads);
              return run_plan(*a, rank);
            });
          }};
}

}  // namespace tiergen::cli
