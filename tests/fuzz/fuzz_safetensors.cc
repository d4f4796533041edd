// libFuzzer target for the safetensors header validator. Any input must either parse or throw a
// tiergen::Error; anything else (a crash, an ASan report, another exception type escaping, a
// header that passes but describes bytes outside the buffer) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "runtime/core/error.h"
#include "runtime/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    tiergen::SafetensorsHeader h = tiergen::SafetensorsFile::parse_buffer(bytes, "fuzz-input");
    // A header that validates promises in-bounds, back-to-back tensors: check the promise, so the
    // fuzzer also finds logic errors, not only memory errors.
    uint64_t expected = 0;
    for (const tiergen::TensorInfo& t : h.tensors) {
      if (t.begin != expected || t.end < t.begin) __builtin_trap();
      expected = t.end;
    }
    if (expected > size) __builtin_trap();
  } catch (const tiergen::Error&) {
    // Rejected input: the expected outcome for almost everything the fuzzer makes.
  }
  return 0;
}
