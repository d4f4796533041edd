// Runs the `tiergen` executable as a user would, for the CLI tests: arguments as shell words, stdin
// from a string, and what the run cost (wall time, peak resident memory).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "tests/testutil/testutil.h"

namespace tiergen::testing {

struct CliRun {
  int status = -1;  // exit status, or 128 + signal
  std::string out, err;
  double seconds = 0;   // wall time
  long max_rss_kb = 0;  // peak resident set of the process
};

// What the process is started with beyond its arguments.
struct CliLimits {
  // RLIMIT_FSIZE: a write past this many bytes of any file fails with EFBIG (SIGXFSZ is ignored),
  // as a disk that fills mid-run fails writes; without root or a spare filesystem.
  std::optional<uint64_t> file_size;
  // Shell words that start tiergen, e.g. "mpirun -np 2": the process is then the launcher's.
  std::string launcher;
};

// A `tiergen` process started and not yet waited for: for tests that signal a run in progress.
class TiergenProcess {
 public:
  explicit TiergenProcess(const std::string& args, const std::string& input = "", const CliLimits& limits = {});
  ~TiergenProcess();  // kills and reaps a process not waited for
  TiergenProcess(const TiergenProcess&) = delete;
  TiergenProcess& operator=(const TiergenProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `sig` to the process.
  void signal(int sig) const;
  // Waits for it to end (ADD_FAILURE and a kill after `deadline`), then its outputs.
  CliRun wait(std::chrono::seconds deadline = std::chrono::seconds(600));

 private:
  TempDir tmp_;
  std::string cmd_;
  pid_t pid_ = -1;
  std::chrono::steady_clock::time_point start_;
};

// `args` are shell words, already quoted; TIERGEN_BINARY is the executable under test.
CliRun run_tiergen(const std::string& args, const std::string& input = "", const CliLimits& limits = {});

// The executable under test (TIERGEN_BINARY, set by the build).
std::string tiergen_binary();

// The repository's demo model, models/fortune-tiny.
std::string demo_model();

// This machine's host name, as ranks name their host in messages.
std::string host_name();

// The pid of MPI rank `rank` among the children of `mpirun` (the one whose environment holds
// OMPI_COMM_WORLD_RANK=rank), waiting up to 5 s for it to start; -1 if it never does.
pid_t mpi_rank_pid(pid_t mpirun, int rank);

}  // namespace tiergen::testing
