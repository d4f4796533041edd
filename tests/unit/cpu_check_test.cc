// The start-up CPU check's message (launch/cpu_check.h): what a CPU without the build's x86-64
// level is told. The constructor that runs it at start-up is linked into `tiergen` only.
#include "launch/cpu_check.h"

#include <gtest/gtest.h>

#include <string>

namespace tiergen::cpu {
namespace {

std::string message(const X86Features& f, int level = 3, const char* arch = "x86-64-v3") {
  char buf[512];
  const size_t n = x86_cpu_check_message(f, arch, level, buf, sizeof buf);
  EXPECT_EQ(n, std::string(buf).size());
  return buf;
}

std::string missing(const X86Features& f, int level) {
  char buf[256];
  const int n = x86_missing_features(f, level, buf, sizeof buf);
  const std::string s = buf;
  EXPECT_EQ(n == 0, s.empty());
  return s;
}

TEST(CpuCheck, AllPresentSaysNothing) {
  EXPECT_EQ(message(X86Features{}), "");
  EXPECT_EQ(message(X86Features{}, 4, "x86-64-v4"), "");
  EXPECT_EQ(missing(X86Features{}, 4), "");
}

TEST(CpuCheck, MissingAvx2NamesItAndTheRebuildFlag) {
  X86Features f;
  f.avx2 = false;
  EXPECT_EQ(message(f),
            "tiergen: error: this build needs an x86-64-v3 CPU (AVX2, FMA, F16C); this CPU lacks avx2. "
            "Rebuild with -DTIERGEN_CPU_ARCH=x86-64 (or -DTIERGEN_NATIVE=ON).\n");
}

TEST(CpuCheck, ListsEveryMissingFeatureLowestLevelFirst) {
  X86Features f;
  f.fma = false;
  f.avx2 = false;
  f.sse4_2 = false;
  const std::string m = message(f);
  EXPECT_NE(m.find("this CPU lacks sse4.2, avx2, fma."), std::string::npos) << m;
  EXPECT_EQ(m.back(), '\n');
  EXPECT_EQ(m.find('\n'), m.size() - 1) << "one line";
}

TEST(CpuCheck, OnlyTheBuildsLevelCounts) {
  X86Features f;
  f.avx512f = false;  // a v4 feature: not needed by a v3 build
  EXPECT_EQ(message(f, 3), "");
  EXPECT_EQ(missing(f, 4), "avx512f");
  EXPECT_NE(message(f, 4, "x86-64-v4").find("needs an x86-64-v4 CPU (AVX-512); this CPU lacks avx512f."),
            std::string::npos);
  f = X86Features{};
  f.avx = f.bmi2 = false;
  EXPECT_EQ(missing(f, 2), "");
  EXPECT_EQ(message(f, 2, "x86-64-v2"), "");
  EXPECT_EQ(missing(f, 3), "avx, bmi2");
}

TEST(CpuCheck, BaselineBuildsAreNeverRefused) {
  X86Features none;
  none.sse3 = none.avx = none.avx2 = none.fma = false;
  EXPECT_EQ(message(none, 1, "x86-64"), "");
  EXPECT_EQ(message(none, 0, ""), "");
}

TEST(CpuCheck, TruncatesToTheBuffer) {
  X86Features f;
  f.avx2 = false;
  char buf[16];
  const size_t n = x86_cpu_check_message(f, "x86-64-v3", 3, buf, sizeof buf);
  EXPECT_EQ(n, sizeof buf - 1);
  EXPECT_EQ(std::string(buf), "tiergen: error:");
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && defined(__BMI2__)
// This test executable was compiled for x86-64-v3 or above and is running, so the CPU has the level.
TEST(CpuCheck, ThisCpuPassesTheLevelThisTestWasBuiltFor) { EXPECT_EQ(missing(this_cpu_features(), 3), ""); }
#endif

}  // namespace
}  // namespace tiergen::cpu
