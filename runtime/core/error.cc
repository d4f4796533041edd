#include "runtime/core/error.h"

#include <cstring>

namespace tiergen {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidArgument:
      return "invalid argument";
    case ErrorKind::Format:
      return "malformed input";
    case ErrorKind::Io:
      return "I/O error";
    case ErrorKind::NotFound:
      return "not found";
    case ErrorKind::Unsupported:
      return "unsupported";
    case ErrorKind::OutOfMemory:
      return "out of memory";
    case ErrorKind::Device:
      return "device error";
    case ErrorKind::Peer:
      return "pipeline peer failed";
    case ErrorKind::AlreadyExists:
      return "already exists";
    case ErrorKind::FailedPrecondition:
      return "failed precondition";
    case ErrorKind::Rpc:
      return "remote call failed";
    case ErrorKind::Internal:
      return "internal error";
  }
  return "error";
}

std::string errno_message(int err) {
  char buf[256];
  // GNU strerror_r may return a static string instead of filling buf.
  const char* s = strerror_r(err, buf, sizeof buf);
  return std::string(s);
}

}  // namespace tiergen
