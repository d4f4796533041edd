// The in-process transport: the ranks of a pipeline as threads of one process (tests, and a
// pipeline of one). A LocalHub holds one mailbox per (sender, receiver) pair; each rank's endpoint
// is a Transport over it.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "comm/transport.h"

namespace tiergen::comm {

class LocalHub {
 public:
  explicit LocalHub(int size);
  int size() const { return size_; }
  // Rank `rank`'s endpoint; the hub must outlive it.
  std::unique_ptr<Transport> endpoint(int rank);

 private:
  friend class LocalEndpoint;
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::deque<std::vector<std::byte>>> boxes_;  // [from * size + to]
  std::optional<std::string> aborted_;                     // the first rank's report
};

}  // namespace tiergen::comm
