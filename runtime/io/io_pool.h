// Disk I/O worker threads: reads and writes of the disk tier run here, off the compute thread, so
// the next layer's weights come from disk while the current one computes. Every wait has a
// deadline: a disk that stops answering is an IoError naming the request, not a hung run.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tiergen::io {

// One queued request; wait() returns when it is done, rethrowing what it threw.
class IoTicket {
 public:
  IoTicket() = default;
  IoTicket(std::future<void> done, std::string what) : done_(std::move(done)), what_(std::move(what)) {}
  bool valid() const { return done_.valid(); }
  // IoError when `deadline` passes first ("...: no answer from the disk in 60 s").
  void wait(std::chrono::milliseconds deadline);

 private:
  std::future<void> done_;
  std::string what_;
};

class IoPool {
 public:
  explicit IoPool(int threads);
  // Lets queued requests finish, then joins the threads.
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  // Queues `job`; `what` names it in errors ("reading layers.3 weights from ...").
  IoTicket submit(std::function<void()> job, std::string what);
  int threads() const { return static_cast<int>(workers_.size()); }

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace tiergen::io
