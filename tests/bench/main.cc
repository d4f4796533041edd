// Micro-benchmark entry: select OpenBLAS's kernels for this CPU first (kernels/cpu_setup.h).
#include <benchmark/benchmark.h>

#include <cstdio>

#include "kernels/cpu_setup.h"

int main(int argc, char** argv) {
  tiergen::kernels::cpu::reexec_with_blas_coretype(argv);
  std::printf("OpenBLAS kernels: %s\n", tiergen::kernels::cpu::blas_core_name().c_str());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
