// Model: a ModelSpec, its architecture, and the layer list with weights bound. Held by
// unique_ptr: layers keep references to the spec and names, so a Model never moves.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "runtime/engine/layer.h"
#include "runtime/model/spec.h"

namespace tiergen {

class Model {
 public:
  // A Hugging Face model folder: config.json + safetensors (single or sharded).
  static std::unique_ptr<Model> load(const std::filesystem::path& dir);
  // Dummy weights generated in place in `dtype` (F16 by default: the benchmarks' dtype).
  static std::unique_ptr<Model> dummy(const ModelSpec& spec, DType dtype = DType::F16, uint64_t seed = 0);
  // Builds the layers for `spec` and loads them from `weights`.
  Model(const ModelSpec& spec, WeightSource& weights);

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  size_t weight_bytes() const;
  // Replaces every weight by a copy in `be`'s tier, converted to `dtype` (the compute dtype of a GPU
  // run). Weights that share bytes (tied embeddings) stay shared.
  void place(kernels::Backend& be, DType dtype);
  // Where the weights came from ("dummy weights" or the folder).
  const std::string& source() const { return source_; }

 private:
  ModelSpec spec_;
  ArchitectureNames names_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::string source_;
};

}  // namespace tiergen
