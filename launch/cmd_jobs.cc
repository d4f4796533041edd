// The coordinator's client commands: tiergen submit, jobs, watch, results, cancel, workers.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "launch/commands.h"
#include "launch/flag_checks.h"
#include "launch/rpc_flags.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"

#if TIERGEN_HAVE_GRPC
#include "comm/coordinator/client.h"
#endif

namespace tiergen::cli {

#if TIERGEN_HAVE_GRPC
namespace {

namespace v1 = ::tiergen::coordinator::v1;

constexpr std::chrono::hours kLongStream{24 * 7};  // the deadline of a watch: a week

struct JobArgs {
  RpcFlags rpc;
  std::string job, input, name, model, output, errors, every = "10s";
  bool wait = false, json = false;
  int limit = 100;
};

std::string seconds_text(double s) {
  if (s < 0) return "?";
  const auto t = static_cast<int64_t>(std::llround(s));
  if (t < 60) return std::to_string(t) + "s";
  if (t < 3600) return std::to_string(t / 60) + "m" + std::to_string(t % 60) + "s";
  return std::to_string(t / 3600) + "h" + std::to_string(t % 3600 / 60) + "m";
}

// "running: 120 of 200 done (60.0%), 3 failed, 35.2 tok/s, 1m20s left"
std::string job_line(const v1::Job& j) {
  const int64_t done = j.succeeded() + j.failed();
  char pct[32];
  std::snprintf(pct, sizeof pct, "%.1f%%", j.total() ? 100.0 * static_cast<double>(done) / j.total() : 100.0);
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", j.tokens_per_second());
  std::string s = j.state() + ": " + std::to_string(done) + " of " + std::to_string(j.total()) + " done (" + pct +
                  "), " + std::to_string(j.failed()) + " failed, " + rate + " tok/s";
  if (j.cancelled() > 0) s += ", " + std::to_string(j.cancelled()) + " cancelled";
  if (j.state() == "queued" || j.state() == "running") s += ", " + seconds_text(j.eta_seconds()) + " left";
  return s;
}

nlohmann::json job_json(const v1::Job& j) {
  return {{"id", j.id()},
          {"name", j.name()},
          {"model", j.model()},
          {"state", j.state()},
          {"total", j.total()},
          {"pending", j.pending()},
          {"leased", j.leased()},
          {"succeeded", j.succeeded()},
          {"failed", j.failed()},
          {"cancelled", j.cancelled()},
          {"prompt_tokens", j.prompt_tokens()},
          {"completion_tokens", j.completion_tokens()},
          {"created_ms", j.created_ms()},
          {"finished_ms", j.finished_ms()},
          {"tokens_per_second", j.tokens_per_second()},
          {"eta_seconds", j.eta_seconds()}};
}

// Follows a job until it ends: a bar rewritten on a terminal, a line every `every` otherwise.
v1::Job watch(v1::Coordinator::Stub& stub, const coord::ClientOptions& o, const std::string& job,
              std::chrono::milliseconds every) {
  auto ctx = coord::make_context(o, kLongStream);
  v1::WatchJobRequest req;
  req.set_job_id(job);
  req.set_interval_ms(static_cast<int32_t>(std::min<int64_t>(every.count(), 1000)));
  auto reader = stub.WatchJob(ctx.get(), req);
  const bool tty = isatty(STDERR_FILENO);
  auto next = std::chrono::steady_clock::now();
  v1::Job j;
  bool any = false;
  while (reader->Read(&j)) {
    any = true;
    const bool end = j.state() == "completed" || j.state() == "cancelled";
    if (tty) {
      const int64_t done = j.succeeded() + j.failed();
      const int width = 30;
      const int fill = j.total() ? static_cast<int>(width * done / j.total()) : width;
      std::fprintf(stderr, "\r\033[K[%s%s] %s", std::string(static_cast<size_t>(fill), '#').c_str(),
                   std::string(static_cast<size_t>(width - fill), '.').c_str(), job_line(j).c_str());
      if (end) std::fputc('\n', stderr);
    } else if (end || std::chrono::steady_clock::now() >= next) {
      std::fprintf(stderr, "tiergen: %s %s\n", j.id().c_str(), job_line(j).c_str());
      next = std::chrono::steady_clock::now() + every;
    }
    std::fflush(stderr);
  }
  coord::check(reader->Finish(), "WatchJob", o);
  if (!any) throw RpcError("WatchJob at " + o.address + ": the stream ended without the job's state");
  return j;
}

int run_submit(JobArgs& a) {
  const coord::ClientOptions o = a.rpc.options();
  std::ifstream in;
  std::istream* src = &std::cin;
  uint64_t size = 0;
  if (a.input != "-") {
    std::error_code ec;
    if (std::filesystem::is_directory(a.input, ec)) throw IoError("batch file '" + a.input + "' is a directory");
    in.open(a.input, std::ios::binary);
    if (!in) throw NotFoundError("cannot open batch file '" + a.input + "': " + errno_message(errno));
    size = std::filesystem::file_size(a.input, ec);
    src = &in;
  }
  const auto every = parse_duration(a.every, "--every");
  auto stub = v1::Coordinator::NewStub(coord::make_channel(o));
  // The stream's deadline grows with the file: the call timeout, plus a minute per 100 MB.
  auto ctx = coord::make_context(o, o.timeout + std::chrono::minutes(1 + size / 100'000'000));
  v1::Job job;
  auto writer = stub->SubmitJob(ctx.get(), &job);
  v1::SubmitJobRequest msg;
  msg.set_name(a.name);
  msg.set_model(a.model);
  // Messages of up to 1000 lines or about 1 MiB: well under the coordinator's message limit,
  // unless one line alone is over it (then the coordinator says RESOURCE_EXHAUSTED).
  size_t bytes = 0;
  int64_t lines = 0;
  bool sent_ok = true;
  auto flush = [&] {
    if (sent_ok && !writer->Write(msg)) sent_ok = false;  // the status tells why
    msg.Clear();
    bytes = 0;
  };
  std::string line;
  while (sent_ok && std::getline(*src, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bytes += line.size();
    msg.add_lines(std::move(line));
    ++lines;
    if (msg.lines_size() >= 1000 || bytes >= (1u << 20)) flush();
  }
  if (in.bad()) throw IoError("cannot read batch file '" + a.input + "'");
  msg.set_last(true);
  flush();
  writer->WritesDone();
  coord::check(writer->Finish(), "SubmitJob", o);
  std::cout << job.id() << std::endl;
  std::cerr << "tiergen: submitted " << job.id() << ": " << job.total() << " lines for " << job.model();
  if (job.failed() > 0)
    std::cerr << ", " << job.failed() << " rejected (tiergen results " << job.id() << " --errors FILE says why)";
  std::cerr << "\n";
  if (!a.wait) return 0;
  watch(*stub, o, job.id(), every);
  return 0;
}

int run_jobs(JobArgs& a) {
  const coord::ClientOptions o = a.rpc.options();
  auto stub = v1::Coordinator::NewStub(coord::make_channel(o));
  v1::ListJobsRequest req;
  req.set_limit(a.limit);
  v1::ListJobsResponse resp;
  coord::check(stub->ListJobs(coord::make_context(o).get(), req, &resp), "ListJobs", o);
  for (const v1::Job& j : resp.jobs()) {
    if (a.json)
      std::cout << job_json(j).dump() << "\n";
    else
      std::cout << j.id() << "  " << (j.name().empty() ? "-" : j.name()) << "  " << j.model() << "  " << job_line(j)
                << "\n";
  }
  if (!a.json && resp.jobs_size() == 0) std::cerr << "tiergen: no jobs\n";
  return 0;
}

int run_watch(JobArgs& a) {
  const coord::ClientOptions o = a.rpc.options();
  auto stub = v1::Coordinator::NewStub(coord::make_channel(o));
  const v1::Job j = watch(*stub, o, a.job, parse_duration(a.every, "--every"));
  if (a.json) std::cout << job_json(j).dump() << "\n";
  return 0;
}

int run_cancel(JobArgs& a) {
  const coord::ClientOptions o = a.rpc.options();
  auto stub = v1::Coordinator::NewStub(coord::make_channel(o));
  v1::CancelJobRequest req;
  req.set_job_id(a.job);
  v1::Job j;
  coord::check(stub->CancelJob(coord::make_context(o).get(), req, &j), "CancelJob", o);
  std::cout << j.id() << " " << job_line(j) << "\n";
  return 0;
}

// Writes a job's output (or error) lines to `path`. A regular file (or a new one) is written
// through a temporary file renamed at the end, so a failed fetch never leaves a partial file under
// the name. Anything else that exists (/dev/null, a FIFO, a terminal) is written in place: renaming
// a file over it would replace the device itself. Returns the lines written.
int64_t fetch_to(v1::Coordinator::Stub& stub, const coord::ClientOptions& o, const std::string& job, bool errors,
                 const std::string& path) {
  const bool to_stdout = path == "-";
  std::error_code ec;
  const auto kind = std::filesystem::status(path, ec);
  const bool in_place = !to_stdout && std::filesystem::exists(kind) && !std::filesystem::is_regular_file(kind);
  // Through a symbolic link, the file it names is replaced, not the link.
  const std::string final_path =
      !to_stdout && !in_place && std::filesystem::is_symlink(std::filesystem::symlink_status(path, ec))
          ? std::filesystem::weakly_canonical(path).string()
          : path;
  const std::string tmp = in_place ? path : final_path + ".part";
  std::ofstream f;
  if (!to_stdout) {
    f.open(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw IoError("cannot write '" + tmp + "': " + errno_message(errno));
  }
  std::ostream& out = to_stdout ? std::cout : f;
  auto ctx = coord::make_context(o, std::chrono::hours(1));
  v1::FetchResultsRequest req;
  req.set_job_id(job);
  req.set_errors(errors);
  auto reader = stub.FetchResults(ctx.get(), req);
  v1::ResultChunk chunk;
  int64_t n = 0;
  while (reader->Read(&chunk))
    for (const std::string& line : chunk.lines()) {
      out << line << '\n';
      ++n;
    }
  const grpc::Status st = reader->Finish();
  if (!to_stdout) {
    f.close();
    if ((!st.ok() || !f) && !in_place) std::filesystem::remove(tmp);
    if (!f && st.ok()) throw IoError("cannot write '" + tmp + "' (is the disk full?)");
  }
  coord::check(st, "FetchResults", o);
  if (!to_stdout && !in_place) std::filesystem::rename(tmp, final_path);
  return n;
}

int run_results(JobArgs& a) {
  const coord::ClientOptions o = a.rpc.options();
  auto stub = v1::Coordinator::NewStub(coord::make_channel(o));
  v1::GetJobRequest req;
  req.set_job_id(a.job);
  v1::Job j;
  coord::check(stub->GetJob(coord::make_context(o).get(), req, &j), "GetJob", o);
  const int64_t outputs = fetch_to(*stub, o, a.job, false, a.output);
  std::cerr << "tiergen: " << outputs << " output line" << (outputs == 1 ? "" : "s")
            << (a.output == "-" ? "" : " in " + a.output);
  if (!a.errors.empty()) {
    const int64_t errs = fetch_to(*stub, o, a.job, true, a.errors);
    std::cerr << ", " << errs << " error line" << (errs == 1 ? "" : "s") << " in " << a.errors;
  } else if (j.failed() > 0) {
    std::cerr << "; " << j.failed() << " lines failed (--errors FILE gets them)";
  }
  std::cerr << "\n";
  if (j.state() != "completed" && j.state() != "cancelled")
    std::cerr << "tiergen: the job is still " << j.state() << ": these are the results so far\n";
  return 0;
}

int run_workers(JobArgs& a) {
  const coord::ClientOptions o = a.rpc.options();
  auto stub = v1::Coordinator::NewStub(coord::make_channel(o));
  v1::ListWorkersResponse resp;
  coord::check(stub->ListWorkers(coord::make_context(o).get(), v1::ListWorkersRequest{}, &resp), "ListWorkers", o);
  for (const v1::WorkerStatus& w : resp.workers()) {
    if (a.json) {
      const nlohmann::json desc = nlohmann::json::parse(w.description(), nullptr, false);
      std::cout << nlohmann::json{{"id", w.id()},
                                  {"model", w.model()},
                                  {"ready", w.ready()},
                                  {"last_heartbeat_ms", w.last_heartbeat_ms()},
                                  {"blocks_done", w.blocks_done()},
                                  {"requests_done", w.requests_done()},
                                  {"description", desc.is_discarded() ? nlohmann::json(w.description()) : desc}}
                       .dump()
                << "\n";
    } else {
      std::cout << w.id() << "  " << w.model() << "  " << (w.ready() ? "ready" : "loading") << "  " << w.requests_done()
                << " requests in " << w.blocks_done() << " blocks  " << w.description() << "\n";
    }
  }
  if (resp.workers_size() == 0) std::cerr << "tiergen: no worker pipelines registered\n";
  return 0;
}

}  // namespace

std::vector<Command> add_job_commands(CLI::App& app) {
  std::vector<Command> out;
  auto add = [&](const char* name, const char* help, int (*run)(JobArgs&), auto&& flags) {
    auto a = std::make_shared<JobArgs>();
    CLI::App* cmd = app.add_subcommand(name, help);
    a->rpc.add_flags(*cmd);
    flags(*cmd, *a);
    out.push_back({cmd, [a, run] { return run(*a); }});
  };
  add("submit", "Submit a batch job (OpenAI Batch JSONL) to a coordinator; prints its id", run_submit,
      [](CLI::App& c, JobArgs& a) {
        c.add_option("-i,--input", a.input, "The batch file, one request per line ('-': stdin)")->required();
        c.add_option("--name", a.name, "A name for the job, unique on the coordinator (a retried submit is refused)");
        c.add_option("--model", a.model,
                     "The model the job is for (default: the lines' body.model, else the coordinator's)");
        c.add_flag("--wait", a.wait, "Follow the job until it ends");
        c.add_option("--every", a.every, "With --wait and no terminal: a progress line this often (default 10s)");
      });
  add("jobs", "List a coordinator's jobs, newest first", run_jobs, [](CLI::App& c, JobArgs& a) {
    c.add_option("--limit", a.limit, "At most this many (default 100)")->check(integer_in(1, 100000));
    c.add_flag("--json", a.json, "One JSON object per job");
  });
  add("watch", "Follow a job until it ends: progress, tok/s and ETA", run_watch, [](CLI::App& c, JobArgs& a) {
    c.add_option("job", a.job, "The job's id")->required();
    c.add_option("--every", a.every, "Without a terminal: a progress line this often (default 10s)");
    c.add_flag("--json", a.json, "Print the final state as JSON");
  });
  add("results", "Fetch a job's output lines (OpenAI Batch output format)", run_results, [](CLI::App& c, JobArgs& a) {
    c.add_option("job", a.job, "The job's id")->required();
    c.add_option("-o,--output", a.output, "Where the output lines go ('-': stdout)")->required();
    c.add_option("--errors", a.errors, "Where the error lines go (malformed or failed requests)");
  });
  add("cancel", "Cancel a job: nothing more of it runs; results so far are kept", run_cancel,
      [](CLI::App& c, JobArgs& a) { c.add_option("job", a.job, "The job's id")->required(); });
  add("workers", "List the worker pipelines registered with a coordinator", run_workers,
      [](CLI::App& c, JobArgs& a) { c.add_flag("--json", a.json, "One JSON object per worker pipeline"); });
  return out;
}

#else  // built without gRPC: the commands exist and say what is missing

std::vector<Command> add_job_commands(CLI::App& app) {
  std::vector<Command> out;
  for (const char* name : {"submit", "jobs", "watch", "results", "cancel", "workers"})
    out.push_back(add_without_grpc(app, name));
  return out;
}

#endif

Command add_without_grpc(CLI::App& app, const char* name) {
  CLI::App* cmd = app.add_subcommand(name, "(this build has no gRPC: see docs/coordinator.md)");
  cmd->allow_extras();
  const std::string n = name;
  return {cmd, [n]() -> int {
            throw UnsupportedError("tiergen " + n +
                                   " needs the coordinator, and this tiergen was built without gRPC: install "
                                   "libgrpc++-dev, protobuf-compiler-grpc, libprotobuf-dev, protobuf-compiler and "
                                   "libsqlite3-dev (scripts/setup.sh), then rebuild");
          }};
}

}  // namespace tiergen::cli
