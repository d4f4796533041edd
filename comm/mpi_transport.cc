#include "comm/mpi_transport.h"

#include <cstdlib>
#include <cstring>

#include "runtime/core/error.h"

#if TIERGEN_HAVE_MPI
#include <mpi.h>

#include <algorithm>
#include <deque>
#include <thread>
#include <vector>
#endif

namespace tiergen::comm {

namespace {
int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : 0;
}
}  // namespace

int mpirun_size() {
  // Open MPI, then PMIx (Open MPI 5, Slurm), then MPICH / Intel MPI (PMI).
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"})
    if (int n = env_int(name); n > 0) return n;
  return 1;
}

bool launched_by_mpirun() { return mpirun_size() > 1; }

#if !TIERGEN_HAVE_MPI

bool have_mpi() { return false; }
std::unique_ptr<Transport> make_mpi_transport() {
  throw UnsupportedError("this tiergen was built without MPI (configure with -DTIERGEN_MPI=ON and an MPI library)");
}
int node_local_rank(const Transport&) { return 0; }
void finish_mpi(Transport&, Duration) {}

#else

bool have_mpi() { return true; }

namespace {

constexpr int kDataTag = 1;                // a message: its 8-byte length, then its bytes in parts
constexpr int kAbortTag = 2;               // a rank's failure report (text)
constexpr size_t kPart = size_t{1} << 30;  // MPI counts are ints: big messages go in 1 GiB parts

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, text, &n);
  throw PeerError(std::string(what) + " failed: " + std::string(text, static_cast<size_t>(n)));
}

using Clock = std::chrono::steady_clock;

// Polls until `done()` or the deadline, sleeping a little more each time (up to 1 ms): a waiting
// rank takes no core from the ranks that compute on the same machine.
template <class Done>
bool poll_until(Clock::time_point deadline, Done done) {
  auto nap = std::chrono::microseconds(20);
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
  }
  return true;
}

class MpiTransport final : public Transport {
 public:
  MpiTransport() {
    int ready = 0;
    check(MPI_Initialized(&ready), "MPI_Initialized");
    if (!ready) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    }
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    // Errors come back as codes (and become PeerError), not as MPI's default abort.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int len = 0;
    MPI_Get_processor_name(name, &len);
    std::vector<char> all(static_cast<size_t>(size_) * MPI_MAX_PROCESSOR_NAME);
    check(MPI_Allgather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, comm_),
          "MPI_Allgather of host names");
    for (int r = 0; r < size_; ++r) hosts_.emplace_back(all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME);
    MPI_Comm node;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const { return local_rank_; }
  std::string describe(int r) const override {
    return "rank " + std::to_string(r) + " (host " + (r >= 0 && r < size_ ? hosts_[static_cast<size_t>(r)] : "?") + ")";
  }

  void send(int peer, std::vector<std::byte> bytes) override {
    check_peer(peer);
    Pending& p = pending_.emplace_back();
    p.length = bytes.size();
    p.bytes = std::move(bytes);
    p.requests.emplace_back();
    check(MPI_Isend(&p.length, 1, MPI_UINT64_T, peer, kDataTag, comm_, &p.requests.back()), "MPI_Isend");
    for (size_t at = 0; at < p.bytes.size(); at += kPart) {
      p.requests.emplace_back();
      const int n = static_cast<int>(std::min(kPart, p.bytes.size() - at));
      check(MPI_Isend(p.bytes.data() + at, n, MPI_BYTE, peer, kDataTag, comm_, &p.requests.back()), "MPI_Isend");
    }
    progress();
  }

  std::vector<std::byte> recv(int peer, Duration timeout) override {
    check_peer(peer);
    const auto deadline = Clock::now() + timeout;
    uint64_t length = 0;
    wait_for_message(peer, deadline, timeout);
    receive(&length, 1, MPI_UINT64_T, peer, deadline, timeout);
    std::vector<std::byte> out(length);
    for (size_t at = 0; at < out.size(); at += kPart) {
      const int n = static_cast<int>(std::min(kPart, out.size() - at));
      const int got = receive(out.data() + at, n, MPI_BYTE, peer, deadline, timeout);
      if (got != n)
        throw PeerError(describe(rank_) + ": a message from " + describe(peer) + " was cut short (" +
                        std::to_string(got) + " of " + std::to_string(n) + " bytes)");
    }
    return out;
  }

  void abort(const std::string& why) override {
    if (aborted_) return;
    aborted_ = true;
    report_ = describe(rank_) + " stopped: " + why;
    std::vector<MPI_Request> reqs;
    for (int r = 0; r < size_; ++r)
      if (r != rank_) {
        reqs.emplace_back();
        MPI_Isend(report_.data(), static_cast<int>(report_.size()), MPI_CHAR, r, kAbortTag, comm_, &reqs.back());
      }
    // Eager for a short text on every MPI we know; a second at most either way.
    poll_until(Clock::now() + std::chrono::seconds(1), [&] {
      int all = 0;
      MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &all, MPI_STATUSES_IGNORE);
      return all != 0;
    });
  }

  void check_failures() override { check_reports(); }

  void flush(Duration timeout) override {
    if (!poll_until(Clock::now() + timeout, [&] {
          check_reports();
          return progress();
        }))
      throw PeerError(describe(rank_) + ": messages to the next rank were not taken within the deadline");
  }

  void barrier(Duration timeout) {
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    int done = 0;
    if (!poll_until(Clock::now() + timeout, [&] {
          check_reports();
          MPI_Test(&req, &done, MPI_STATUS_IGNORE);
          return done != 0;
        }))
      throw PeerError(describe(rank_) + ": not every rank reached the end of the run within the deadline");
  }

 private:
  struct Pending {
    uint64_t length = 0;
    std::vector<std::byte> bytes;
    std::vector<MPI_Request> requests;
  };

  void check_peer(int peer) const {
    if (peer < 0 || peer >= size_ || peer == rank_)
      throw InternalError(describe(rank_) + " addressed rank " + std::to_string(peer) + " of " + std::to_string(size_));
  }

  // Completes what it can of the queued sends; true when none is left.
  bool progress() {
    while (!pending_.empty()) {
      Pending& p = pending_.front();
      int done = 0;
      check(MPI_Testall(static_cast<int>(p.requests.size()), p.requests.data(), &done, MPI_STATUSES_IGNORE),
            "MPI_Testall");
      if (!done) return false;
      pending_.pop_front();
    }
    return true;
  }

  // Receives into `buf` with a non-blocking receive polled until the deadline: a large message
  // needs its sender in MPI to move, so a blocking receive could wait on a sender busy computing,
  // or forever on one that died mid-send. Returns the count received.
  int receive(void* buf, int count, MPI_Datatype type, int peer, Clock::time_point deadline, Duration timeout) {
    MPI_Request req;
    check(MPI_Irecv(buf, count, type, peer, kDataTag, comm_, &req), "MPI_Irecv");
    MPI_Status st;
    int done = 0;
    const bool came = poll_until(deadline, [&] {
      progress();
      check(MPI_Test(&req, &done, &st), "MPI_Test");
      return done != 0;
    });
    if (!came) {
      MPI_Cancel(&req);
      MPI_Request_free(&req);
      check_reports();
      throw PeerError(timeout_message(*this, peer, timeout) + " (it stopped in the middle of a message)");
    }
    int got = 0;
    MPI_Get_count(&st, type, &got);
    return got;
  }

  // Polls for a message from `peer` (and for failure reports from anyone) until the deadline.
  void wait_for_message(int peer, Clock::time_point deadline, Duration timeout) {
    int flag = 0;
    // A message that came wins over a report that came after it (a rank that sent its verdict and
    // then stopped): the report is for the waits that would otherwise go unanswered.
    const bool came = poll_until(deadline, [&] {
      progress();
      check(MPI_Iprobe(peer, kDataTag, comm_, &flag, MPI_STATUS_IGNORE), "MPI_Iprobe");
      if (flag || !report_waiting()) return flag != 0;
      // Both may have come between the two probes: the message first, if it is there now.
      check(MPI_Iprobe(peer, kDataTag, comm_, &flag, MPI_STATUS_IGNORE), "MPI_Iprobe");
      if (!flag) check_reports();
      return flag != 0;
    });
    if (came) return;
    // Before blaming the neighbour, give a rank that saw the failure first a moment to say so.
    poll_until(Clock::now() + std::chrono::seconds(2), [&] {
      check_reports();
      return false;
    });
    throw PeerError(timeout_message(*this, peer, timeout));
  }

  bool report_waiting() {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, kAbortTag, comm_, &flag, MPI_STATUS_IGNORE);
    return flag != 0;
  }

  void check_reports() {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kAbortTag, comm_, &flag, &st);
    if (!flag) return;
    int n = 0;
    MPI_Get_count(&st, MPI_CHAR, &n);
    std::string text(static_cast<size_t>(n), '\0');
    MPI_Recv(text.data(), n, MPI_CHAR, st.MPI_SOURCE, kAbortTag, comm_, MPI_STATUS_IGNORE);
    aborted_ = true;  // it is reported already; this rank need not report it again
    throw PeerError(text);
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  std::vector<std::string> hosts_;
  std::deque<Pending> pending_;
  bool aborted_ = false;
  std::string report_;
};

}  // namespace

std::unique_ptr<Transport> make_mpi_transport() { return std::make_unique<MpiTransport>(); }

int node_local_rank(const Transport& t) {
  const auto* m = dynamic_cast<const MpiTransport*>(&t);
  return m ? m->local_rank() : 0;
}

void finish_mpi(Transport& t, Duration timeout) {
  auto* m = dynamic_cast<MpiTransport*>(&t);
  if (!m) return;
  m->flush(timeout);
  m->barrier(timeout);
  MPI_Finalize();
}

#endif

}  // namespace tiergen::comm
