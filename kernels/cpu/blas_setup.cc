#include "kernels/cpu_setup.h"

#include <unistd.h>

#include <cstdlib>

extern "C" char* openblas_get_corename(void);

namespace tiergen::kernels::cpu {

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

std::string blas_core_for_cpu_features() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

void reexec_with_blas_coretype(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or we already re-executed
  const std::string want = blas_core_for_cpu_features();
  const std::string have = blas_core_name();
  // Only the generic pre-AVX families are replaced: a specific choice (Zen, Cooperlake, ...) stands.
  static constexpr const char* generic[] = {"Prescott", "Core2",  "Penryn",     "Dunnington", "Nehalem", "Sandybridge",
                                            "Atom",     "Katmai", "Coppermine", "Northwood",  "Banias"};
  bool is_generic = false;
  for (const char* g : generic) is_generic |= have == g;
  if (want.empty() || !is_generic) return;
  setenv("OPENBLAS_CORETYPE", want.c_str(), 1);
  execv("/proc/self/exe", argv);
  // execv failed: carry on with the slower kernels.
}

}  // namespace tiergen::kernels::cpu
