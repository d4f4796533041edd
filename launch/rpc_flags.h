// The flags every command that calls a coordinator shares (submit, jobs, watch, results, cancel,
// workers, worker): its address, the bearer token (from a file or TIERGEN_TOKEN, never a flag's
// value, which other users of the machine could read in the process list), TLS and a deadline.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#if TIERGEN_HAVE_GRPC
#include "comm/coordinator/client.h"
#endif

namespace tiergen::cli {

struct RpcFlags {
  std::string address;  // "": TIERGEN_COORDINATOR, else 127.0.0.1:50051
  std::string token_file;
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key;
  std::string timeout = "30s";
  void add_flags(CLI::App& cmd, const char* address_flag = "--coordinator,-c");
#if TIERGEN_HAVE_GRPC
  // Files read, values checked: IoError naming a file that cannot be read.
  coord::ClientOptions options() const;
#endif
};

}  // namespace tiergen::cli
