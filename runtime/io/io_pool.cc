#include "runtime/io/io_pool.h"

#include <fmt/format.h>

#include "runtime/core/error.h"

namespace tiergen::io {

void IoTicket::wait(std::chrono::milliseconds deadline) {
  if (!done_.valid()) throw InternalError("IoTicket::wait on an empty ticket");
  if (done_.wait_for(deadline) != std::future_status::ready)
    throw IoError(what_ + ": no answer from the disk in " + fmt::format("{:g}", deadline.count() / 1000.0) + " s");
  done_.get();  // rethrows the request's error
}

IoPool::IoPool(int threads) {
  if (threads < 1) throw InvalidArgumentError("disk I/O threads: " + std::to_string(threads) + ", need at least 1");
  workers_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
}

IoPool::~IoPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

IoTicket IoPool::submit(std::function<void()> job, std::string what) {
  std::packaged_task<void()> task(std::move(job));
  std::future<void> done = task.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw InternalError("IoPool::submit after shutdown");
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return {std::move(done), std::move(what)};
}

void IoPool::run() {
  for (;;) {
    std::packaged_task<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to do
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();  // an exception is stored in the task's future
  }
}

}  // namespace tiergen::io
