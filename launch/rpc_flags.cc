#include "launch/rpc_flags.h"

#include <cstdlib>

#include "runtime/core/error.h"
#include "runtime/core/units.h"

namespace tiergen::cli {

void RpcFlags::add_flags(CLI::App& cmd, const char* address_flag) {
  cmd.add_option(address_flag, address,
                 "The coordinator's address, host:port (default: $TIERGEN_COORDINATOR, else 127.0.0.1:50051)");
  cmd.add_option("--token-file", token_file,
                 "A file holding the coordinator's bearer token (default: $TIERGEN_TOKEN; none when unset)");
  cmd.add_flag("--tls", tls, "Connect with TLS, trusting the system's root certificates (or --tls-ca)");
  cmd.add_option("--tls-ca", tls_ca, "PEM file of the CA that signed the coordinator's certificate (implies --tls)");
  cmd.add_option("--tls-cert", tls_cert, "PEM file of this client's certificate, for a coordinator that asks (mTLS)");
  cmd.add_option("--tls-key", tls_key, "PEM file of the key of --tls-cert");
  cmd.add_option("--rpc-timeout", timeout, "Deadline of each call to the coordinator (default 30s)");
}

#if TIERGEN_HAVE_GRPC
coord::ClientOptions RpcFlags::options() const {
  coord::ClientOptions o;
  o.address = address;
  if (o.address.empty()) {
    const char* env = std::getenv("TIERGEN_COORDINATOR");
    o.address = env && *env ? env : "127.0.0.1:50051";
  }
  if (tls_cert.empty() != tls_key.empty())
    throw InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  o.token = coord::read_token(token_file);
  o.tls = tls || !tls_ca.empty() || !tls_cert.empty();
  o.tls_ca = coord::read_pem(tls_ca, "CA certificate (--tls-ca)");
  o.tls_cert = coord::read_pem(tls_cert, "client certificate (--tls-cert)");
  o.tls_key = coord::read_pem(tls_key, "client key (--tls-key)");
  o.timeout = parse_duration(timeout, "--rpc-timeout");
  if (o.timeout.count() <= 0) throw InvalidArgumentError("--rpc-timeout must be longer than 0");
  return o;
}
#endif

}  // namespace tiergen::cli
