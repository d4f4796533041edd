// Test entry: OpenBLAS kernels for this CPU first (kernels/cpu_setup.h), then GoogleTest.
#include <gtest/gtest.h>

#include "kernels/cpu_setup.h"

int main(int argc, char** argv) {
  tiergen::kernels::cpu::reexec_with_blas_coretype(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
