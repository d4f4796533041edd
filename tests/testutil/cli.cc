#include "tests/testutil/cli.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

namespace tiergen::testing {

TiergenProcess::TiergenProcess(const std::string& args, const std::string& input, const CliLimits& limits) {
  write_file(tmp_ / "in", input);
  // exec replaces the shell, so the rusage of the waited child is tiergen's own.
  cmd_ = "exec " + (limits.launcher.empty() ? "" : limits.launcher + " ") + tiergen_binary() + " " + args + " <" +
         (tmp_ / "in").string() + " >" + (tmp_ / "out").string() + " 2>" + (tmp_ / "err").string();
  start_ = std::chrono::steady_clock::now();
  pid_ = fork();
  if (pid_ == 0) {
    if (limits.file_size) {
      std::signal(SIGXFSZ, SIG_IGN);  // kept across exec: the write fails instead of killing
      const rlimit lim{static_cast<rlim_t>(*limits.file_size), static_cast<rlim_t>(*limits.file_size)};
      if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(126);
    }
    execl("/bin/sh", "sh", "-c", cmd_.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid_ < 0) ADD_FAILURE() << "could not start " << cmd_;
}

TiergenProcess::~TiergenProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int raw = 0;
  (void)waitpid(pid_, &raw, 0);
}

void TiergenProcess::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

CliRun TiergenProcess::wait(std::chrono::seconds deadline) {
  CliRun r;
  if (pid_ <= 0) return r;
  int raw = 0;
  rusage usage{};
  const auto until = start_ + deadline;
  pid_t got = 0;
  while ((got = wait4(pid_, &raw, WNOHANG, &usage)) == 0) {
    if (std::chrono::steady_clock::now() > until) {
      ADD_FAILURE() << "still running after " << deadline.count() << " s: " << cmd_;
      ::kill(pid_, SIGKILL);
      got = wait4(pid_, &raw, 0, &usage);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const bool reaped = got == pid_;
  pid_ = -1;
  if (!reaped) {
    ADD_FAILURE() << "could not wait for " << cmd_;
    return r;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  r.max_rss_kb = usage.ru_maxrss;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.out = read_file(tmp_ / "out");
  r.err = read_file(tmp_ / "err");
  return r;
}

CliRun run_tiergen(const std::string& args, const std::string& input, const CliLimits& limits) {
  return TiergenProcess(args, input, limits).wait();
}

// The build's executable, unless TIERGEN_BINARY names another (a build carried to a GPU host).
std::string tiergen_binary() {
  const char* env = std::getenv("TIERGEN_BINARY");
  return env && *env ? std::string(env) : std::string(TIERGEN_BINARY);
}

std::string demo_model() { return (source_dir() / "models" / "fortune-tiny").string(); }

std::string host_name() {
  char h[256] = {};
  gethostname(h, sizeof h - 1);
  return h;
}

pid_t mpi_rank_pid(pid_t mpirun, int rank) {
  for (int tries = 0; tries < 500; ++tries, std::this_thread::sleep_for(std::chrono::milliseconds(10)))
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream stat(e.path() / "stat");
      std::string pid, comm, state;
      pid_t ppid = 0;
      if (!(stat >> pid >> comm >> state >> ppid) || ppid != mpirun) continue;
      std::ifstream env(e.path() / "environ");
      const std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
      if (all.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') != std::string::npos)
        return static_cast<pid_t>(std::stol(name));
    }
  return -1;
}

}  // namespace tiergen::testing
