// --device and --dtype: the compute backend of a run and its dtypes.
#include <charconv>

#include "launch/commands.h"
#include "runtime/core/error.h"

namespace tiergen::cli {
namespace {

// "cuda" -> 0, "cuda:3" -> 3; InvalidArgumentError otherwise.
int cuda_index(const std::string& device) {
  if (device == "cuda") return 0;
  int index = -1;
  const char* first = device.data() + 5;
  const char* last = device.data() + device.size();
  const auto [end, ec] = std::from_chars(first, last, index);
  if (device.rfind("cuda:", 0) != 0 || ec != std::errc() || end != last || index < 0)
    throw InvalidArgumentError("--device must be cpu, cuda or cuda:N, got '" + device + "'");
  return index;
}

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::F32;
  if (name == "float16") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  throw InvalidArgumentError("--dtype must be float32, float16 or bfloat16, got '" + name + "'");
}

}  // namespace

void EngineOptions::add_flags(CLI::App& cmd) {
  cmd.add_option("--device", device, "Where to compute: cpu (default), cuda or cuda:N");
  cmd.add_option("--dtype", dtype,
                 "Compute dtype: float32, float16 or bfloat16 (default: float32 on the CPU; on the GPU the "
                 "checkpoint's 16-bit type, float16 for float32 checkpoints)")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}));
}

ComputePlacement EngineOptions::placement(const ModelSpec& spec) const {
  ComputePlacement p;
  if (!cuda()) {
    if (dtype && *dtype != "float32")
      throw UnsupportedError("--dtype " + *dtype + ": the CPU backend computes in float32 (use --device cuda)");
    p.weights = spec.dtype;  // read as stored, widened inside the GEMM
    return p;
  }
  cuda_index(device);
  const DType dt = dtype ? parse_dtype(*dtype) : (spec.dtype == DType::F32 ? DType::F16 : spec.dtype);
  p.tier = Tier::Gpu;
  p.weights = p.activations = p.kv_cache = dt;
  return p;
}

std::unique_ptr<kernels::Backend> EngineOptions::make_backend() const {
  if (!cuda()) return kernels::make_cpu_backend();
  return kernels::make_cuda_backend(cuda_index(device));
}

std::unique_ptr<Model> EngineOptions::load(const ModelSource& source, kernels::Backend& backend,
                                           const ComputePlacement& p, const LayerLoaded& on_loaded,
                                           LayerSpan span) const {
  auto model = source.load(on_loaded, span);
  if (p.tier == Tier::Gpu && !on_loaded) model->place(backend, p.weights);
  return model;
}

}  // namespace tiergen::cli
