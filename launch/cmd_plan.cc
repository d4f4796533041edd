// tiergen plan: the memory plan of a run (a model, a placement policy, a block shape) per tier,
// checked against the budgets and what the machine has, without loading a weight. It is the same
// plan `generate` and `bench` check before they allocate anything, so a policy can be tried out on
// any machine, also one without the GPU it is meant for (--gpu-mem then stands in for the card).
#include <climits>
#include <iostream>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen::cli {
namespace {

struct PlanArgs {
  ModelSource source;
  EngineOptions engine;
  OffloadOptions offload;
  BudgetOptions budgets;
  int64_t batch_size = 1;
  CLI::Option* batch_flag = nullptr;
  int64_t prompt_len = 512, gen_len = 32;
};

int run_plan(PlanArgs& a) {
  const ModelSpec s = a.source.spec();
  const BudgetOptions::Bytes budgets = a.budgets.bytes(a.engine.cuda());
  check_context(s, a.prompt_len, a.gen_len, "--prompt-len + --gen-len");
  const ComputePlacement compute = a.engine.placement(s);
  std::optional<OffloadPolicy> policy = a.offload.policy(a.engine.cuda());
  const int64_t block = a.offload.blocks({a.batch_size}, a.batch_flag->count() > 0).front();
  const int64_t gpu_batch = std::min(block, a.offload.gpu_batch(block));
  if (policy) policy->gpu_batch_size = gpu_batch;
  // The GPU's free memory where one is visible; elsewhere the plan is checked against --gpu-mem.
  std::unique_ptr<kernels::Backend> gpu;
  if (a.engine.cuda() && kernels::cuda_available()) gpu = a.engine.make_backend();
  const OffloadPolicy* pol = policy ? &*policy : nullptr;
  const Capacities cap = capacities(budgets, gpu.get(), pol);
  const MemoryPlan plan = a.source.plan_memory(s, uniform_run_shape(block, a.prompt_len, a.gen_len), compute, pol);

  const int64_t batches = (block + gpu_batch - 1) / gpu_batch;
  const uint64_t weights = static_cast<uint64_t>(s.num_params()) * dtype_size(compute.weights);
  std::cout << "model: " << a.source.name() << " (" << family_name(s.family) << ", " << s.num_layers << " layers, "
            << s.num_params() << " parameters, " << format_bytes(weights) << " in " << dtype_name(compute.weights)
            << ")\n"
            << "compute: " << (a.engine.cuda() ? a.engine.device : "cpu") << ", " << dtype_name(compute.activations)
            << "\n"
            << "policy: " << (policy ? policy->describe() : "everything on the compute device (no --percent)") << "\n"
            << "block: " << block << (block == 1 ? " sequence (" : " sequences (") << batches
            << (batches == 1 ? " GPU batch of " : " GPU batches of ") << gpu_batch << "), " << a.prompt_len
            << " prompt + " << a.gen_len << " new tokens each\n"
            << plan.table(cap);
  std::cout.flush();
  plan.check(cap, pol ? pol->offload_dir : std::string(), memory_hint(pol, "--gen-len"));
  std::cout << "fits: yes\n";
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
  a->batch_flag = cmd->add_option("-b,--batch-size", a->batch_size, "Sequences per block (default 1)")
                      ->check(integer_in(1, 1 << 20));
  cmd->add_option("--prompt-len", a->prompt_len, "Prompt tokens per sequence (default 512)")
      ->check(integer_in(1, INT32_MAX));
  cmd->add_option("--gen-len", a->gen_len, "Generated tokens per sequence (default 32)")
      ->check(integer_in(1, INT32_MAX));
  return {cmd, [a] { return run_plan(*a); }};
}

}  // namespace tiergen::cli
