// The coordinator under load on loopback (docs/benchmarks.md, "Coordinator under load"): a
// coordinator in this process, `--workers` synthetic worker pipelines that answer every request at
// once (no model runs: what is measured is the coordinator, its job store and gRPC), and
// `--clients` clients that, for `--seconds`, each submit a job, follow it to the end with GetJob
// (every fourth job with WatchJob) and fetch its results, checking every line: each custom_id once,
// with the text its worker gave it. Any failed call or wrong line is an error; the exit status is 1
// when there was one.
//
//   coordinator_load [--clients 32] [--seconds 60] [--lines 64] [--workers 2] [--json]
//
// It prints GetJob's latency (p50, p99, max), the lines submitted per second and the counts; --json
// prints them as one JSON object instead.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "comm/coordinator/client.h"
#include "comm/coordinator/server.h"
#include "runtime/core/error.h"

namespace tiergen::coord {
namespace {

namespace v1 = ::tiergen::coordinator::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kModel = "load-test";

struct Options {
  int clients = 32;
  double seconds = 60;
  int lines = 64;
  int workers = 2;
  bool json = false;
};

// What every thread adds to, under one lock (each adds rarely: at the end of a job or of a run).
struct Tally {
  std::mutex mu;
  std::vector<double> get_job_ms;
  int64_t jobs = 0, lines_submitted = 0, lines_fetched = 0, watches = 0, errors = 0, blocks = 0;
  std::vector<std::string> first_errors;  // the first few, to print

  void rpc_error(const char* call, const grpc::Status& s) {
    error(std::string(call) + ": " + status_code_name(s.error_code()) + ": " + s.error_message());
  }
  void error(const std::string& what) {
    std::lock_guard lock(mu);
    ++errors;
    if (first_errors.size() < 5) first_errors.push_back(what);
  }
};

// The text a synthetic worker gives a request, so that a client can check the line it fetches.
std::string answer_for(const std::string& custom_id) { return "answer to " + custom_id; }

// A worker pipeline without a model: registers, beats, pulls blocks and reports each request's
// answer at once.
void synthetic_worker(const ClientOptions& o, const std::atomic<bool>& stop, Tally& tally) {
  auto stub = v1::Worker::NewStub(make_channel(o));
  v1::RegisterRequest reg;
  reg.set_model(kModel);
  reg.set_num_layers(1);
  reg.set_max_batch(32);
  reg.set_max_seq_len(128);
  auto* rank = reg.add_ranks();
  rank->set_device("synthetic");
  rank->set_seconds_per_layer(1e-3);
  rank->set_max_layers(1);
  v1::Assignment a;
  check(stub->Register(make_context(o).get(), reg, &a), "Register", o);
  v1::HeartbeatRequest beat;
  beat.set_worker_id(a.worker_id());
  beat.set_ready(true);
  v1::HeartbeatResponse ignored;
  check(stub->Heartbeat(make_context(o).get(), beat, &ignored), "Heartbeat", o);
  auto last_beat = Clock::now();
  int64_t blocks = 0;
  while (!stop.load()) {
    if (Clock::now() - last_beat > std::chrono::milliseconds(a.heartbeat_ms())) {
      check(stub->Heartbeat(make_context(o).get(), beat, &ignored), "Heartbeat", o);
      last_beat = Clock::now();
    }
    v1::PullBlockRequest pull;
    pull.set_worker_id(a.worker_id());
    pull.set_max_requests(32);
    v1::Block block;
    check(stub->PullBlock(make_context(o).get(), pull, &block), "PullBlock", o);
    if (block.block_id() == 0) {
      std::this_thread::sleep_for(2ms);
      continue;
    }
    v1::ReportResultsRequest report;
    report.set_worker_id(a.worker_id());
    report.set_block_id(block.block_id());
    for (const auto& r : block.requests()) {
      auto* out = report.add_results();
      out->set_index(r.index());
      out->set_text(answer_for(r.custom_id()));
      out->set_finish_reason("length");
      out->set_prompt_tokens(4);
      out->set_completion_tokens(8);
    }
    v1::ReportResultsResponse ack;
    check(stub->ReportResults(make_context(o).get(), report, &ack), "ReportResults", o);
    ++blocks;
  }
  std::lock_guard lock(tally.mu);
  tally.blocks += blocks;
}

std::string request_line(const std::string& custom_id, int i) {
  nlohmann::json j = {{"custom_id", custom_id},
                      {"method", "POST"},
                      {"url", "/v1/completions"},
                      {"body", {{"prompt", "request " + std::to_string(i) + " of the load test"}, {"max_tokens", 8}}}};
  return j.dump();
}

// One job, start to end: submit, follow, fetch and check. Returns false after an error.
bool one_job(v1::Coordinator::Stub& stub, const ClientOptions& o, const Options& opt, int client, int64_t n,
             std::vector<double>& get_job_ms, Tally& tally) {
  const std::string prefix = "c" + std::to_string(client) + "-j" + std::to_string(n) + "-";
  v1::Job job;
  {
    auto ctx = make_context(o);
    auto writer = stub.SubmitJob(ctx.get(), &job);
    v1::SubmitJobRequest msg;
    for (int i = 0; i < opt.lines; ++i) {
      msg.add_lines(request_line(prefix + std::to_string(i), i));
      if (i % 16 == 15 && i + 1 < opt.lines) {  // several messages per job, as `tiergen submit` streams
        if (!writer->Write(msg)) break;
        msg.clear_lines();
      }
    }
    msg.set_last(true);
    if (writer->Write(msg)) writer->WritesDone();
    const grpc::Status s = writer->Finish();
    if (!s.ok()) {
      tally.rpc_error("SubmitJob", s);
      return false;
    }
  }
  const bool watch = n % 4 == 3;
  const auto deadline = Clock::now() + 60s;
  if (watch) {
    auto ctx = make_context(o, 60s);
    v1::WatchJobRequest req;
    req.set_job_id(job.id());
    req.set_interval_ms(50);
    auto reader = stub.WatchJob(ctx.get(), req);
    while (reader->Read(&job)) {
    }
    const grpc::Status s = reader->Finish();
    if (!s.ok()) {
      tally.rpc_error("WatchJob", s);
      return false;
    }
  } else {
    while (job.state() != "completed") {
      if (Clock::now() > deadline) {
        tally.error("job " + job.id() + " not completed after 60 s: " + job.state());
        return false;
      }
      v1::GetJobRequest req;
      req.set_job_id(job.id());
      const auto t0 = Clock::now();
      const grpc::Status s = stub.GetJob(make_context(o).get(), req, &job);
      get_job_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      if (!s.ok()) {
        tally.rpc_error("GetJob", s);
        return false;
      }
      if (job.state() != "completed") std::this_thread::sleep_for(5ms);
    }
  }
  if (job.state() != "completed" || job.succeeded() != opt.lines || job.failed() != 0) {
    tally.error("job " + job.id() + " ended " + job.state() + " with " + std::to_string(job.succeeded()) +
                " succeeded and " + std::to_string(job.failed()) + " failed of " + std::to_string(opt.lines));
    return false;
  }
  // Every line back once, each with its worker's answer.
  std::set<std::string> seen;
  auto ctx = make_context(o);
  v1::FetchResultsRequest req;
  req.set_job_id(job.id());
  auto reader = stub.FetchResults(ctx.get(), req);
  v1::ResultChunk chunk;
  bool ok = true;
  while (reader->Read(&chunk)) {
    for (const auto& line : chunk.lines()) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      const std::string id = j.is_object() ? j.value("custom_id", "") : "";
      const bool right = !id.empty() && id.rfind(prefix, 0) == 0 && seen.insert(id).second &&
                         j["response"]["body"]["choices"][0]["text"] == answer_for(id);
      if (!right && ok) {
        tally.error("job " + job.id() + ": a wrong or repeated line: " + line.substr(0, 200));
        ok = false;
      }
    }
  }
  const grpc::Status s = reader->Finish();
  if (!s.ok()) {
    tally.rpc_error("FetchResults", s);
    return false;
  }
  if (ok && static_cast<int>(seen.size()) != opt.lines) {
    tally.error("job " + job.id() + ": " + std::to_string(seen.size()) + " lines fetched of " +
                std::to_string(opt.lines));
    ok = false;
  }
  std::lock_guard lock(tally.mu);
  ++tally.jobs;
  tally.lines_submitted += opt.lines;
  tally.lines_fetched += static_cast<int64_t>(seen.size());
  tally.watches += watch;
  return ok;
}

void client_loop(const ClientOptions& o, const Options& opt, int client, Clock::time_point until, Tally& tally) {
  auto stub = v1::Coordinator::NewStub(make_channel(o));
  std::vector<double> ms;
  for (int64_t n = 0; Clock::now() < until; ++n)
    if (!one_job(*stub, o, opt, client, n, ms, tally)) std::this_thread::sleep_for(100ms);
  std::lock_guard lock(tally.mu);
  tally.get_job_ms.insert(tally.get_job_ms.end(), ms.begin(), ms.end());
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

int run(const Options& opt) {
  const auto dir = std::filesystem::temp_directory_path() / ("tiergen-coordinator-load-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  int status = 1;
  {
    ServerOptions so;
    so.listen = "127.0.0.1:0";
    so.db = (dir / "jobs.db").string();
    so.model = kModel;
    so.max_block = 32;
    CoordinatorServer server(so);
    ClientOptions co;
    co.address = "127.0.0.1:" + std::to_string(server.port());
    co.timeout = 10s;

    Tally tally;
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (int i = 0; i < opt.workers; ++i)
      workers.emplace_back([&] {
        try {
          synthetic_worker(co, stop, tally);
        } catch (const std::exception& e) {
          tally.error(std::string("worker: ") + e.what());
        }
      });
    const auto start = Clock::now();
    const auto until = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.seconds));
    std::vector<std::thread> clients;
    for (int c = 0; c < opt.clients; ++c)
      clients.emplace_back([&, c] {
        try {
          client_loop(co, opt, c, until, tally);
        } catch (const std::exception& e) {
          tally.error(std::string("client: ") + e.what());
        }
      });
    for (auto& t : clients) t.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    stop = true;
    for (auto& t : workers) t.join();

    const nlohmann::json out = {
        {"clients", opt.clients},
        {"workers", opt.workers},
        {"seconds", elapsed},
        {"lines_per_job", opt.lines},
        {"jobs", tally.jobs},
        {"watched_jobs", tally.watches},
        {"lines_submitted", tally.lines_submitted},
        {"lines_fetched", tally.lines_fetched},
        {"submitted_lines_per_second", static_cast<double>(tally.lines_submitted) / elapsed},
        {"blocks", tally.blocks},
        {"get_job_calls", tally.get_job_ms.size()},
        {"get_job_p50_ms", percentile(tally.get_job_ms, 0.50)},
        {"get_job_p99_ms", percentile(tally.get_job_ms, 0.99)},
        {"get_job_max_ms", percentile(tally.get_job_ms, 1.0)},
        {"errors", tally.errors},
    };
    if (opt.json) {
      std::cout << out.dump() << "\n";
    } else {
      std::printf("%d clients, %d synthetic workers, %.1f s: %lld jobs of %d lines (%lld watched), %.0f lines/s\n",
                  opt.clients, opt.workers, elapsed, static_cast<long long>(tally.jobs), opt.lines,
                  static_cast<long long>(tally.watches), out["submitted_lines_per_second"].get<double>());
      std::printf("GetJob: %zu calls, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", tally.get_job_ms.size(),
                  out["get_job_p50_ms"].get<double>(), out["get_job_p99_ms"].get<double>(),
                  out["get_job_max_ms"].get<double>());
      std::printf("errors: %lld\n", static_cast<long long>(tally.errors));
    }
    for (const auto& e : tally.first_errors) std::fprintf(stderr, "coordinator_load: error: %s\n", e.c_str());
    status = tally.errors == 0 && tally.jobs > 0 ? 0 : 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return status;
}

}  // namespace
}  // namespace tiergen::coord

int main(int argc, char** argv) {
  tiergen::coord::Options opt;
  CLI::App app{"The coordinator under load on loopback: clients submitting, watching and fetching"};
  app.add_option("--clients", opt.clients, "Concurrent clients")->check(CLI::Range(1, 1024));
  app.add_option("--seconds", opt.seconds, "How long the clients start new jobs")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--lines", opt.lines, "Requests per job")->check(CLI::Range(1, 100000));
  app.add_option("--workers", opt.workers, "Synthetic worker pipelines")->check(CLI::Range(1, 64));
  app.add_flag("--json", opt.json, "Print the figures as one JSON object");
  CLI11_PARSE(app, argc, argv);
  try {
    return tiergen::coord::run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coordinator_load: error: %s\n", e.what());
    return 1;
  }
}
