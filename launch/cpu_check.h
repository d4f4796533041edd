// Start-up check that this CPU can run the instructions the build was compiled for. The CPU code is
// compiled for an x86-64 micro-architecture level (TIERGEN_CPU_ARCH, x86-64-v3 by default: AVX2,
// FMA, F16C, BMI2, ...), and a CPU without them would die of SIGILL somewhere inside the first
// kernel. launch/cpu_check_main.cc runs the check as a constructor, before any other code of the
// executable, and exits with one error line instead.
//
// Everything here is compiled with plain -march=x86-64 (launch/CMakeLists.txt) and uses no C++
// library types: an inline function shared with the other translation units, which are compiled
// for the higher level, could be merged into their AVX2 copy by the linker.
#pragma once

#include <cstddef>

namespace tiergen::cpu {

// CPU features the x86-64 levels 2 to 4 require, as far as the compiler can query them
// (__builtin_cpu_supports). Every member defaults to true: a feature that cannot be queried (some
// are not with clang) is not held against the CPU.
struct X86Features {
  // x86-64-v2
  bool sse3 = true, ssse3 = true, sse4_1 = true, sse4_2 = true, popcnt = true, cx16 = true, lahf = true;
  // x86-64-v3
  bool avx = true, avx2 = true, bmi1 = true, bmi2 = true, f16c = true, fma = true, lzcnt = true, movbe = true,
       osxsave = true;
  // x86-64-v4
  bool avx512f = true, avx512bw = true, avx512cd = true, avx512dq = true, avx512vl = true;
};

// The features of the CPU this runs on (all true on other architectures).
X86Features this_cpu_features();

// Writes the names of the features of levels 2..`level` that `have` lacks, lowest level first,
// separated by ", " ("avx2, fma") into `out` (NUL-terminated, truncated to `cap`). Returns their
// number.
int x86_missing_features(const X86Features& have, int level, char* out, size_t cap);

// The error line (ending in '\n') for a build compiled for `arch` (x86-64 level `level`) on a CPU
// with `have`, written into `out` (NUL-terminated, truncated to `cap`); returns its length, and 0
// (with `out` empty) when no required feature is missing or `level` is below 2.
size_t x86_cpu_check_message(const X86Features& have, const char* arch, int level, char* out, size_t cap);

// Exit status when the CPU lacks a feature the build needs: the CLI's "unsupported" code
// (kExitUnsupported in launch/exit_codes.h, not included here to keep this file free of C++ library
// headers).
inline constexpr int kCpuCheckExitStatus = 4;

}  // namespace tiergen::cpu
