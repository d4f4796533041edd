// tiergen bench: FlexGen's throughput benchmark (prompt 512, 32 generated unless told), printed in
// FlexGen's log format plus one JSON line per run. Prompts are seeded random token ids, decoding is
// greedy and ignores EOS, so every run generates exactly batch x gen-len tokens.
#include <omp.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "launch/pipeline_rank.h"
#include "launch/progress.h"
#include "runtime/core/error.h"
#include "runtime/generate/generator.h"
#include "runtime/generate/rates.h"
#include "stage/stage.h"

namespace tiergen::cli {
namespace {

struct BenchArgs {
  ModelSource source;
  EngineOptions engine;
  OffloadOptions offload;
  std::vector<int64_t> batch_sizes = {1};
  CLI::Option* batch_flag = nullptr;  // given or not: it must agree with --gpu-batch-size
  int64_t prompt_len = 512, gen_len = 32;
  uint64_t seed = 0;
  bool json = false, warmup = true, roofline = true;
  int threads = 0;
  BudgetOptions budgets;
  ProgressOptions progress;
  PipelineOptions pipeline;
};

int run_bench(BenchArgs& a, PipelineRank& rank) {
  const ModelSpec s = a.source.spec();
  const BudgetOptions::Bytes budgets = a.budgets.bytes(a.engine.cuda());
  // Every run is checked (context, memory) before the weights are generated or loaded, and before
  // its prompts are made: their size is known from the flags alone, on every rank.
  check_context(s, a.prompt_len, a.gen_len, "--prompt-len + --gen-len");
  std::optional<OffloadPolicy> policy = a.offload.policy(a.engine.cuda());
  const std::vector<int64_t> blocks = a.offload.blocks(a.batch_sizes, a.batch_flag->count() > 0);
  const int micro = rank.micro_batches();
  std::vector<RunShape> shapes;
  for (int64_t bs : blocks) shapes.push_back(uniform_run_shape(bs, a.prompt_len, a.gen_len, micro));
  PipelineRank::Loaded loaded = rank.load(a.source, a.engine, a.offload, policy, shapes, budgets, "--gen-len");
  const ComputePlacement compute = a.engine.placement(rank.stage_spec());
  kernels::Backend* backend = loaded.backend.get();
  OffloadOptions::Active& offloaded = loaded.offloaded;
  // Each run's roofline bound (rank 0): from the rates measured here, on this stage's device, before
  // the runs and outside them; a pipeline's is its slowest stage's, each stage measuring its own.
  std::optional<DeviceRates> rates;
  std::vector<RooflineBound> bounds;
  auto workload = [&](int64_t bs) {
    Workload work{bs, a.prompt_len, a.gen_len, compute.weights, compute.kv_cache};
    if (compute.tier == Tier::Gpu && offloaded.weights)  // what crosses the host link each pass
      work.streamed_weight_bytes =
          static_cast<double>(offloaded.weights->host_bytes() + offloaded.weights->disk_bytes());
    work.cache_on_host = offloaded.host != nullptr;
    if (offloaded.weights) work.disk_weight_bytes = static_cast<double>(offloaded.weights->disk_bytes());
    work.head = rank.transport().rank() + 1 == rank.size();
    return work;
  };
  if (a.roofline) {
    std::vector<RooflineBound> mine;
    std::exception_ptr failed;
    try {
      // The probe's buffers are not the run's: the --gpu-mem cap is lifted while they exist.
      backend->set_memory_limit(std::nullopt);
      const bool on_disk = offloaded.weights && offloaded.weights->disk_bytes() > 0 && offloaded.dir;
      rates = measure_rates(*backend, compute.activations, compute.weights, policy.has_value(),
                            on_disk ? offloaded.dir->path() : std::string());
      backend->set_memory_limit(budgets.gpu);
      for (int64_t bs : blocks) mine.push_back(roofline_bound(rank.stage_spec(), workload(bs), *rates));
    } catch (...) {
      failed = std::current_exception();
    }
    comm::agree(rank.transport(), failed, rank.timeout());
    const auto all = comm::all_gather_values(rank.transport(), mine, rank.timeout());  // [rank][run]
    for (size_t i = 0; i < blocks.size(); ++i) {
      std::vector<RooflineBound> stages;
      for (const auto& of_rank : all) stages.push_back(of_rank[i]);
      bounds.push_back(pipeline_bound(stages, workload(blocks[i])));
    }
  }
  if (!rank.first()) {  // serves every run rank 0 drives, warm-ups included
    TraceFile trace(rank.trace_path(a.offload.trace_file));
    comm::serve_stage(*loaded.stage, rank.transport(), rank.timeout(), loaded.links.get(), rank.stage_gpu_batch());
    trace.close();
    return 0;
  }
  Stage& stage = *loaded.stage;
  const Model* model = loaded.model.get();
  const std::vector<MemoryPlan>& plans = loaded.plans;
  const Capacities& cap = loaded.capacities;
  comm::PipelineExecutor exec(stage, rank.transport(), 0, micro, rank.timeout(), loaded.links.get());
  if (rank.size() > 1)
    std::cout << "pipeline: " << rank.size() << " stages, " << micro << " blocks in flight; this is " << rank.describe()
              << "\n";
  if (!rank.balance_note().empty()) std::cout << rank.balance_note() << "\n";
  if (!loaded.links->note().empty()) std::cout << loaded.links->note() << "\n";
  if (policy) {
    std::cout << "policy: " << policy->describe() << "\n";
    for (size_t i = 0; i < blocks.size(); ++i)
      std::cout << "memory plan (block of " << blocks[i] << "):\n" << plans[i].table(cap);
  }
  if (rates) {
    std::cout << "roofline rates" << (rank.size() > 1 ? " (stage 0)" : "") << ": GEMM " << rates->gemm_flops / 1e12
              << " TFLOP/s (" << dtype_name(compute.activations) << "), memory read " << rates->read_bytes / 1e9
              << " GB/s";
    if (rates->link_bytes > 0) std::cout << ", host to GPU " << rates->link_bytes / 1e9 << " GB/s";
    if (rates->host_read_bytes > 0) std::cout << ", host memory read " << rates->host_read_bytes / 1e9 << " GB/s";
    if (rates->disk_read_bytes > 0) std::cout << ", disk read " << rates->disk_read_bytes / 1e9 << " GB/s";
    std::cout << ", measured now\n";
  }
  Rng rng(a.seed);
  for (size_t run = 0; run < blocks.size(); ++run) {
    const int64_t bs = blocks[run];
    std::vector<Request> reqs(static_cast<size_t>(bs * micro));
    for (Request& r : reqs) {
      for (int64_t t = 0; t < a.prompt_len; ++t) r.input_ids.push_back(static_cast<int32_t>(rng.next() % s.vocab_size));
      r.max_new_tokens = a.gen_len;
    }
    exec.set_gpu_batch_size(a.offload.gpu_batch(bs));
    Generator gen(exec, nullptr, bs);
    if (a.warmup) {
      // Untimed, the same shapes with 2 new tokens: loads the GPU kernels, fills the activation pool
      // and the KV cache allocation, as a long job's steady state has them (FlexGen warms up too).
      std::vector<Request> warm = reqs;
      for (Request& r : warm) r.max_new_tokens = std::min<int64_t>(2, a.gen_len);
      gen.generate(warm);
      rank.report(exec, {});  // the stages' times count from here
    }
    GenerateStats st;
    std::string stage_times;
    {
      ProgressLine progress(a.progress, bs * micro * a.gen_len);
      gen.on_step = [&](const GenerateStats& now) { progress.update(now); };
      TraceFile trace(rank.trace_path(a.offload.trace_file));
      gen.generate(reqs, &st);
      stage_times = rank.report(exec, a.offload.trace_file);
      trace.close();
    }
    const double gb = 1e9;
    const double total = st.prefill_seconds + st.decode_seconds;
    const double decode_tokens = static_cast<double>(bs * micro * (a.gen_len - 1));
    const double cache_gb = static_cast<double>(stage.cache_bytes(bs * micro, a.prompt_len + a.gen_len)) / gb;
    std::ostringstream log;
    log.setf(std::ios::fixed);
    log.precision(3);
    const std::string device =
        compute.tier == Tier::Gpu ? backend->name() : "cpu (" + std::to_string(omp_get_max_threads()) + " threads)";
    log << "model: " << a.source.name() << "\tdevice: " << device << "\tdtype: " << dtype_name(compute.activations)
        << "\tbatch: " << bs << " (" << (bs + a.offload.gpu_batch(bs) - 1) / a.offload.gpu_batch(bs) << " x "
        << std::min(bs, a.offload.gpu_batch(bs)) << ")\tprompt_len: " << a.prompt_len << "\tgen_len: " << a.gen_len
        << "\n"
        << "model size: " << static_cast<double>(model->weight_bytes()) / gb << " GB\tcache size: " << cache_gb
        << " GB\thidden size (p): "
        << static_cast<double>(bs * a.prompt_len * s.hidden_size) * dtype_size(compute.activations) / gb << " GB\n"
        << (backend->peak_memory()
                ? "peak gpu mem: " + std::to_string(static_cast<double>(*backend->peak_memory()) / gb) + " GB\t"
                : std::string())
        << "peak cpu mem: " << static_cast<double>(peak_host_memory()) / gb << " GB\n"
        << "prefill latency: " << st.prefill_seconds
        << " s\tprefill throughput: " << static_cast<double>(st.prompt_tokens) / st.prefill_seconds << " token/s\n"
        << "decode latency: " << st.decode_seconds
        << " s\tdecode throughput: " << (st.decode_seconds > 0 ? decode_tokens / st.decode_seconds : 0.0)
        << " token/s\n"
        << "total latency: " << total << " s\ttotal throughput: " << static_cast<double>(st.generated_tokens) / total
        << " token/s\n";
    std::optional<RooflineBound> bound;
    if (rates) {
      bound = bounds[run];
      auto share = [](double measured, double most) { return most > 0 ? 100.0 * measured / most : 0.0; };
      log.precision(1);
      log << "roofline bound" << (rank.size() > 1 ? " (the slowest stage's pace)" : "") << ": total "
          << bound->total_throughput << " token/s (prefill " << bound->prefill_throughput << ", decode "
          << bound->decode_throughput << ")\tmeasured / bound: total "
          << share(static_cast<double>(st.generated_tokens) / total, bound->total_throughput) << "%, prefill "
          << share(static_cast<double>(st.prompt_tokens) / st.prefill_seconds, bound->prefill_throughput)
          << "%, decode "
          << share(st.decode_seconds > 0 ? decode_tokens / st.decode_seconds : 0.0, bound->decode_throughput) << "%\n";
    }
    std::cout << log.str() << stage_times;
    if (a.json) {
      nlohmann::json j = {{"model", a.source.name()},
                          {"device", device},
                          {"dtype", dtype_name(compute.activations)},
                          {"threads", omp_get_max_threads()},
                          {"batch_size", bs},
                          {"gpu_batch_size", std::min(bs, a.offload.gpu_batch(bs))},
                          {"prompt_len", a.prompt_len},
                          {"gen_len", a.gen_len},
                          {"prefill_seconds", st.prefill_seconds},
                          {"decode_seconds", st.decode_seconds},
                          {"prefill_tokens_per_s", static_cast<double>(st.prompt_tokens) / st.prefill_seconds},
                          {"decode_tokens_per_s", st.decode_seconds > 0 ? decode_tokens / st.decode_seconds : 0.0},
                          {"total_tokens_per_s", static_cast<double>(st.generated_tokens) / total}};
      if (auto peak = backend->peak_memory()) j["peak_gpu_bytes"] = *peak;
      j["peak_cpu_bytes"] = peak_host_memory();
      if (bound) {
        j["roofline_total_tokens_per_s"] = bound->total_throughput;
        j["roofline_prefill_tokens_per_s"] = bound->prefill_throughput;
        j["roofline_decode_tokens_per_s"] = bound->decode_throughput;
        j["gemm_flops_per_s"] = rates->gemm_flops;
        j["read_bytes_per_s"] = rates->read_bytes;
        if (rates->link_bytes > 0) j["link_bytes_per_s"] = rates->link_bytes;
        if (rates->host_read_bytes > 0) j["host_read_bytes_per_s"] = rates->host_read_bytes;
        if (rates->disk_read_bytes > 0) j["disk_read_bytes_per_s"] = rates->disk_read_bytes;
      }
      std::cout << j.dump() << "\n";
    }
    std::cout.flush();
  }
  exec.stop();
  return 0;
}

}  // namespace

Command add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd =
      app.add_subcommand("bench", "Measure prefill and decode throughput (FlexGen's metric and log format)");
  a->source.add_flags(*cmd);
  a->engine.add_flags(*cmd);
  a->offload.add_flags(*cmd);
  a->batch_flag = cmd->add_option("-b,--batch-size", a->batch_sizes, "Batch sizes to run, e.g. 1,16")
                      ->delimiter(',')
                      ->check(integer_in(1, 1 << 20));
  cmd->add_option("--prompt-len", a->prompt_len, "Prompt tokens per sequence (default 512)")
      ->check(integer_in(1, INT32_MAX));
  cmd->add_option("--gen-len", a->gen_len, "Generated tokens per sequence (default 32)")
      ->check(integer_in(1, INT32_MAX));
  cmd->add_option("--seed", a->seed, "Seed of the random prompts")->check(seed_value());
  cmd->add_flag("--json", a->json, "Also print one JSON line per run");
  cmd->add_flag("!--no-roofline", a->roofline,
                "Skip measuring the GEMM and memory read rates, and the roofline bound from them");
  cmd->add_flag("!--no-warmup", a->warmup,
                "Time the first run too (by default each batch size runs once untimed first)");
  add_threads_flag(*cmd, a->threads);
  a->budgets.add_flags(*cmd);
  a->progress.add_flags(*cmd);
  a->pipeline.add_flags(*cmd);
  return {cmd, [a] {
            PipelineRank rank(a->pipeline, a->source.spec());
            return rank.run([&] {
              rank.apply(a->engine, a->budgets, a->offload, a->threads);
              apply_threads(a->threads);
              return run_bench(*a, rank);
            });
          }};
}

}  // namespace tiergen::cli
