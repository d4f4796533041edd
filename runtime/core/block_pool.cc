#include "runtime/core/block_pool.h"

#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/core/error.h"

namespace tiergen {

struct BlockPool::State {
  std::function<void*(size_t)> allocate;
  std::function<void(void*, size_t)> release;
  Tier tier;
  std::function<std::string(size_t)> describe_failure;
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free;  // rounded size -> cached blocks
  size_t cached = 0;
};

namespace {

// Sizes are rounded so that nearby requests share a bucket: 512 B below 1 MiB, 2 MiB above.
size_t bucket(size_t nbytes) {
  const size_t g = nbytes < (size_t{1} << 20) ? 512 : (size_t{2} << 20);
  return (std::max<size_t>(nbytes, 1) + g - 1) / g * g;
}

}  // namespace

BlockPool::BlockPool(std::function<void*(size_t)> allocate, std::function<void(void*, size_t)> release, Tier tier,
                     std::function<std::string(size_t)> describe_failure)
    : state_(std::make_shared<State>()) {
  state_->allocate = std::move(allocate);
  state_->release = std::move(release);
  state_->tier = tier;
  state_->describe_failure = std::move(describe_failure);
}

BlockPool::~BlockPool() { trim(); }

std::shared_ptr<Storage> BlockPool::get(size_t nbytes) {
  const size_t size = bucket(nbytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->free.find(size);
    if (it != state_->free.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      state_->cached -= size;
    }
  }
  if (!p) p = state_->allocate(size);
  if (!p) {
    trim();
    p = state_->allocate(size);
  }
  if (!p)
    throw OutOfMemoryError(state_->describe_failure ? state_->describe_failure(size)
                                                    : "allocation of " + std::to_string(size) + " bytes failed");
  std::weak_ptr<State> weak = state_;
  auto release = state_->release;
  return Storage::wrap(p, nbytes, state_->tier, [weak, release, p, size] {
    if (auto st = weak.lock()) {
      std::lock_guard<std::mutex> lock(st->mu);
      st->free[size].push_back(p);
      st->cached += size;
    } else {
      release(p, size);  // the pool is gone: give the block back
    }
  });
}

void BlockPool::trim() {
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto& [size, blocks] : state_->free)
    for (void* p : blocks) state_->release(p, size);
  state_->free.clear();
  state_->cached = 0;
}

size_t BlockPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->cached;
}

std::unique_ptr<BlockPool> make_host_pool() {
  return std::make_unique<BlockPool>([](size_t n) { return std::aligned_alloc(64, (n + 63) / 64 * 64); },
                                     [](void* p, size_t) { std::free(p); }, Tier::Cpu);
}

}  // namespace tiergen
