// Runs the CPU check (cpu_check.h) when the `tiergen` executable starts, before main() and before
// the static constructors of the code compiled for the higher level (those run at the default
// priority, after 101). Linked into `tiergen` only, so test executables never run it.
// TIERGEN_CPU_ARCH ("x86-64-v3") and TIERGEN_CPU_LEVEL (3) come from launch/CMakeLists.txt, which
// defines them only when the build targets an x86-64-vN level (not with TIERGEN_NATIVE).
#include <unistd.h>

#include "launch/cpu_check.h"

#if defined(TIERGEN_CPU_LEVEL) && defined(TIERGEN_CPU_ARCH)
namespace {

__attribute__((constructor(101))) void tiergen_cpu_check() {
  char line[512];
  const size_t n = tiergen::cpu::x86_cpu_check_message(tiergen::cpu::this_cpu_features(), TIERGEN_CPU_ARCH,
                                                       TIERGEN_CPU_LEVEL, line, sizeof line);
  if (n == 0) return;
  if (write(STDERR_FILENO, line, n) < 0) {
    // nothing else can be said
  }
  _exit(tiergen::cpu::kCpuCheckExitStatus);
}

}  // namespace
#endif
