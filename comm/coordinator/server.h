// `tiergen coordinator` (docs/coordinator.md): the gRPC server that holds batch jobs in a SQLite
// job store (job_store.h), hands their requests to worker pipelines in blocks and collects the
// results. Clients use the Coordinator service, worker pipelines the Worker service
// (coordinator.proto); grpc.health.v1 reports SERVING once a worker pipeline is registered and
// loaded, and server reflection lists both services.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tiergen::coord {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one (port() tells)
  std::string db;                          // the job store's file
  std::string model;              // the model served: jobs default to it, workers of another are refused ("": any)
  std::string token;              // bearer token every call must carry ("": none needed)
  std::string tls_cert, tls_key;  // PEM contents: TLS when both are set
  std::string tls_client_ca;      // PEM: with TLS, clients and workers must present a certificate it signed (mTLS)
  int64_t max_message_bytes = 16 << 20;  // a larger message is RESOURCE_EXHAUSTED
  int64_t heartbeat_ms = 2000;           // how often workers beat
  int64_t lease_ms = 15000;              // a worker silent this long is dead; its blocks go to others
  int64_t max_block = 256;               // requests per block at most, whatever a worker asks
};

class CoordinatorServer {
 public:
  // Opens the job store and starts serving. IoError when the address cannot be bound or the store
  // cannot be opened; InvalidArgumentError for options that do not fit together.
  explicit CoordinatorServer(ServerOptions options);
  ~CoordinatorServer();  // shuts down, letting calls in progress end within a second
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  int port() const;
  // Blocks until shutdown() (another thread or a signal handler's thread calls it).
  void wait();
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiergen::coord
