#include "runtime/engine/weights.h"

#include <cmath>

#include "runtime/core/error.h"

namespace tiergen {
namespace {

void check_shape(const Tensor& t, const std::string& name, const Shape& shape, const std::string& where) {
  if (t.shape() != shape)
    throw FormatError(where + ": tensor '" + name + "' has shape " + shape_str(t.shape()) + ", the config implies " +
                      shape_str(shape));
  if (!is_float(t.dtype()) || t.dtype() == DType::F64)
    throw UnsupportedError(where + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype()) +
                           "; weights must be F32, F16 or BF16");
}

class CheckpointWeights final : public WeightSource {
 public:
  explicit CheckpointWeights(Checkpoint c) : ckpt_(std::move(c)) {}
  Tensor get(const std::string& name, const Shape& shape) override {
    const std::string found = resolve(name);
    if (found.empty())
      throw FormatError(describe() + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
    Tensor t = ckpt_.get(found);
    check_shape(t, found, shape, describe());
    return t;
  }
  bool contains(const std::string& name) const override { return !resolve(name).empty(); }
  std::string describe() const override { return ckpt_.dir().string(); }

 private:
  std::string resolve(const std::string& name) const {
    if (ckpt_.contains(name)) return name;
    const size_t dot = name.find('.');
    if (dot != std::string::npos && ckpt_.contains(name.substr(dot + 1))) return name.substr(dot + 1);
    return {};
  }
  Checkpoint ckpt_;
};

// SplitMix64: a cheap, well-mixed hash so every element is a pure function of (seed, name, index)
// and filling parallelises trivially.
inline uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class DummyWeights final : public WeightSource {
 public:
  DummyWeights(DType dtype, uint64_t seed) : dtype_(dtype), seed_(seed) {}
  Tensor get(const std::string& name, const Shape& shape) override {
    Tensor t = Tensor::empty(shape, dtype_);
    const bool is_bias = ends_with(name, ".bias");
    const bool is_norm = !is_bias && (name.find("norm") != std::string::npos || name.find("ln_f") != std::string::npos);
    if (is_bias) return t;  // zeros
    uint64_t h = seed_;
    for (char c : name) h = splitmix(h ^ static_cast<unsigned char>(c));
    const int64_t n = t.numel();
    const float scale = 0.02f * std::sqrt(3.0f);  // uniform with the std of N(0, 0.02)
    const size_t esize = dtype_size(dtype_);
    char* out = static_cast<char*>(t.raw());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float v = 1.0f;
      if (!is_norm) {
        const uint64_t r = splitmix(h + static_cast<uint64_t>(i));
        v = (static_cast<float>(r >> 40) / static_cast<float>(1ull << 24) * 2.0f - 1.0f) * scale;
      }
      convert_from_f32(out + static_cast<size_t>(i) * esize, dtype_, &v, 1);
    }
    return t;
  }
  bool contains(const std::string& name) const override { return true; }
  std::string describe() const override { return "dummy weights"; }

 private:
  DType dtype_;
  uint64_t seed_;
};

}  // namespace

std::unique_ptr<WeightSource> checkpoint_weights(Checkpoint checkpoint) {
  return std::make_unique<CheckpointWeights>(std::move(checkpoint));
}

std::unique_ptr<WeightSource> dummy_weights(DType dtype, uint64_t seed) {
  return std::make_unique<DummyWeights>(dtype, seed);
}

}  // namespace tiergen
