// Where a model's weights come from: a checkpoint folder, or dummy values generated in place (for
// benchmarks of any model size without a checkpoint).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/core/tensor.h"
#include "runtime/model/safetensors.h"

namespace tiergen {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // The tensor `name`, which must have `shape`; a missing tensor or a shape mismatch is a
  // FormatError naming the tensor, the expected and found shapes and the source.
  virtual Tensor get(const std::string& name, const Shape& shape) = 0;
  virtual bool contains(const std::string& name) const = 0;
  virtual std::string describe() const = 0;
};

// Checkpoint tensors, zero-copy. Hub checkpoints differ in a leading prefix ("transformer.h.0" vs
// "h.0", "model.decoder" vs "decoder"): a name that is absent is retried without its first
// component.
std::unique_ptr<WeightSource> checkpoint_weights(Checkpoint checkpoint);

// Random weights in `dtype`, deterministic in (seed, name): N(0, 0.02)-like values for matrices,
// 1 for norm weights (names ending "norm"/"layernorm"/"ln_f" get ones), 0 for biases.
std::unique_ptr<WeightSource> dummy_weights(DType dtype, uint64_t seed);

}  // namespace tiergen
