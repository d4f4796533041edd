// The pure part of the start-up CPU check (see cpu_check.h). Compiled with -march=x86-64: no
// C++ library types, only plain loops over char buffers.
#include "launch/cpu_check.h"

namespace tiergen::cpu {
namespace {

struct Required {
  const char* name;  // as /proc/cpuinfo spells it, lowercase
  int level;
  bool X86Features::*member;
};

// The x86-64 psABI levels, lowest first. Not every compiler can query every feature (clang 14 knows
// none of cx16, lahf_lm, f16c, lzcnt, movbe, osxsave); this_cpu_features() then leaves them true.
constexpr Required kRequired[] = {
    {"sse3", 2, &X86Features::sse3},         {"ssse3", 2, &X86Features::ssse3},
    {"sse4.1", 2, &X86Features::sse4_1},     {"sse4.2", 2, &X86Features::sse4_2},
    {"popcnt", 2, &X86Features::popcnt},     {"cx16", 2, &X86Features::cx16},
    {"lahf_lm", 2, &X86Features::lahf},      {"avx", 3, &X86Features::avx},
    {"avx2", 3, &X86Features::avx2},         {"bmi1", 3, &X86Features::bmi1},
    {"bmi2", 3, &X86Features::bmi2},         {"f16c", 3, &X86Features::f16c},
    {"fma", 3, &X86Features::fma},           {"lzcnt", 3, &X86Features::lzcnt},
    {"movbe", 3, &X86Features::movbe},       {"osxsave", 3, &X86Features::osxsave},
    {"avx512f", 4, &X86Features::avx512f},   {"avx512bw", 4, &X86Features::avx512bw},
    {"avx512cd", 4, &X86Features::avx512cd}, {"avx512dq", 4, &X86Features::avx512dq},
    {"avx512vl", 4, &X86Features::avx512vl},
};

// Appends to a NUL-terminated buffer of capacity `cap`, truncating.
struct Writer {
  char* out;
  size_t cap;
  size_t len = 0;
  void put(const char* s) {
    for (; *s && len + 1 < cap; ++s) out[len++] = *s;
    if (cap) out[len] = '\0';
  }
};

const char* level_summary(int level) {
  switch (level) {
    case 2:
      return "SSE4.2, POPCNT";
    case 3:
      return "AVX2, FMA, F16C";
    default:
      return "AVX-512";
  }
}

}  // namespace

X86Features this_cpu_features() {
  X86Features f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();  // a constructor may run before libgcc's own, which does this
  f.sse3 = __builtin_cpu_supports("sse3");
  f.ssse3 = __builtin_cpu_supports("ssse3");
  f.sse4_1 = __builtin_cpu_supports("sse4.1");
  f.sse4_2 = __builtin_cpu_supports("sse4.2");
  f.popcnt = __builtin_cpu_supports("popcnt");
  f.avx = __builtin_cpu_supports("avx");  // libgcc also checks that the OS saves the AVX registers
  f.avx2 = __builtin_cpu_supports("avx2");
  f.bmi1 = __builtin_cpu_supports("bmi");
  f.bmi2 = __builtin_cpu_supports("bmi2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512cd = __builtin_cpu_supports("avx512cd");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
#if !defined(__clang__)  // GCC 12 knows these names, clang 14 does not
  f.cx16 = __builtin_cpu_supports("cmpxchg16b");
  f.lahf = __builtin_cpu_supports("lahf_lm");
  f.f16c = __builtin_cpu_supports("f16c");
  f.lzcnt = __builtin_cpu_supports("lzcnt");
  f.movbe = __builtin_cpu_supports("movbe");
  f.osxsave = __builtin_cpu_supports("osxsave");
#endif
#endif
  return f;
}

int x86_missing_features(const X86Features& have, int level, char* out, size_t cap) {
  Writer w{out, cap};
  w.put("");
  int n = 0;
  for (const Required& r : kRequired) {
    if (r.level > level || have.*r.member) continue;
    if (n++) w.put(", ");
    w.put(r.name);
  }
  return n;
}

size_t x86_cpu_check_message(const X86Features& have, const char* arch, int level, char* out, size_t cap) {
  Writer w{out, cap};
  w.put("");
  if (level < 2) return 0;
  char missing[256];
  if (x86_missing_features(have, level, missing, sizeof missing) == 0) return 0;
  w.put("tiergen: error: this build needs an ");
  w.put(arch);
  w.put(" CPU (");
  w.put(level_summary(level));
  w.put("); this CPU lacks ");
  w.put(missing);
  w.put(". Rebuild with -DTIERGEN_CPU_ARCH=x86-64 (or -DTIERGEN_NATIVE=ON).\n");
  return w.len;
}

}  // namespace tiergen::cpu
