// Model: a ModelSpec, its architecture, and the layer list with weights bound. Held by
// unique_ptr: layers keep references to the spec and names, so a Model never moves.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <vector>

#include "runtime/engine/layer.h"
#include "runtime/model/spec.h"

namespace tiergen {

// Called with each layer (its index in the layer list) as soon as its weights are loaded, before
// the next one is read: an offloading run places the layer's weights there (GPU, pinned host
// memory, disk), so the host never holds the whole model at once.
using LayerLoaded = std::function<void(size_t index, Layer& layer)>;

// The layers [begin, end) of the layer list whose weights a process loads: a pipeline stage's.
// Every layer is built (the list is the model's), but only these read their weights.
struct LayerSpan {
  size_t begin = 0, end = SIZE_MAX;
  bool contains(size_t i) const { return i >= begin && i < end; }
};

class Model {
 public:
  // A Hugging Face model folder: config.json + safetensors (single or sharded).
  static std::unique_ptr<Model> load(const std::filesystem::path& dir, const LayerLoaded& on_loaded = {},
                                     LayerSpan span = {});
  // Dummy weights generated in place in `dtype` (F16 by default: the benchmarks' dtype).
  static std::unique_ptr<Model> dummy(const ModelSpec& spec, DType dtype = DType::F16, uint64_t seed = 0,
                                      const LayerLoaded& on_loaded = {}, LayerSpan span = {});
  // Builds the layers for `spec` and loads those in `span` from `weights`.
  Model(const ModelSpec& spec, WeightSource& weights, const LayerLoaded& on_loaded = {}, LayerSpan span = {});

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  // The layers whose weights were loaded (all but a pipeline stage's neighbours').
  LayerSpan loaded() const { return span_; }
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
  LayerSpan span_;
};

}  // namespace tiergen
