// BlockPool: memory blocks handed out as Storage and, when their last Tensor goes, kept on a free
// list by (rounded) size for the next request of that size instead of being returned to the system.
// A generation run asks for the same activation sizes every step, so after its first step nothing is
// allocated (or page-faulted in) again. Thread-safe. Blocks outliving the pool are freed directly.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "runtime/core/tensor.h"

namespace tiergen {

class BlockPool {
 public:
  // `allocate(n)` returns n bytes or null; `release(p, n)` frees them. `tier` labels the Storage.
  // `describe_failure(n)`, when given, words the OutOfMemoryError of a failed n-byte allocation.
  BlockPool(std::function<void*(size_t)> allocate, std::function<void(void*, size_t)> release, Tier tier,
            std::function<std::string(size_t)> describe_failure = {});
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // At least `nbytes`, uninitialised. On allocation failure the cached blocks are freed and the
  // request retried; then OutOfMemoryError naming the size.
  std::shared_ptr<Storage> get(size_t nbytes);
  // Frees every cached block.
  void trim();
  size_t cached_bytes() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// A pool of 64-byte aligned pageable host memory (Tier::Cpu).
std::unique_ptr<BlockPool> make_host_pool();

}  // namespace tiergen
