#include "kernels/backend.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "runtime/core/error.h"

#ifdef TIERGEN_HAVE_CUDA
#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#endif

namespace tiergen::kernels {

void convert_on_host(Tensor& dst, const Tensor& src) {
  if (!host_addressable(dst.tier()) || !host_addressable(src.tier()) || dst.numel() != src.numel())
    throw InternalError("convert_on_host: " + src.describe() + " into " + dst.describe());
  const size_t n = static_cast<size_t>(src.numel());
  if (src.dtype() == dst.dtype()) {
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return;
  }
  std::vector<float> f(n);  // through f32
  convert_to_f32(f.data(), src.raw(), src.dtype(), n);
  convert_from_f32(dst.raw(), dst.dtype(), f.data(), n);
}

Tensor Backend::upload(const Tensor& host, DType dtype) {
  if (!host_addressable(host.tier())) throw InternalError("upload: " + host.describe() + " is not on the host");
  Tensor src = host;
  if (host.dtype() != dtype) {  // convert on the host, once
    src = Tensor::empty(host.shape(), dtype);
    convert_on_host(src, host);
  }
  Tensor out = alloc(host.shape(), dtype);
  copy(out, src);
  return out;
}

#ifdef TIERGEN_HAVE_CUDA
namespace {

// The CUDA backend's C entry points (kernels/cuda/module/entry.cc).
struct CudaEntry {
  bool (*available)() = nullptr;
  Backend* (*make)(int) = nullptr;
  std::string error;  // why it could not be found
};

std::string module_path() {
  if (const char* env = std::getenv("TIERGEN_CUDA_MODULE"); env && *env) return env;
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  const std::filesystem::path dir = ec ? std::filesystem::path(".") : exe.parent_path();
  for (const auto& p : {dir / ".." / "lib" / "libtiergen_cuda.so", dir / "libtiergen_cuda.so"})
    if (std::filesystem::exists(p, ec)) return p.string();
  return (dir / ".." / "lib" / "libtiergen_cuda.so").string();
}

const CudaEntry& cuda_entry() {
  static const CudaEntry entry = [] {
    CudaEntry e;
    void* handle = RTLD_DEFAULT;  // linked into this process (the GPU tests)?
    if (!dlsym(handle, "tiergen_cuda_make_backend")) {
      const std::string path = module_path();
      handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // never closed: its code owns live tensors
      if (!handle) {
        const char* why = dlerror();
        e.error = "cannot load the CUDA backend module " + path + ": " + (why ? why : "unknown error");
        return e;
      }
    }
    e.available = reinterpret_cast<bool (*)()>(dlsym(handle, "tiergen_cuda_device_available"));
    e.make = reinterpret_cast<Backend* (*)(int)>(dlsym(handle, "tiergen_cuda_make_backend"));
    if (!e.available || !e.make) e.error = "the CUDA backend module lacks its entry points";
    return e;
  }();
  return entry;
}

}  // namespace
#endif

bool cuda_available() {
#ifdef TIERGEN_HAVE_CUDA
  const CudaEntry& e = cuda_entry();
  return e.available && e.available();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
#ifdef TIERGEN_HAVE_CUDA
  const CudaEntry& e = cuda_entry();
  if (!e.make) throw UnsupportedError(e.error);
  return std::unique_ptr<Backend>(e.make(device));
#else
  (void)device;
  throw UnsupportedError(
      "this tiergen was built without CUDA (no nvcc was found at build time); "
      "rebuild with nvcc on PATH or use --device cpu");
#endif
}

}  // namespace tiergen::kernels
