#include "comm/local_transport.h"

#include "runtime/core/error.h"

namespace tiergen::comm {

class LocalEndpoint final : public Transport {
 public:
  LocalEndpoint(LocalHub& hub, int rank) : hub_(hub), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return hub_.size_; }
  std::string describe(int rank) const override { return "rank " + std::to_string(rank) + " (this process)"; }

  void send(int peer, std::vector<std::byte> bytes) override {
    check_peer(peer);
    {
      const std::lock_guard lock(hub_.mu_);
      box(rank_, peer).push_back(std::move(bytes));
    }
    hub_.cv_.notify_all();
  }

  std::vector<std::byte> recv(int peer, Duration timeout) override {
    check_peer(peer);
    std::unique_lock lock(hub_.mu_);
    auto& inbox = box(peer, rank_);
    if (!hub_.cv_.wait_for(lock, timeout, [&] { return !inbox.empty() || hub_.aborted_; }))
      throw PeerError(timeout_message(*this, peer, timeout));
    if (inbox.empty()) throw PeerError(*hub_.aborted_);
    std::vector<std::byte> out = std::move(inbox.front());
    inbox.pop_front();
    return out;
  }

  void abort(const std::string& why) override {
    {
      const std::lock_guard lock(hub_.mu_);
      if (!hub_.aborted_) hub_.aborted_ = describe(rank_) + " stopped: " + why;
    }
    hub_.cv_.notify_all();
  }

  void check_failures() override {
    const std::lock_guard lock(hub_.mu_);
    if (hub_.aborted_) throw PeerError(*hub_.aborted_);
  }

  void flush(Duration) override {}  // delivered when sent

 private:
  void check_peer(int peer) const {
    if (peer < 0 || peer >= hub_.size_ || peer == rank_)
      throw InternalError("rank " + std::to_string(rank_) + " addressed rank " + std::to_string(peer) + " of " +
                          std::to_string(hub_.size_));
  }
  // The mailbox of messages from `from` to `to`; with the hub's lock held.
  std::deque<std::vector<std::byte>>& box(int from, int to) {
    return hub_.boxes_[static_cast<size_t>(from) * static_cast<size_t>(hub_.size_) + static_cast<size_t>(to)];
  }
  LocalHub& hub_;
  int rank_;
};

LocalHub::LocalHub(int size) : size_(size), boxes_(static_cast<size_t>(size) * static_cast<size_t>(size)) {
  if (size < 1) throw InvalidArgumentError("a pipeline needs at least one rank, got " + std::to_string(size));
}

std::unique_ptr<Transport> LocalHub::endpoint(int rank) {
  if (rank < 0 || rank >= size_)
    throw InvalidArgumentError("rank " + std::to_string(rank) + " outside a pipeline of " + std::to_string(size_));
  return std::make_unique<LocalEndpoint>(*this, rank);
}

}  // namespace tiergen::comm
