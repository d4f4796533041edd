// OpenBLAS kernel selection. Debian's OpenBLAS is built with DYNAMIC_ARCH: it picks its kernels
// from the CPU model when the library loads. Virtual machines often mask the model ("Intel Xeon
// Processor"), and OpenBLAS then falls back to its SSE3 (Prescott) kernels: about a fifth of the
// speed of the AVX-512 ones on a 16-core AVX-512 Xeon (213 instead of 1025 GFLOP/s for a
// 512x4096x4096 sgemm; docs/benchmarks.md).
// The choice can only be overridden with OPENBLAS_CORETYPE before the library loads, so
// executables call reexec_with_blas_coretype() first thing in main().
#pragma once

#include <string>

namespace tiergen::kernels::cpu {

// The kernel family OpenBLAS is using now ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core_name();
// The family this CPU supports by its features ("SkylakeX" with AVX-512, "Haswell" with AVX2+FMA),
// or empty when OpenBLAS's own choice should stand.
std::string blas_core_for_cpu_features();

// When OPENBLAS_CORETYPE is unset and OpenBLAS chose a family below what the CPU supports, sets
// it and re-executes this program (/proc/self/exe) with the same arguments; returns normally
// otherwise, also when re-executing fails (the program still runs, only slower).
void reexec_with_blas_coretype(char** argv);

}  // namespace tiergen::kernels::cpu
