// Typed errors for the library. Library code throws these (never exit()); the CLI catches them at
// the edge and prints one line, the gRPC edge (later) maps them to grpc::Status codes.
#pragma once

#include <stdexcept>
#include <string>

namespace tiergen {

enum class ErrorKind {
  InvalidArgument,     // a flag, a request, a parameter out of range
  Format,              // a malformed file: safetensors, config.json, tokenizer.json, JSONL
  Io,                  // open/read/write/mmap failed, disk full
  NotFound,            // a file, tensor or token that must exist does not
  Unsupported,         // a valid input that this build cannot run (unknown model_type, op not on backend)
  OutOfMemory,         // an allocation or a memory budget failed
  Device,              // CUDA / cuBLAS / NCCL reported an error
  Peer,                // another rank of a pipeline failed, stopped answering or sent what it should not
  AlreadyExists,       // a name that must be new is taken (a job's name)
  FailedPrecondition,  // valid, but not in this state (a job already sealed, a worker for another model)
  Rpc,                 // a remote call failed: the coordinator refused it or could not be reached
  Internal,            // a broken invariant: a bug in tiergen
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// One small subclass per kind so callers can catch what they can handle.
#define TIERGEN_DEFINE_ERROR(Name, Kind)                                           \
  class Name : public Error {                                                      \
   public:                                                                         \
    explicit Name(const std::string& message) : Error(ErrorKind::Kind, message) {} \
  };
TIERGEN_DEFINE_ERROR(InvalidArgumentError, InvalidArgument)
TIERGEN_DEFINE_ERROR(FormatError, Format)
TIERGEN_DEFINE_ERROR(IoError, Io)
TIERGEN_DEFINE_ERROR(NotFoundError, NotFound)
TIERGEN_DEFINE_ERROR(UnsupportedError, Unsupported)
TIERGEN_DEFINE_ERROR(OutOfMemoryError, OutOfMemory)
TIERGEN_DEFINE_ERROR(DeviceError, Device)
TIERGEN_DEFINE_ERROR(PeerError, Peer)
TIERGEN_DEFINE_ERROR(AlreadyExistsError, AlreadyExists)
TIERGEN_DEFINE_ERROR(FailedPreconditionError, FailedPrecondition)
TIERGEN_DEFINE_ERROR(RpcError, Rpc)
TIERGEN_DEFINE_ERROR(InternalError, Internal)
#undef TIERGEN_DEFINE_ERROR

// `errno_message(errno)`: strerror text, thread-safe.
std::string errno_message(int err);

}  // namespace tiergen

// Internal invariants: a failure is a tiergen bug, reported with file:line.
#define TIERGEN_CHECK(cond, msg)                                                              \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw ::tiergen::InternalError(std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                     ": check failed: " #cond ": " + (msg));                  \
  } while (0)
