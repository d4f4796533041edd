#include <array>
#include <cstring>
#include <memory>
#include <string>

#ifdef __F16C__
#include <immintrin.h>
#endif

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {
namespace {

// f16 -> f32 through a 256 KB table: portable (no F16C needed) and about as fast as the hardware
// conversion for the memory-bound loops it sits in.
const std::array<float, 65536>& f16_table() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<float, 65536>>();
    for (uint32_t i = 0; i < 65536; ++i) (*t)[i] = f16_to_f32(static_cast<uint16_t>(i));
    return t;
  }();
  return *table;
}

}  // namespace

void to_f32(float* dst, const void* src, DType t, size_t n) {
  switch (t) {
    case DType::F32: {
      const float* s = static_cast<const float*>(src);
#pragma omp simd
      for (size_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
#pragma omp simd
      for (size_t i = 0; i < n; ++i) {
        uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        dst[i] = f;
      }
      return;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      size_t i = 0;
#ifdef __F16C__
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
#endif
      const float* table = f16_table().data();
      for (; i < n; ++i) dst[i] = table[s[i]];
      return;
    }
    default:
      throw UnsupportedError(std::string("cannot convert ") + dtype_name(t) + " to F32 on the CPU backend");
  }
}

}  // namespace tiergen::kernels::cpu
