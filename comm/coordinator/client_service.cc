// The Coordinator service: what clients call (coordinator.proto).
#include <grpcpp/alarm.h>

#include "comm/coordinator/batch_line.h"
#include "comm/coordinator/server_impl.h"
#include "runtime/core/error.h"

namespace tiergen::coord {
namespace {

// One input line, checked: a request, or the error line that stands for it in the output.
NewLine check_line(const std::string& job_id, const std::string& model, int64_t index, const std::string& text) {
  NewLine n;
  n.index = index;
  try {
    const BatchRequest r = parse_batch_line(text);
    n.custom_id = r.custom_id;
    if (!r.model.empty() && r.model != model)
      throw FailedPreconditionError("body.model is '" + r.model + "', but the job is for '" + model + "'");
    n.body = to_worker_body(r);
    n.prompt_bytes = r.prompt_bytes();
  } catch (const Error& e) {
    n.error = true;
    n.custom_id = salvage_custom_id(text);
    const char* code = e.kind() == ErrorKind::Format               ? "invalid_json"
                       : e.kind() == ErrorKind::Unsupported        ? "unsupported"
                       : e.kind() == ErrorKind::FailedPrecondition ? "model_mismatch"
                                                                   : "invalid_request";
    n.body = error_line(job_id, index, n.custom_id, code, "line " + std::to_string(index + 1) + ": " + e.what());
  }
  return n;
}

// SubmitJob: lines are checked and stored as they arrive, message by message; the job is sealed
// (visible, and leased to workers) only when the client half-closes the stream. A stream that
// fails or is cancelled first drops the job: the client was never told its id.
class SubmitReactor final : public grpc::ServerReadReactor<v1::SubmitJobRequest> {
 public:
  SubmitReactor(ServerState& s, grpc::CallbackServerContext* ctx, v1::Job* out) : s_(s), ctx_(ctx), out_(out) {
    if (grpc::Status st = s_.authorize(ctx); !st.ok()) {
      Finish(st);
      return;
    }
    StartRead(&msg_);
  }
  void OnReadDone(bool ok) override {
    try {
      if (!ok) {
        // The stream ended: a job only when its last message came (else the client died, or a
        // message broke the size limit, which gRPC reports to the client itself).
        if (!last_) return fail({grpc::StatusCode::CANCELLED, "the submission ended before its last message"});
        if (job_id_.empty()) start();  // an empty job
        s_.store.seal_job(job_id_, now_ms());
        fill_job(*s_.store.job(job_id_), out_, now_ms());
        Finish(grpc::Status::OK);
        return;
      }
      if (last_) throw InvalidArgumentError("SubmitJob: a message after the one marked last");
      last_ = msg_.last();
      if (job_id_.empty()) start();
      std::vector<NewLine> lines;
      lines.reserve(static_cast<size_t>(msg_.lines_size()));
      for (const std::string& text : msg_.lines()) lines.push_back(check_line(job_id_, model_, next_++, text));
      s_.store.add_lines(job_id_, lines, [&](int64_t index, const std::string& id, int64_t first) {
        return error_line(job_id_, index, id, "duplicate_custom_id",
                          "line " + std::to_string(index + 1) + ": custom_id '" + id + "' is that of line " +
                              std::to_string(first + 1) + " too: each request needs its own");
      });
    } catch (const std::exception& e) {
      return fail(to_status(e));
    }
    StartRead(&msg_);
  }
  void OnDone() override { delete this; }

 private:
  // The job is made from the first message: its name and model (else the coordinator's model,
  // else the first line's body.model).
  void start() {
    model_ = msg_.model().empty() ? s_.options.model : msg_.model();
    if (model_.empty() && msg_.lines_size() > 0) {
      try {
        model_ = parse_batch_line(msg_.lines(0)).model;
      } catch (const Error&) {
      }
    }
    if (model_.empty())
      throw InvalidArgumentError(
          "the job names no model: give one (tiergen submit --model) or set body.model in its lines");
    if (!s_.options.model.empty() && model_ != s_.options.model)
      throw FailedPreconditionError("this coordinator serves model '" + s_.options.model + "', not '" + model_ + "'");
    job_id_ = s_.store.create_job(msg_.name(), model_, now_ms());
  }
  void fail(const grpc::Status& st) {
    if (!job_id_.empty()) {
      try {
        s_.store.drop_job(job_id_);
      } catch (const std::exception&) {
        // Dropped when the store is next opened, as every job left uploading is.
      }
    }
    Finish(st);
  }

  ServerState& s_;
  grpc::CallbackServerContext* ctx_;
  v1::Job* out_;
  v1::SubmitJobRequest msg_;
  std::string job_id_, model_;
  int64_t next_ = 0;
  bool last_ = false;
};

bool finished(const v1::Job& j) { return j.state() == "completed" || j.state() == "cancelled"; }

// WatchJob: the job now, then again each time it changes, until it ends. Between looks an alarm
// waits; exactly one of a write or an alarm is in flight at a time, and only the alarm's callback
// finishes the call, so nothing fires after OnDone.
class WatchReactor final : public grpc::ServerWriteReactor<v1::Job> {
 public:
  WatchReactor(ServerState& s, grpc::CallbackServerContext* ctx, const v1::WatchJobRequest* req)
      : s_(s), id_(req->job_id()), interval_(req->interval_ms() > 0 ? req->interval_ms() : 1000) {
    if (grpc::Status st = s_.authorize(ctx); !st.ok()) {
      Finish(st);
      return;
    }
    look(true);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) cancelled_ = true;
    if (finished(sent_) || cancelled_) return wake(0);
    wake(interval_);
  }
  void OnCancel() override {
    cancelled_ = true;
    alarm_.Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void wake(int64_t ms) {
    alarm_.Set(std::chrono::system_clock::now() + std::chrono::milliseconds(ms), [this](bool) { look(false); });
  }
  void look(bool first) {
    if (cancelled_) return Finish({grpc::StatusCode::CANCELLED, "the watch was cancelled"});
    if (!first && finished(sent_)) return Finish(grpc::Status::OK);
    try {
      const auto info = s_.store.job(id_);
      if (!info) return Finish({grpc::StatusCode::NOT_FOUND, "no job '" + id_ + "'"});
      v1::Job now;
      fill_job(*info, &now, now_ms());
      const bool changed = first || now.state() != sent_.state() || now.succeeded() != sent_.succeeded() ||
                           now.failed() != sent_.failed() || now.leased() != sent_.leased();
      if (!changed) return wake(interval_);
      sent_ = std::move(now);
      StartWrite(&sent_);
    } catch (const std::exception& e) {
      Finish(to_status(e));
    }
  }

  ServerState& s_;
  std::string id_;
  int64_t interval_;
  v1::Job sent_;
  grpc::Alarm alarm_;
  std::atomic<bool> cancelled_{false};
};

// FetchResults: pages of result lines, each written when the last was sent.
class FetchReactor final : public grpc::ServerWriteReactor<v1::ResultChunk> {
 public:
  FetchReactor(ServerState& s, grpc::CallbackServerContext* ctx, const v1::FetchResultsRequest* req)
      : s_(s), id_(req->job_id()), errors_(req->errors()), after_(req->from_index() - 1) {
    if (grpc::Status st = s_.authorize(ctx); !st.ok()) {
      Finish(st);
      return;
    }
    if (req->from_index() < 0) {
      Finish({grpc::StatusCode::INVALID_ARGUMENT,
              "from_index is " + std::to_string(req->from_index()) + ": it must be 0 or more"});
      return;
    }
    if (!s_.store.job(id_)) {
      Finish({grpc::StatusCode::NOT_FOUND, "no job '" + id_ + "'"});
      return;
    }
    next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Finish({grpc::StatusCode::CANCELLED, "the client went away"});
    next();
  }
  void OnDone() override { delete this; }

 private:
  void next() {
    try {
      chunk_.Clear();
      // A page of up to 1000 lines or about 1 MiB, well under any message limit.
      size_t bytes = 0;
      while (bytes < (1u << 20)) {
        const auto rows = s_.store.results(id_, errors_, after_, 256);
        for (const ResultRow& r : rows) {
          chunk_.add_lines(r.line);
          bytes += r.line.size();
          after_ = r.index;
        }
        if (rows.size() < 256 || chunk_.lines_size() >= 1000) break;
      }
      if (chunk_.lines_size() == 0) return Finish(grpc::Status::OK);
      chunk_.set_last_index(after_);
      StartWrite(&chunk_);
    } catch (const std::exception& e) {
      Finish(to_status(e));
    }
  }

  ServerState& s_;
  std::string id_;
  bool errors_;
  int64_t after_;
  v1::ResultChunk chunk_;
};

}  // namespace

grpc::ServerReadReactor<v1::SubmitJobRequest>* CoordinatorService::SubmitJob(grpc::CallbackServerContext* ctx,
                                                                             v1::Job* job) {
  return new SubmitReactor(s_, ctx, job);
}

grpc::ServerUnaryReactor* CoordinatorService::GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                                     v1::Job* job) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    const auto info = s_.store.job(req->job_id());
    if (!info) throw NotFoundError("no job '" + req->job_id() + "'");
    fill_job(*info, job, now_ms());
  }));
  return r;
}

grpc::ServerWriteReactor<v1::Job>* CoordinatorService::WatchJob(grpc::CallbackServerContext* ctx,
                                                                const v1::WatchJobRequest* req) {
  return new WatchReactor(s_, ctx, req);
}

grpc::ServerUnaryReactor* CoordinatorService::CancelJob(grpc::CallbackServerContext* ctx,
                                                        const v1::CancelJobRequest* req, v1::Job* job) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    s_.store.cancel(req->job_id(), now_ms());  // NotFoundError for an unknown job
    fill_job(*s_.store.job(req->job_id()), job, now_ms());
  }));
  return r;
}

grpc::ServerUnaryReactor* CoordinatorService::ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                                       v1::ListJobsResponse* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    if (req->limit() < 0) throw InvalidArgumentError("ListJobs: limit must be at least 0");
    const int64_t now = now_ms();
    for (const JobInfo& j : s_.store.jobs(req->limit() > 0 ? req->limit() : 100)) fill_job(j, resp->add_jobs(), now);
  }));
  return r;
}

grpc::ServerWriteReactor<v1::ResultChunk>* CoordinatorService::FetchResults(grpc::CallbackServerContext* ctx,
                                                                            const v1::FetchResultsRequest* req) {
  return new FetchReactor(s_, ctx, req);
}

grpc::ServerUnaryReactor* CoordinatorService::ListWorkers(grpc::CallbackServerContext* ctx,
                                                          const v1::ListWorkersRequest*,
                                                          v1::ListWorkersResponse* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    for (const WorkerInfo& w : s_.store.workers()) {
      v1::WorkerStatus* o = resp->add_workers();
      o->set_id(w.id);
      o->set_model(w.model);
      o->set_ready(w.ready);
      o->set_last_heartbeat_ms(w.last_heartbeat_ms);
      o->set_description(w.description);
      o->set_blocks_done(w.blocks_done);
      o->set_requests_done(w.requests_done);
    }
  }));
  return r;
}

}  // namespace tiergen::coord
