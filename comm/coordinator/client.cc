#include "comm/coordinator/client.h"

#include <grpc/support/log.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "runtime/core/error.h"

namespace tiergen::coord {

std::string read_pem(const std::string& file, const char* what) {
  if (file.empty()) return {};
  std::ifstream f(file, std::ios::binary);
  if (!f) throw IoError(std::string("cannot open the ") + what + " '" + file + "': " + errno_message(errno));
  std::ostringstream s;
  s << f.rdbuf();
  if (f.bad()) throw IoError(std::string("cannot read the ") + what + " '" + file + "'");
  return s.str();
}

std::string read_token(const std::string& file, const char* env) {
  std::string t;
  if (!file.empty()) {
    t = read_pem(file, "token file");
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
    if (t.empty()) throw InvalidArgumentError("the token file '" + file + "' is empty");
  } else if (const char* v = env ? std::getenv(env) : nullptr) {
    t = v;
  }
  return t;
}

namespace {

// gRPC's own log lines (a refused TLS handshake, a lost connection) would go to stderr beside the
// one error line a client prints, which already names the call and gRPC's reason. A client drops
// them, unless GRPC_VERBOSITY asks for them.
void drop_grpc_log_lines() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!std::getenv("GRPC_VERBOSITY")) gpr_set_log_function([](gpr_log_func_args*) {});
  });
}

}  // namespace

std::shared_ptr<grpc::Channel> make_channel(const ClientOptions& o) {
  drop_grpc_log_lines();
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (o.tls || !o.tls_ca.empty() || !o.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = o.tls_ca;
    ssl.pem_cert_chain = o.tls_cert;
    ssl.pem_private_key = o.tls_key;
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX)));
  args.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX)));
  return grpc::CreateCustomChannel(o.address, creds, args);
}

std::unique_ptr<grpc::ClientContext> make_context(const ClientOptions& o, std::chrono::milliseconds timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!o.token.empty()) ctx->AddMetadata("authorization", "Bearer " + o.token);
  if (timeout.count() > 0) ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  return ctx;
}

const char* status_code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

void throw_status(const grpc::Status& s, const std::string& call, const ClientOptions& o) {
  std::string msg = call + " at " + o.address + ": " + status_code_name(s.error_code()) + ": " + s.error_message();
  // A refused TLS handshake reaches the client as a closed socket; say where to look.
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE)
    msg += o.tls ? " (with TLS: is the coordinator up, does --tls-ca hold the CA that signed its certificate, and "
                   "does it want a client certificate, --tls-cert/--tls-key, signed by its --tls-client-ca?)"
                 : " (is the coordinator up there, and without TLS? use --tls/--tls-ca for one with TLS)";
  throw RpcError(msg);
}

}  // namespace tiergen::coord
