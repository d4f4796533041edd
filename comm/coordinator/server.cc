#include "comm/coordinator/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <algorithm>

#include <nlohmann/json.hpp>

#include "comm/coordinator/batch_line.h"
#include "comm/coordinator/server_impl.h"
#include "comm/layer_balance.h"
#include "runtime/core/error.h"

namespace tiergen::coord {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

grpc::Status to_status(const std::exception& e) {
  const auto* err = dynamic_cast<const Error*>(&e);
  if (!err) return {grpc::StatusCode::INTERNAL, e.what()};
  switch (err->kind()) {
    case ErrorKind::InvalidArgument:
    case ErrorKind::Format:
    case ErrorKind::Unsupported:
      return {grpc::StatusCode::INVALID_ARGUMENT, e.what()};
    case ErrorKind::NotFound:
      return {grpc::StatusCode::NOT_FOUND, e.what()};
    case ErrorKind::AlreadyExists:
      return {grpc::StatusCode::ALREADY_EXISTS, e.what()};
    case ErrorKind::FailedPrecondition:
      return {grpc::StatusCode::FAILED_PRECONDITION, e.what()};
    case ErrorKind::OutOfMemory:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, e.what()};
    case ErrorKind::Io:  // the job store's disk: the call may succeed later
      return {grpc::StatusCode::UNAVAILABLE, e.what()};
    default:
      return {grpc::StatusCode::INTERNAL, e.what()};
  }
}

void fill_job(const JobInfo& info, v1::Job* out, int64_t now) {
  const JobCounts& c = info.counts;
  out->set_id(info.id);
  out->set_name(info.name);
  out->set_model(info.model);
  out->set_state(job_state_name(info.state));
  out->set_total(c.total);
  out->set_pending(c.pending);
  out->set_leased(c.leased);
  out->set_succeeded(c.succeeded);
  out->set_failed(c.failed);
  out->set_cancelled(c.cancelled);
  out->set_prompt_tokens(c.prompt_tokens);
  out->set_completion_tokens(c.completion_tokens);
  out->set_created_ms(info.created_ms);
  out->set_finished_ms(info.finished_ms);
  // The rate over the time since its first block went to a worker, so that the first block's own
  // work counts (from the first result, a job done in one block had no time at all); the ETA
  // from the requests' rate.
  const int64_t end = info.finished_ms ? info.last_result_ms : now;
  const int64_t start = info.first_lease_ms ? info.first_lease_ms : info.first_result_ms;
  const double seconds = start && info.first_result_ms ? std::max<double>(end - start, 1.0) / 1000.0 : 0.0;
  const int64_t done = c.succeeded + c.failed;
  out->set_tokens_per_second(seconds > 0 ? static_cast<double>(c.completion_tokens) / seconds : 0.0);
  const int64_t left = c.pending + c.leased;
  if (left == 0)
    out->set_eta_seconds(0);
  else if (seconds > 0 && done > 0)
    out->set_eta_seconds(static_cast<double>(left) * seconds / static_cast<double>(done));
  else
    out->set_eta_seconds(-1);
}

grpc::Status ServerState::authorize(const grpc::CallbackServerContext* ctx) const {
  if (options.token.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  const auto it = md.find("authorization");
  const std::string want = "Bearer " + options.token;
  if (it == md.end()) return {grpc::StatusCode::UNAUTHENTICATED, "no bearer token: this coordinator needs one"};
  const std::string_view got(it->second.data(), it->second.size());
  // Compared in time independent of where they differ.
  bool same = got.size() == want.size();
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i] ^ (i < got.size() ? got[i] : 0));
  if (!same || diff != 0) return {grpc::StatusCode::UNAUTHENTICATED, "the bearer token is not this coordinator's"};
  return grpc::Status::OK;
}

grpc::Status ServerState::guarded(const grpc::CallbackServerContext* ctx, const std::function<void()>& body) const {
  if (grpc::Status s = authorize(ctx); !s.ok()) return s;
  try {
    body();
    return grpc::Status::OK;
  } catch (const std::exception& e) {
    return to_status(e);
  }
}

// ---- The Worker service ----

namespace {

[[noreturn]] void unknown_worker(const std::string& id) {
  throw NotFoundError("worker '" + id +
                      "' is not registered here (its heartbeats stopped for longer than the lease and its blocks went "
                      "to other workers, or the coordinator's job store was replaced): register again");
}

}  // namespace

grpc::ServerUnaryReactor* WorkerService::Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                                  v1::Assignment* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    if (req->model().empty()) throw InvalidArgumentError("Register: the worker names no model");
    if (!s_.options.model.empty() && req->model() != s_.options.model)
      throw FailedPreconditionError("this coordinator serves model '" + s_.options.model + "', not the worker's '" +
                                    req->model() + "': start the worker with that model or --served-model-name");
    if (req->ranks_size() < 1) throw InvalidArgumentError("Register: the worker has no ranks");
    if (req->num_layers() < req->ranks_size())
      throw InvalidArgumentError("Register: " + std::to_string(req->ranks_size()) + " ranks for " +
                                 std::to_string(req->num_layers()) + " decoder layers: at most one rank per layer");
    if (req->max_batch() < 1) throw InvalidArgumentError("Register: max_batch must be at least 1");
    // The pipeline's own cost model (comm/layer_balance.h) over the ranks' estimates: where the
    // ranks measured nothing (equal stages), or cannot hold the model in any split, the equal split.
    std::vector<comm::StageCost> costs;
    bool measured = req->ranks_size() > 1;
    for (const v1::RankInfo& k : req->ranks()) {
      costs.push_back({k.seconds_per_layer(), k.fixed_seconds(), k.max_layers()});
      measured = measured && k.max_layers() > 0;
    }
    std::vector<int64_t> first;
    std::string note = "equal shares of the layers";
    if (measured && comm::can_hold(req->num_layers(), costs)) {
      first = comm::balance_layers(req->num_layers(), costs);
      note = "layers assigned by each stage's estimated decode step: " +
             comm::describe_balance(first, req->num_layers(), costs);
    }
    nlohmann::json d;
    d["ranks"] = nlohmann::json::array();
    for (const v1::RankInfo& k : req->ranks())
      d["ranks"].push_back({{"rank", k.rank()},
                            {"host", k.host()},
                            {"device", k.device()},
                            {"gpu_budget_bytes", k.gpu_budget_bytes()},
                            {"cpu_budget_bytes", k.cpu_budget_bytes()},
                            {"disk_budget_bytes", k.disk_budget_bytes()}});
    d["first_layers"] = first;
    d["max_batch"] = req->max_batch();
    d["max_seq_len"] = req->max_seq_len();
    d["assignment"] = note;
    resp->set_worker_id(s_.store.register_worker(req->model(), d.dump(), now_ms()));
    for (int64_t f : first) resp->add_first_layers(f);
    resp->set_note(note);
    resp->set_heartbeat_ms(s_.options.heartbeat_ms);
    resp->set_lease_ms(s_.options.lease_ms);
  }));
  return r;
}

grpc::ServerUnaryReactor* WorkerService::Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                                   v1::HeartbeatResponse*) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    if (!s_.store.heartbeat(req->worker_id(), req->ready(), now_ms())) unknown_worker(req->worker_id());
    changed_();
  }));
  return r;
}

grpc::ServerUnaryReactor* WorkerService::PullBlock(grpc::CallbackServerContext* ctx, const v1::PullBlockRequest* req,
                                                   v1::Block* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    const auto w = s_.store.worker(req->worker_id());
    if (!w) unknown_worker(req->worker_id());
    if (req->max_requests() < 1) throw InvalidArgumentError("PullBlock: max_requests must be at least 1");
    const int64_t n = std::min(req->max_requests(), s_.options.max_block);
    const auto block = s_.store.lease_block(w->id, w->model, n, now_ms());
    if (!block) return;  // block_id 0: no work now
    resp->set_block_id(block->block_id);
    resp->set_job_id(block->job_id);
    for (const StoredRequest& q : block->requests) {
      v1::BlockRequest* b = resp->add_requests();
      b->set_index(q.index);
      b->set_custom_id(q.custom_id);
      b->set_body(q.body);
    }
  }));
  return r;
}

grpc::ServerUnaryReactor* WorkerService::ReportResults(grpc::CallbackServerContext* ctx,
                                                       const v1::ReportResultsRequest* req,
                                                       v1::ReportResultsResponse* resp) {
  auto* r = ctx->DefaultReactor();
  r->Finish(s_.guarded(ctx, [&] {
    const auto block = s_.store.block(req->block_id());
    if (!block) throw NotFoundError("block " + std::to_string(req->block_id()) + " is not in the job store");
    std::unordered_map<int64_t, const StoredRequest*> by_index;
    for (const StoredRequest& q : block->requests) by_index[q.index] = &q;
    const int64_t created = now_ms() / 1000;
    std::vector<ReportedResult> rows;
    for (const v1::RequestResult& res : req->results()) {
      const auto it = by_index.find(res.index());
      if (it == by_index.end())
        throw InvalidArgumentError("line " + std::to_string(res.index() + 1) + " of job " + block->job_id +
                                   " is not in block " + std::to_string(req->block_id()));
      const StoredRequest& q = *it->second;
      ReportedResult row;
      row.index = res.index();
      row.error = res.error();
      if (res.error()) {
        row.line = error_line(block->job_id, q.index, q.custom_id,
                              res.error_code().empty() ? "worker_error" : res.error_code(), res.text());
      } else {
        const BatchRequest b = from_worker_body(q.custom_id, q.body);
        row.prompt_tokens = res.prompt_tokens();
        row.completion_tokens = res.completion_tokens();
        row.line =
            output_line(block->job_id, q.index, q.custom_id, b.endpoint, block->model,
                        {res.text(), res.finish_reason(), res.prompt_tokens(), res.completion_tokens()}, created);
      }
      rows.push_back(std::move(row));
    }
    resp->set_recorded(s_.store.commit_results(req->worker_id(), req->block_id(), rows, now_ms()));
  }));
  return r;
}

// ---- The server ----

struct CoordinatorServer::Impl {
  ServerState state;
  CoordinatorService clients{state};
  WorkerService workers;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread reaper;

  explicit Impl(ServerOptions o) : state(std::move(o)), workers(state, [this] { update_health(); }) {}

  void update_health() {
    if (auto* h = server ? server->GetHealthCheckService() : nullptr)
      h->SetServingStatus(state.store.any_ready_worker());
  }

  // Workers silent for a lease are declared dead and their blocks handed out again; the health
  // status follows the workers that remain.
  void reap() {
    const auto period = std::chrono::milliseconds(std::clamp<int64_t>(state.options.lease_ms / 4, 50, 1000));
    std::unique_lock lock(mu);
    while (!cv.wait_for(lock, period, [&] { return stopping; })) {
      lock.unlock();
      try {
        state.store.expire_workers(now_ms(), state.options.lease_ms);
        update_health();
      } catch (const std::exception&) {
        // The store's disk may come back; the next round tries again.
      }
      lock.lock();
    }
  }
};

CoordinatorServer::CoordinatorServer(ServerOptions o) {
  if (o.db.empty()) throw InvalidArgumentError("the coordinator needs a job store file (--db)");
  if (o.tls_cert.empty() != o.tls_key.empty())
    throw InvalidArgumentError("TLS needs both a certificate and its key (--tls-cert and --tls-key)");
  if (!o.tls_client_ca.empty() && o.tls_cert.empty())
    throw InvalidArgumentError("--tls-client-ca (mTLS) needs TLS: give --tls-cert and --tls-key too");
  if (o.heartbeat_ms < 1 || o.lease_ms <= o.heartbeat_ms)
    throw InvalidArgumentError("the lease (" + std::to_string(o.lease_ms) + " ms) must be longer than the heartbeat (" +
                               std::to_string(o.heartbeat_ms) + " ms)");
  impl_ = std::make_unique<Impl>(std::move(o));
  const ServerOptions& opt = impl_->state.options;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder b;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!opt.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl(opt.tls_client_ca.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = opt.tls_client_ca;
    ssl.pem_key_cert_pairs.push_back({opt.tls_key, opt.tls_cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  b.AddListeningPort(opt.listen, creds, &impl_->port);
  b.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(opt.max_message_bytes, INT32_MAX)));
  b.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(opt.max_message_bytes, INT32_MAX)));
  b.RegisterService(&impl_->clients);
  b.RegisterService(&impl_->workers);
  impl_->server = b.BuildAndStart();
  if (!impl_->server || impl_->port == 0)
    throw IoError("cannot listen on '" + opt.listen + "' (in use, or not a host:port this machine has)");
  impl_->update_health();
  impl_->reaper = std::thread([this] { impl_->reap(); });
}

CoordinatorServer::~CoordinatorServer() {
  shutdown();
  impl_->reaper.join();
}

int CoordinatorServer::port() const { return impl_->port; }

void CoordinatorServer::wait() { impl_->server->Wait(); }

void CoordinatorServer::shutdown() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

}  // namespace tiergen::coord
