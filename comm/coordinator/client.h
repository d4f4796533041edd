// Calling a coordinator: the channel (plain or TLS, with a client certificate for mTLS), the bearer
// token on every call, a deadline on every call, and a failed call as an RpcError naming the
// call, the address and the gRPC status.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "coordinator.grpc.pb.h"

namespace tiergen::coord {

struct ClientOptions {
  std::string address = "127.0.0.1:50051";
  std::string token;                         // "": none sent
  std::string tls_ca;                        // PEM contents: TLS, trusting these roots ("": plain)
  std::string tls_cert, tls_key;             // PEM contents: a client certificate (mTLS)
  bool tls = false;                          // TLS with the system's roots when tls_ca is empty
  std::chrono::milliseconds timeout{30000};  // each unary call's deadline
  int64_t max_message_bytes = 16 << 20;
};

// The bearer token: the file's contents (trailing newline removed) when `file` is set, else the
// environment variable `env` ("": none). IoError naming the file when it cannot be read, and
// InvalidArgumentError when it is empty.
std::string read_token(const std::string& file, const char* env = "TIERGEN_TOKEN");
// A PEM file's contents ("" for ""). IoError naming the file.
std::string read_pem(const std::string& file, const char* what);

std::shared_ptr<grpc::Channel> make_channel(const ClientOptions& o);

// A context with the token and the deadline (`timeout`; zero: none, for streams that last).
std::unique_ptr<grpc::ClientContext> make_context(const ClientOptions& o, std::chrono::milliseconds timeout);
inline std::unique_ptr<grpc::ClientContext> make_context(const ClientOptions& o) { return make_context(o, o.timeout); }

// RpcError: "<call> at <address>: <CODE>: <message>".
[[noreturn]] void throw_status(const grpc::Status& s, const std::string& call, const ClientOptions& o);
inline void check(const grpc::Status& s, const std::string& call, const ClientOptions& o) {
  if (!s.ok()) throw_status(s, call, o);
}
const char* status_code_name(grpc::StatusCode c);

}  // namespace tiergen::coord
