// mpirun -np N tiergen worker --coordinator ADDR: a worker pipeline. Rank 0 registers the group
// with the coordinator (which assigns the layers by the stages' costs), every rank loads its
// stage, and rank 0 pulls blocks of requests, runs them through the pipeline and reports the
// results, beating its heart from a thread of its own meanwhile.
#include "launch/commands.h"

#if TIERGEN_HAVE_GRPC
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "comm/coordinator/batch_line.h"
#include "comm/coordinator/client.h"
#include "launch/flag_checks.h"
#include "launch/pipeline_rank.h"
#include "launch/request_defaults.h"
#include "launch/rpc_flags.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"
#include "runtime/generate/generator.h"
#include "runtime/tokenizer/chat_template.h"
#endif

namespace tiergen::cli {

#if TIERGEN_HAVE_GRPC
namespace {

namespace v1 = ::tiergen::coordinator::v1;
using Clock = std::chrono::steady_clock;

struct WorkerArgs {
  RpcFlags rpc;
  ModelSource source;
  std::string served_name;
  int64_t batch_size = 32;
  std::optional<int64_t> max_seq_len;
  std::string give_up = "10m";
  int threads = 0;
  BudgetOptions budgets;
  EngineOptions engine;
  OffloadOptions offload;
  PipelineOptions pipeline;
};

bool transient(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// Rank 0's link to the coordinator: its registration, the heartbeat thread, and calls retried
// while the coordinator is unreachable (a restart), up to --give-up.
class CoordinatorLink {
 public:
  CoordinatorLink(const coord::ClientOptions& o, std::chrono::milliseconds give_up)
      : o_(o), give_up_(give_up), stub_(v1::Worker::NewStub(coord::make_channel(o))) {}
  ~CoordinatorLink() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (beat_.joinable()) beat_.join();
  }

  // Calls `call` until it succeeds, fails for good, or the coordinator has been unreachable for
  // --give-up; `idle` runs between tries (the pipeline's keep-alive).
  template <class Call>
  void retry(const char* what, Call call, const std::function<void()>& idle) {
    const auto start = Clock::now();
    auto pause = std::chrono::milliseconds(200);
    for (;;) {
      const grpc::Status s = call();
      if (s.ok()) return;
      if (!transient(s) || Clock::now() - start > give_up_) coord::throw_status(s, what, o_);
      if (!warned_) {
        std::cerr << "tiergen: " << what << " at " << o_.address << ": " << coord::status_code_name(s.error_code())
                  << " (" << s.error_message() << "); trying again for up to " << give_up_.count() / 1000 << " s"
                  << std::endl;
        warned_ = true;
      }
      if (idle) idle();
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(5000));
    }
  }

  // Registers the group (again, after the coordinator declared it dead). Returns the assignment.
  v1::Assignment enroll(const v1::RegisterRequest& req, const std::function<void()>& idle) {
    v1::Assignment a;
    retry(
        "Register", [&] { return stub_->Register(coord::make_context(o_).get(), req, &a); }, idle);
    std::lock_guard lock(mu_);
    id_ = a.worker_id();
    heartbeat_ = std::chrono::milliseconds(std::max<int64_t>(a.heartbeat_ms(), 10));
    lost_ = false;
    request_ = req;
    if (!beat_.joinable()) beat_ = std::thread([this] { beat(); });
    return a;
  }
  bool registered() const {
    std::lock_guard lock(mu_);
    return !id_.empty();
  }
  void set_ready() {
    std::lock_guard lock(mu_);
    ready_ = true;
  }
  std::string id() const {
    std::lock_guard lock(mu_);
    return id_;
  }
  // The heartbeat thread's news: registered again when the coordinator forgot this worker; an
  // RpcError when it has been unreachable for --give-up.
  void check(const std::function<void()>& idle) {
    std::string failure;
    bool lost = false;
    {
      std::lock_guard lock(mu_);
      failure = failure_;
      lost = lost_;
    }
    if (!failure.empty()) throw RpcError(failure);
    if (lost) {
      std::cerr << "tiergen: the coordinator no longer knows this worker (" << id()
                << "): registering again; blocks it held went to other workers" << std::endl;
      enroll(request_, idle);
      set_ready();
    }
  }
  v1::Worker::Stub& stub() { return *stub_; }
  const coord::ClientOptions& options() const { return o_; }

 private:
  void beat() {
    auto last_ok = Clock::now();
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, heartbeat_, [&] { return stopping_; })) {
      v1::HeartbeatRequest req;
      req.set_worker_id(id_);
      req.set_ready(ready_);
      lock.unlock();
      v1::HeartbeatResponse resp;
      const grpc::Status s = stub_->Heartbeat(coord::make_context(o_, heartbeat_ * 4).get(), req, &resp);
      lock.lock();
      if (s.ok()) {
        last_ok = Clock::now();
      } else if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        lost_ = true;
      } else if (!transient(s) || Clock::now() - last_ok > give_up_) {
        failure_ = std::string("Heartbeat at ") + o_.address + ": " + coord::status_code_name(s.error_code()) + ": " +
                   s.error_message();
      }
    }
  }

  coord::ClientOptions o_;
  std::chrono::milliseconds give_up_;
  std::unique_ptr<v1::Worker::Stub> stub_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::thread beat_;
  std::string id_, failure_;
  std::chrono::milliseconds heartbeat_{2000};
  bool ready_ = false, lost_ = false, stopping_ = false, warned_ = false;
  v1::RegisterRequest request_;
};

// A chat's messages as one prompt, for models without a chat template: "role: content" lines,
// then "assistant:" for the reply.
std::string render_chat(const std::vector<coord::ChatMessage>& messages) {
  std::string s;
  for (const auto& m : messages) s += m.role + ": " + m.content + "\n";
  return s + "assistant:";
}

struct BlockRun {
  const ModelSpec& spec;
  const GenerationConfig& gc;
  const Tokenizer& tokenizer;
  int64_t max_seq_len;
  const ChatTemplate* chat_template;  // the model's, or null
  std::string chat_error;             // why the model's template cannot be used (its chat lines fail)

  // One request of a block, checked as `tiergen generate` checks its prompts. Error for what it
  // cannot run (the message becomes the request's error line).
  Request request(const v1::BlockRequest& q) const {
    const coord::BatchRequest b = coord::from_worker_body(q.custom_id(), q.body());
    Request r;
    if (b.endpoint == coord::Endpoint::Completions) {
      r.input_ids = tokenizer.encode(b.prompt, true);
    } else if (!chat_error.empty()) {
      throw UnsupportedError(chat_error);
    } else if (chat_template) {
      // The template writes the special tokens itself, as transformers' apply_chat_template.
      std::vector<ChatTurn> turns;
      for (const auto& m : b.messages) turns.push_back({m.role, m.content});
      r.input_ids = tokenizer.encode(chat_template->render(turns), false);
    } else {
      r.input_ids = tokenizer.encode(render_chat(b.messages), true);
    }
    r.sampling = resolve_sampling(gc, {b.temperature, b.top_p, std::nullopt, b.top_k, false, false});
    r.sampling.seed = b.seed.value_or(0);
    r.max_new_tokens = max_new_tokens(gc, b.max_tokens);
    r.eos_ids = stop_token_ids(gc, spec, false);
    r.stop_strings = b.stop;
    const auto n = static_cast<int64_t>(r.input_ids.size());
    if (n + r.max_new_tokens > max_seq_len)
      throw OutOfMemoryError("the prompt is " + std::to_string(n) + " tokens and max_tokens " +
                             std::to_string(r.max_new_tokens) + ": together more than the " +
                             std::to_string(max_seq_len) + " tokens per sequence this worker holds");
    validate_requests(spec, std::span<const Request>(&r, 1), true);
    return r;
  }

  std::vector<v1::RequestResult> run(Generator& gen, const v1::Block& block) const {
    std::vector<v1::RequestResult> out(static_cast<size_t>(block.requests_size()));
    std::vector<Request> reqs;
    std::vector<size_t> where;
    for (int i = 0; i < block.requests_size(); ++i) {
      v1::RequestResult& res = out[static_cast<size_t>(i)];
      res.set_index(block.requests(i).index());
      try {
        reqs.push_back(request(block.requests(i)));
        where.push_back(static_cast<size_t>(i));
      } catch (const Error& e) {
        res.set_error(true);
        res.set_error_code(e.kind() == ErrorKind::OutOfMemory   ? "context_length_exceeded"
                           : e.kind() == ErrorKind::Unsupported ? "unsupported"
                                                                : "invalid_request");
        res.set_text("line " + std::to_string(res.index() + 1) + ": " + e.what());
      }
    }
    if (reqs.empty()) return out;
    const std::vector<Result> results = gen.generate(reqs);
    for (size_t k = 0; k < results.size(); ++k) {
      v1::RequestResult& res = out[where[k]];
      res.set_text(results[k].text);
      res.set_finish_reason(results[k].finish == FinishReason::Length ? "length" : "stop");
      res.set_prompt_tokens(static_cast<int64_t>(results[k].input_ids.size()));
      res.set_completion_tokens(static_cast<int64_t>(results[k].output_ids.size()));
    }
    return out;
  }
};

// The name jobs know the model by: --served-model-name, else the preset or the folder's name.
std::string served_name(const WorkerArgs& a) {
  if (!a.served_name.empty()) return a.served_name;
  if (!a.source.dummy.empty()) return a.source.dummy;
  std::filesystem::path p = std::filesystem::path(a.source.dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "models/fortune-tiny/"
  return p.filename().string();
}

int run_worker(WorkerArgs& a) {
  a.source.validate();
  const ModelSpec spec = a.source.spec();
  PipelineRank rank(a.pipeline, spec);
  return rank.run([&] {
    rank.apply(a.engine, a.budgets, a.offload, a.threads);
    apply_threads(a.threads);
    const BudgetOptions::Bytes budgets = a.budgets.bytes(a.engine.cuda());
    const int64_t context = spec.max_position_embeddings > 0 ? spec.max_position_embeddings : 2048;
    const int64_t max_seq = a.max_seq_len.value_or(std::min<int64_t>(context, 2048));
    if (max_seq < 2 || (spec.max_position_embeddings > 0 && max_seq > spec.max_position_embeddings))
      throw InvalidArgumentError("--max-seq-len " + std::to_string(max_seq) + ": it must be from 2 to the model's " +
                                 std::to_string(context) + " positions");
    auto tokenizer = a.source.tokenizer(spec);
    if (!tokenizer)
      throw InvalidArgumentError(
          "a worker runs text requests and needs the model's tokenizer.json: give --model a "
          "folder that holds one");
    GenerationConfig gc;
    if (!a.source.dir.empty())
      gc = load_generation_config(std::filesystem::path(a.source.dir) / "generation_config.json");
    std::optional<OffloadPolicy> policy = a.offload.policy(a.engine.cuda());
    const int64_t block = a.offload.blocks({a.batch_size}, true).front();
    // Planned for full blocks of the longest sequences this worker takes.
    const RunShape shape = uniform_run_shape(block, max_seq - 1, 1, rank.micro_batches());

    std::unique_ptr<CoordinatorLink> link;
    v1::RegisterRequest reg;
    std::function<void()> keep_alive;  // set once the pipeline runs
    if (rank.first()) {
      link = std::make_unique<CoordinatorLink>(a.rpc.options(), parse_duration(a.give_up, "--give-up"));
      reg.set_model(served_name(a));
      reg.set_num_layers(spec.num_layers);
      reg.set_max_batch(block * rank.micro_batches());
      reg.set_max_seq_len(max_seq);
    }
    auto add_rank = [&](const comm::StageCost* cost, const std::string& info) {
      const auto j = nlohmann::json::parse(info);
      v1::RankInfo* k = reg.add_ranks();
      k->set_rank(j["rank"].get<int>());
      k->set_host(j["host"].get<std::string>());
      k->set_device(j["device"].get<std::string>());
      k->set_gpu_budget_bytes(j["gpu_budget_bytes"].get<int64_t>());
      k->set_cpu_budget_bytes(j["cpu_budget_bytes"].get<int64_t>());
      k->set_disk_budget_bytes(j["disk_budget_bytes"].get<int64_t>());
      if (cost) {
        k->set_seconds_per_layer(cost->seconds_per_layer);
        k->set_fixed_seconds(cost->fixed_seconds);
        k->set_max_layers(cost->max_layers);
      }
    };
    // Every rank takes the assigner's path through the load; only rank 0's calls the coordinator.
    rank.set_assigner([&](const std::vector<comm::StageCost>& costs, const std::vector<std::string>& ranks) {
      TIERGEN_CHECK(rank.first(), "only rank 0 registers");
      for (size_t i = 0; i < ranks.size(); ++i) add_rank(&costs[i], ranks[i]);
      const v1::Assignment got = link->enroll(reg, {});
      return PipelineRank::Assignment{{got.first_layers().begin(), got.first_layers().end()}, got.note()};
    });
    PipelineRank::Loaded stage = rank.load(a.source, a.engine, a.offload, policy, {shape}, budgets, "--max-seq-len");
    if (!rank.first()) {
      comm::serve_stage(*stage.stage, rank.transport(), rank.timeout(), stage.links.get(), rank.stage_gpu_batch());
      return 0;
    }
    comm::PipelineExecutor exec(*stage.stage, rank.transport(), a.offload.gpu_batch(block), rank.micro_batches(),
                                rank.timeout(), stage.links.get());
    // Between blocks the other ranks wait for rank 0 with --comm-timeout: a report round trip now
    // and then tells them the pipeline lives (and finds a rank that died).
    auto last_alive = Clock::now();
    keep_alive = [&] {
      if (rank.size() > 1 && Clock::now() - last_alive > rank.timeout() / 4) {
        exec.report(false);
        last_alive = Clock::now();
      }
    };
    if (!link->registered()) {                 // a pipeline of one, or layers cut by --stage-layers
      for (int r = 0; r < rank.size(); ++r) {  // rank 0's settings stand for all: no costs were gathered
        auto j = nlohmann::json::parse(rank.rank_json(a.engine, budgets));
        j["rank"] = r;
        j["host"] = rank.transport().describe(r);
        add_rank(nullptr, j.dump());
      }
      link->enroll(reg, keep_alive);
    }
    if (!rank.balance_note().empty()) std::cerr << "tiergen: " << rank.balance_note() << "\n";
    if (!stage.links->note().empty()) std::cerr << "tiergen: " << stage.links->note() << "\n";
    link->set_ready();
    std::cerr << "tiergen: worker " << link->id() << " (" << reg.model() << ", " << rank.size() << " stage"
              << (rank.size() == 1 ? "" : "s") << ") ready at " << link->options().address << std::endl;

    Generator gen(exec, tokenizer.get(), block);
    // A template outside what this version runs fails the chat lines, not the completions.
    std::optional<ChatTemplate> chat;
    std::string chat_error;
    try {
      if (!a.source.dir.empty()) chat = ChatTemplate::load(a.source.dir);
    } catch (const FormatError& e) {
      chat_error = std::string("the model's chat template cannot be applied: ") + e.what();
      std::cerr << "tiergen: " << chat_error << "; chat lines will fail, completions run\n";
    }
    const BlockRun runner{spec, gc, *tokenizer, max_seq, chat ? &*chat : nullptr, chat_error};
    auto idle = std::chrono::milliseconds(100);
    for (;;) {
      link->check(keep_alive);
      v1::PullBlockRequest pull;
      pull.set_worker_id(link->id());
      pull.set_max_requests(reg.max_batch());
      v1::Block got;
      link->retry(
          "PullBlock", [&] { return link->stub().PullBlock(coord::make_context(link->options()).get(), pull, &got); },
          keep_alive);
      if (got.block_id() == 0) {  // no work: look again soon, less often while it stays so
        keep_alive();
        std::this_thread::sleep_for(idle);
        idle = std::min(idle * 2, std::chrono::milliseconds(1000));
        continue;
      }
      idle = std::chrono::milliseconds(100);
      const auto results = runner.run(gen, got);
      last_alive = Clock::now();
      v1::ReportResultsRequest report;
      report.set_worker_id(link->id());
      report.set_block_id(got.block_id());
      for (const auto& r : results) *report.add_results() = r;
      v1::ReportResultsResponse ack;
      link->retry(
          "ReportResults",
          [&] { return link->stub().ReportResults(coord::make_context(link->options()).get(), report, &ack); },
          keep_alive);
    }
  });
}

}  // namespace

Command add_worker(CLI::App& app) {
  auto a = std::make_shared<WorkerArgs>();
  CLI::App* cmd = app.add_subcommand(
      "worker", "Run a worker pipeline for a coordinator (mpirun -np N tiergen worker ... for N stages)");
  a->rpc.add_flags(*cmd);
  a->source.add_flags(*cmd);
  cmd->add_option("--served-model-name", a->served_name,
                  "The model's name for jobs (default: the model folder's name, or the --dummy preset)");
  cmd->add_option("-b,--batch-size", a->batch_size, "Sequences run together in one block (default 32)")
      ->check(integer_in(1, 1 << 20));
  cmd->add_option("--max-seq-len", a->max_seq_len,
                  "Prompt + generated tokens per sequence the memory plan holds (default: the model's context, "
                  "at most 2048); longer requests fail with context_length_exceeded")
      ->check(integer_in(2, INT32_MAX));
  cmd->add_option("--give-up", a->give_up,
                  "How long the coordinator may stay unreachable before the worker stops (default 10m)");
  add_threads_flag(*cmd, a->threads);
  a->budgets.add_flags(*cmd);
  a->engine.add_flags(*cmd);
  a->offload.add_flags(*cmd);
  a->pipeline.add_flags(*cmd);
  return {cmd, [a] { return run_worker(*a); }};
}

#else

Command add_worker(CLI::App& app) { return add_without_grpc(app, "worker"); }

#endif

}  // namespace tiergen::cli
