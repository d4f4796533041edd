// tiergen coordinator: the gRPC server that holds batch jobs and hands them to worker pipelines.
#include <atomic>
#include <csignal>
#include <iostream>
#include <thread>

#include "launch/commands.h"
#include "runtime/core/error.h"
#include "runtime/core/units.h"

#if TIERGEN_HAVE_GRPC
#include <pthread.h>

#include "comm/coordinator/client.h"
#include "comm/coordinator/server.h"
#endif

namespace tiergen::cli {

#if TIERGEN_HAVE_GRPC
namespace {

struct CoordinatorArgs {
  coord::ServerOptions server;
  std::string token_file, tls_cert, tls_key, tls_client_ca;
  std::string heartbeat = "2s", lease = "15s", max_message = "16MiB";
};

int run_coordinator(CoordinatorArgs& a) {
  coord::ServerOptions o = a.server;
  o.token = coord::read_token(a.token_file);
  o.tls_cert = coord::read_pem(a.tls_cert, "server certificate (--tls-cert)");
  o.tls_key = coord::read_pem(a.tls_key, "server key (--tls-key)");
  o.tls_client_ca = coord::read_pem(a.tls_client_ca, "client CA (--tls-client-ca)");
  o.heartbeat_ms = parse_duration(a.heartbeat, "--heartbeat").count();
  o.lease_ms = parse_duration(a.lease, "--lease").count();
  o.max_message_bytes = static_cast<int64_t>(parse_bytes(a.max_message, "--max-message-size"));
  // SIGINT and SIGTERM end the server from a thread of its own (gRPC calls are not safe in a
  // signal handler): blocked here, before gRPC starts its threads, so they inherit the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  coord::CoordinatorServer server(o);
  std::cerr << "tiergen: coordinator listening on " << o.listen.substr(0, o.listen.rfind(':')) << ":" << server.port()
            << (o.tls_cert.empty()        ? ""
                : o.tls_client_ca.empty() ? " (TLS)"
                                          : " (mTLS)")
            << (o.token.empty() ? "" : ", bearer token required") << ", job store " << o.db
            << (o.model.empty() ? "" : ", model " + o.model) << std::endl;
  std::atomic<bool> ended{false};
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop, &sig);
    if (ended) return;
    std::cerr << "tiergen: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ": stopping the coordinator" << std::endl;
    server.shutdown();
  });
  server.wait();
  // Woken by a signal, or by something else ending the server: the waiter is told to go.
  ended = true;
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  return 0;
}

}  // namespace

Command add_coordinator(CLI::App& app) {
  auto a = std::make_shared<CoordinatorArgs>();
  CLI::App* cmd =
      app.add_subcommand("coordinator", "Serve batch jobs to worker pipelines over gRPC (a job store in SQLite)");
  cmd->add_option("--listen", a->server.listen, "host:port to listen on (default 127.0.0.1:50051; port 0 picks one)");
  cmd->add_option("--db", a->server.db, "The job store: an SQLite file, created if absent")->required();
  cmd->add_option("--model", a->server.model,
                  "The model served: jobs default to it, workers of another are refused (default: any)");
  cmd->add_option("--token-file", a->token_file,
                  "A file holding the bearer token every call must carry (default: $TIERGEN_TOKEN; none when unset)");
  cmd->add_option("--tls-cert", a->tls_cert, "PEM certificate: serve TLS (with --tls-key)");
  cmd->add_option("--tls-key", a->tls_key, "PEM key of --tls-cert");
  cmd->add_option("--tls-client-ca", a->tls_client_ca,
                  "PEM CA: clients and workers must present a certificate it signed (mTLS)");
  cmd->add_option("--heartbeat", a->heartbeat, "How often workers beat (default 2s)");
  cmd->add_option("--lease", a->lease, "A worker silent this long is dead and its blocks go to others (default 15s)");
  cmd->add_option("--max-message-size", a->max_message, "Largest message taken or sent (default 16MiB)");
  cmd->add_option("--max-block", a->server.max_block, "Requests per block at most (default 256)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  return {cmd, [a] { return run_coordinator(*a); }};
}

#else

Command add_coordinator(CLI::App& app) { return add_without_grpc(app, "coordinator"); }

#endif

}  // namespace tiergen::cli
