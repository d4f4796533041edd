// The coordinator server's internals, shared by its two services (server.cc: the Worker service
// and the server itself; client_service.cc: the Coordinator service clients call).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "comm/coordinator/job_store.h"
#include "comm/coordinator/server.h"
#include "coordinator.grpc.pb.h"

namespace tiergen::coord {

namespace v1 = ::tiergen::coordinator::v1;

int64_t now_ms();

// A typed tiergen error (runtime/core/error.h) as the gRPC status a caller acts on.
grpc::Status to_status(const std::exception& e);

// The job as the protocol reports it, with its rate and ETA.
void fill_job(const JobInfo& info, v1::Job* out, int64_t now);

// Shared state of the running server.
struct ServerState {
  ServerOptions options;
  JobStore store;
  explicit ServerState(ServerOptions o) : options(std::move(o)), store(options.db) {}

  // UNAUTHENTICATED unless the call carries "authorization: Bearer <token>" (when a token is set).
  grpc::Status authorize(const grpc::CallbackServerContext* ctx) const;
  // Runs `body` for a unary call after authorising it, mapping what it throws to a status.
  grpc::Status guarded(const grpc::CallbackServerContext* ctx, const std::function<void()>& body) const;
};

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  explicit CoordinatorService(ServerState& s) : s_(s) {}
  grpc::ServerReadReactor<v1::SubmitJobRequest>* SubmitJob(grpc::CallbackServerContext* ctx, v1::Job* job) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::Job* job) override;
  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* ctx,
                                              const v1::WatchJobRequest* req) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                      v1::Job* job) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerWriteReactor<v1::ResultChunk>* FetchResults(grpc::CallbackServerContext* ctx,
                                                          const v1::FetchResultsRequest* req) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const v1::ListWorkersRequest* req,
                                        v1::ListWorkersResponse* resp) override;

 private:
  ServerState& s_;
};

class WorkerService final : public v1::Worker::CallbackService {
 public:
  // `changed`: called when a worker's readiness may have changed (the health status follows).
  WorkerService(ServerState& s, std::function<void()> changed) : s_(s), changed_(std::move(changed)) {}
  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::Assignment* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* PullBlock(grpc::CallbackServerContext* ctx, const v1::PullBlockRequest* req,
                                      v1::Block* resp) override;
  grpc::ServerUnaryReactor* ReportResults(grpc::CallbackServerContext* ctx, const v1::ReportResultsRequest* req,
                                          v1::ReportResultsResponse* resp) override;

 private:
  ServerState& s_;
  std::function<void()> changed_;
};

}  // namespace tiergen::coord
