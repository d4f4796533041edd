// The coordinator's durable state (docs/coordinator.md): jobs, their requests, the blocks of
// requests leased to worker pipelines, each request's attempts, and the results, in one SQLite
// database in WAL mode with synchronous=FULL, so that a coordinator killed at any instant (SIGKILL,
// power loss) restarts with every acknowledged submission and every committed result.
//
// Every method is one transaction: it happens whole or not at all. Results are committed
// idempotently: a request has at most one result, the first reported; a block reported twice, or
// a block reported after its lease expired and it was handed out again, changes nothing the second
// time. So duplicates never reach the output.
//
// Times are milliseconds since the Unix epoch, passed in by the caller (the tests drive the clock).
// Thread-safe: calls are serialised on one connection.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

struct sqlite3;

namespace tiergen::coord {

enum class JobState {
  Uploading,  // its lines are still arriving (a SubmitJob stream): never leased, dropped on reopen
  Queued,     // sealed, nothing leased yet
  Running,    // some request leased or finished
  Completed,  // every request has its result (an output or an error)
  Cancelled,  // cancelled: nothing more is leased; results already committed are kept
};
const char* job_state_name(JobState s);  // "uploading", "queued", "running", "completed", "cancelled"

struct JobCounts {
  int64_t total = 0;      // lines submitted (valid or not)
  int64_t pending = 0;    // requests waiting for a worker
  int64_t leased = 0;     // requests in a block a worker holds
  int64_t succeeded = 0;  // requests with an output line
  int64_t failed = 0;     // lines with an error line (rejected at submission, or failed on a worker)
  int64_t cancelled = 0;  // requests never run because the job was cancelled
  int64_t prompt_tokens = 0, completion_tokens = 0;  // over the succeeded requests
};

struct JobInfo {
  std::string id;
  std::string name;   // the client's name for it ("" when none): unique among jobs
  std::string model;  // the model the job's requests are for
  JobState state = JobState::Queued;
  int64_t created_ms = 0;
  int64_t first_lease_ms = 0;   // when its first block went to a worker (0: none yet)
  int64_t first_result_ms = 0;  // 0 until the first result
  int64_t last_result_ms = 0;
  int64_t finished_ms = 0;  // 0 until completed or cancelled
  JobCounts counts;
};

// One input line of a job, as the submission checked it: either a request for a worker, or an
// error result (a malformed line) recorded at once.
struct NewLine {
  int64_t index = 0;      // the line's place in the job's input, from 0; unique within the job
  std::string custom_id;  // may be "" only for an error line (a line whose custom_id is unreadable)
  bool error = false;
  std::string body;          // request: what the worker needs (JSON text); error: the error line (JSON text)
  int64_t prompt_bytes = 0;  // request: its prompt's size, for grouping requests of like length
};

struct StoredRequest {
  int64_t index = 0;
  std::string custom_id;
  std::string body;
  int64_t attempts = 0;  // how many blocks held it before this one
};

struct LeasedBlock {
  int64_t block_id = 0;
  std::string job_id;
  std::string model;
  std::vector<StoredRequest> requests;  // in ascending prompt_bytes
};

// What a worker reports for one request of its block.
struct ReportedResult {
  int64_t index = 0;
  bool error = false;
  std::string line;  // the output (or error) line, JSON text, as FetchResults returns it
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

struct ResultRow {
  int64_t index = 0;
  std::string custom_id;
  bool error = false;
  std::string line;
};

struct WorkerInfo {
  std::string id;
  std::string model;
  std::string description;  // JSON text: its ranks, budgets, layer assignment (for `tiergen workers`)
  int64_t registered_ms = 0, last_heartbeat_ms = 0;
  bool ready = false;  // it reported its stages loaded
  bool alive = true;   // false once its heartbeats stopped for a lease (its blocks handed out again)
  int64_t blocks_done = 0, requests_done = 0;  // blocks it reported; results of its that were recorded
};

class JobStore {
 public:
  // Opens (or creates, with its schema) the database at `path`. Jobs still Uploading are removed
  // with their lines: their SubmitJob stream ended with the coordinator, so the client was never
  // told the job exists. IoError naming the file when it cannot be opened or is not a tiergen job
  // store (a different schema); FormatError when SQLite reports it corrupt.
  explicit JobStore(const std::string& path);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // A new job in state Uploading; its id is fresh ("job-" + 16 hex digits, random). AlreadyExistsError
  // when `name` is not empty and another job has it.
  std::string create_job(const std::string& name, const std::string& model, int64_t now_ms);
  // Adds lines to an Uploading job. A request whose custom_id an earlier line of the job used
  // becomes an error line instead: its body is replaced by `duplicate_error(index, custom_id,
  // first_index)` (the caller formats it). Returns how many of `lines` were stored as errors.
  // NotFoundError for an unknown job; FailedPreconditionError when the job is not Uploading;
  // InvalidArgumentError for an index already used in the job.
  int64_t add_lines(const std::string& job_id, std::span<const NewLine> lines,
                    const std::function<std::string(int64_t index, const std::string& custom_id, int64_t first_index)>&
                        duplicate_error);
  // Uploading -> Queued (Completed when it holds no request, only errors, or nothing).
  void seal_job(const std::string& job_id, int64_t now_ms);
  // Removes a job that is still Uploading (its stream failed): the client never had its id.
  void drop_job(const std::string& job_id);

  std::optional<JobInfo> job(const std::string& job_id) const;
  std::optional<JobInfo> job_by_name(const std::string& name) const;
  // Every job but Uploading ones, newest first, at most `limit`.
  std::vector<JobInfo> jobs(int64_t limit) const;
  // Queued/Running -> Cancelled: pending requests are marked cancelled, leased ones too (their
  // results, if reported later, are still kept). Returns false when the job was already finished.
  // NotFoundError for an unknown job.
  bool cancel(const std::string& job_id, int64_t now_ms);

  // Results of a job in index order, starting after `after_index` (-1: from the first), at most
  // `limit`; errors or outputs only. NotFoundError for an unknown job.
  std::vector<ResultRow> results(const std::string& job_id, bool errors, int64_t after_index, int64_t limit) const;

  // A worker pipeline: a fresh id ("worker-" + 16 hex digits).
  std::string register_worker(const std::string& model, const std::string& description, int64_t now_ms);
  // Its heartbeat (and, with `ready`, that its stages are loaded). False when the id is unknown or
  // the worker was declared dead (its blocks went to others): it must register again.
  bool heartbeat(const std::string& worker_id, bool ready, int64_t now_ms);
  std::vector<WorkerInfo> workers() const;  // alive ones
  // An alive one, without its counts (blocks_done and requests_done are 0).
  std::optional<WorkerInfo> worker(const std::string& worker_id) const;
  bool any_ready_worker() const;

  // Leases the next block for a worker of `model`: the oldest Queued or Running job for that model
  // with pending requests, and of its pending requests up to `max_requests`, chosen by ascending
  // prompt_bytes (so a block's prompts are of like length and need little padding). The requests
  // become leased, an attempt is recorded for each, the job becomes Running. Nothing when no job
  // has pending requests for the model. NotFoundError for an unknown or dead worker.
  std::optional<LeasedBlock> lease_block(const std::string& worker_id, const std::string& model, int64_t max_requests,
                                         int64_t now_ms);
  // Commits a block's results in one transaction: each request's result is inserted when it has
  // none yet (requests of other jobs or not in the job are InvalidArgumentError, nothing
  // committed); the block is done; a job whose requests all have results (or are cancelled) is
  // Completed. Returns how many results were new. A late report from a worker declared dead is
  // accepted the same way: results are deterministic, and the first one wins.
  // NotFoundError for an unknown block.
  int64_t commit_results(const std::string& worker_id, int64_t block_id, std::span<const ReportedResult> results,
                         int64_t now_ms);
  // A block and the requests it holds (whatever their state now); nothing for an unknown block.
  std::optional<LeasedBlock> block(int64_t block_id) const;
  // Declares dead every alive worker whose last heartbeat is older than now_ms - lease_ms, and
  // hands their blocks' unfinished requests back (pending again). Returns the requests released.
  int64_t expire_workers(int64_t now_ms, int64_t lease_ms);

 private:
  // Writes go through db_ one at a time, each committed with an fsync; reads go through reader_,
  // which in WAL mode sees the last commit without waiting for a write in progress (a client's
  // GetJob is not queued behind a worker's commit).
  mutable std::mutex mu_;
  sqlite3* db_ = nullptr;
  mutable std::mutex read_mu_;
  sqlite3* reader_ = nullptr;
  std::string path_;
};

}  // namespace tiergen::coord
