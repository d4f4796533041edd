// Rotary position embedding, rotate-half layout (HF Llama/Qwen2/Mistral): for each head the pair
// (x_i, x_{i+D/2}) is rotated by angle positions[t] * inv_freq[i]. The angle is formed in f32 and
// its cos/sin taken in f32, as transformers does, so positions agree to the last bits.
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "runtime/core/error.h"

namespace tiergen::kernels::cpu {

void rope_(Tensor& x, int head_dim, std::span<const int64_t> positions, std::span<const float> inv_freq) {
  check_host("rope_", x);
  const int64_t T = static_cast<int64_t>(positions.size());
  const int half = head_dim / 2;
  if (x.dtype() != DType::F32 || x.rank() != 2 || x.dim(0) != T || head_dim % 2 != 0 || x.dim(1) % head_dim != 0 ||
      static_cast<int>(inv_freq.size()) != half)
    throw InternalError("rope_: x " + x.describe() + ", head_dim " + std::to_string(head_dim) + ", " +
                        std::to_string(T) + " positions, " + std::to_string(inv_freq.size()) + " frequencies");
  const int64_t H = x.dim(1) / head_dim;
  float* xp = x.data<float>();
#pragma omp parallel
  {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float pos = static_cast<float>(positions[t]);
      for (int i = 0; i < half; ++i) {
        const float angle = pos * inv_freq[i];
        c[i] = std::cos(angle);
        s[i] = std::sin(angle);
      }
      for (int64_t h = 0; h < H; ++h) {
        float* v = xp + t * x.dim(1) + h * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * c[i] - b * s[i];
          v[i + half] = b * c[i] + a * s[i];
        }
      }
    }
  }
}

}  // namespace tiergen::kernels::cpu
