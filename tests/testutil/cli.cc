#include "tests/testutil/cli.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "tests/testutil/testutil.h"

namespace tiergen::testing {

CliRun run_tiergen(const std::string& args, const std::string& input) {
  TempDir tmp;
  write_file(tmp / "in", input);
  // exec replaces the shell, so the rusage of the waited child is tiergen's own.
  const std::string cmd = "exec " + tiergen_binary() + " " + args + " <" + (tmp / "in").string() + " >" +
                          (tmp / "out").string() + " 2>" + (tmp / "err").string();
  CliRun r;
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int raw = 0;
  rusage usage{};
  if (pid < 0 || wait4(pid, &raw, 0, &usage) != pid) {
    ADD_FAILURE() << "could not run " << cmd;
    return r;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.max_rss_kb = usage.ru_maxrss;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.out = read_file(tmp / "out");
  r.err = read_file(tmp / "err");
  return r;
}

// The build's executable, unless TIERGEN_BINARY names another (a build carried to a GPU host).
std::string tiergen_binary() {
  const char* env = std::getenv("TIERGEN_BINARY");
  return env && *env ? std::string(env) : std::string(TIERGEN_BINARY);
}

std::string demo_model() { return (source_dir() / "models" / "fortune-tiny").string(); }

}  // namespace tiergen::testing
