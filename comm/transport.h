// Transport: byte messages between the ranks of a pipeline, every wait bounded. Stages pass
// activations and token ids through it (comm/stage_link.h); MPI carries them between processes
// (comm/mpi_transport.h), an in-process hub between threads in the tests (comm/local_transport.h).
//
// Messages between two ranks arrive in the order they were sent. A send returns at once (the bytes
// are the transport's until delivered), so two ranks that send to each other never wait on each
// other; a receive waits at most the deadline, then throws PeerError naming the rank it waited for
// and its host, unless another rank has reported a failure first (abort()): then the error is
// that report, so every rank names the rank that failed, not merely its own neighbour.
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace tiergen::comm {

using Duration = std::chrono::milliseconds;

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Where `rank` runs, for messages: "rank 1 (host gpu-3)".
  virtual std::string describe(int rank) const = 0;

  // Queues `bytes` for `peer`; they are delivered in order, whether or not the peer is receiving.
  virtual void send(int peer, std::vector<std::byte> bytes) = 0;
  // The next message from `peer`, waiting at most `timeout`. PeerError when none came in time or
  // a rank reported a failure (abort()).
  virtual std::vector<std::byte> recv(int peer, Duration timeout) = 0;
  // Tells every other rank that this one stops because of `why` (best effort, never waits long):
  // their waits end with this rank's report instead of their own deadline.
  virtual void abort(const std::string& why) = 0;
  // Throws PeerError with another rank's failure report when one has come, else returns at once:
  // for waits outside the transport (a device-to-device link) to end on it too.
  virtual void check_failures() = 0;
  // Waits (at most `timeout`) until every queued send was delivered to its peer's transport, so
  // that a rank that exits next loses nothing it sent. PeerError past the deadline.
  virtual void flush(Duration timeout) = 0;
};

// The error for a receive that timed out: "rank 1 (host a): no message from rank 0 (host b) within
// 60 s: it stopped answering, died or is still loading (raise --comm-timeout if it is slow)".
std::string timeout_message(const Transport& t, int peer, Duration timeout);

}  // namespace tiergen::comm
