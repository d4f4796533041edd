// The exit status of `tiergen`, one table for every error path (README "Exit status"):
//   0  success
//   1  an input file is missing, unreadable or malformed (checkpoint, config, tokenizer, prompts)
//   2  bad usage: a flag, a flag's value, or a prompt the model cannot take
//   3  the run does not fit in memory (what it needs and what there is are in the message)
//   4  valid input this build or this CPU cannot run (an unknown model_type, a missing backend)
//   5  the GPU, CUDA or a communication library reported an error
//   6  another rank of a pipeline failed, stopped answering or was lost (the message names it)
//  70  an internal error: a bug in tiergen (please report it with the message)
#pragma once

#include "runtime/core/error.h"

namespace tiergen::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitInput = 1,
  kExitUsage = 2,
  kExitMemory = 3,
  kExitUnsupported = 4,
  kExitDevice = 5,
  kExitPeer = 6,
  kExitRpc = 7,
  kExitInternal = 70,
};

constexpr ExitCode exit_code(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidArgument:
    case ErrorKind::AlreadyExists:
    case ErrorKind::FailedPrecondition:
      return kExitUsage;
    case ErrorKind::Rpc:
      return kExitRpc;
    case ErrorKind::Format:
    case ErrorKind::Io:
    case ErrorKind::NotFound:
      return kExitInput;
    case ErrorKind::OutOfMemory:
      return kExitMemory;
    case ErrorKind::Unsupported:
      return kExitUnsupported;
    case ErrorKind::Device:
      return kExitDevice;
    case ErrorKind::Peer:
      return kExitPeer;
    case ErrorKind::Internal:
      return kExitInternal;
  }
  return kExitInternal;
}

}  // namespace tiergen::cli
