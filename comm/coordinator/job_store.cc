// The job store on SQLite. Request states are the single source of the counts: a request row moves
// pending -> leased -> done/failed (or cancelled), and it becomes done/failed only in the statement
// pair that inserts its result, so a request has a result exactly when its state is done or failed.
// Error lines rejected at submission are request rows born 'failed' with their result.
#include <sqlite3.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <iterator>
#include <random>
#include <string_view>
#include <type_traits>
#include <utility>

#include "comm/coordinator/job_store.h"
#include "runtime/core/error.h"

namespace tiergen::coord {
namespace {

// 'TGJS' in the database header: tells a tiergen job store from any other SQLite file before we
// write anything to it (even switching it to WAL would change someone else's database).
constexpr int64_t kApplicationId = 0x54474A53;
constexpr int64_t kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY,
  name TEXT UNIQUE,  -- NULL when the client gave none, so nameless jobs never collide
  model TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('uploading', 'queued', 'running', 'completed', 'cancelled')),
  created_ms INTEGER NOT NULL,
  first_result_ms INTEGER NOT NULL DEFAULT 0,
  last_result_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs(model, state, created_ms, id);
CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs(created_ms, id);
CREATE TABLE IF NOT EXISTS workers(
  id TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  description TEXT NOT NULL,
  registered_ms INTEGER NOT NULL,
  last_heartbeat_ms INTEGER NOT NULL,
  ready INTEGER NOT NULL,
  alive INTEGER NOT NULL);
-- AUTOINCREMENT: a block id is never reused, so a stale report can never land on a newer block.
CREATE TABLE IF NOT EXISTS blocks(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  worker_id TEXT NOT NULL REFERENCES workers(id),
  leased_ms INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('leased', 'done', 'expired')));
CREATE INDEX IF NOT EXISTS blocks_by_job ON blocks(job_id);
CREATE INDEX IF NOT EXISTS blocks_by_worker ON blocks(worker_id, state);
CREATE TABLE IF NOT EXISTS requests(
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  custom_id TEXT NOT NULL,
  body TEXT NOT NULL,  -- '' for error lines: their text is the result's line
  prompt_bytes INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'failed', 'cancelled')),
  block_id INTEGER REFERENCES blocks(id) ON DELETE SET NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, idx));
CREATE INDEX IF NOT EXISTS requests_by_size ON requests(job_id, state, prompt_bytes, idx);
CREATE INDEX IF NOT EXISTS requests_by_custom_id ON requests(job_id, custom_id);
CREATE INDEX IF NOT EXISTS requests_by_block ON requests(block_id);
CREATE TABLE IF NOT EXISTS attempts(
  job_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  block_id INTEGER NOT NULL REFERENCES blocks(id) ON DELETE CASCADE,
  worker_id TEXT NOT NULL,
  started_ms INTEGER NOT NULL,
  FOREIGN KEY (job_id, idx) REFERENCES requests(job_id, idx) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS attempts_by_request ON attempts(job_id, idx);
CREATE INDEX IF NOT EXISTS attempts_by_block ON attempts(block_id);
CREATE TABLE IF NOT EXISTS results(
  job_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  custom_id TEXT NOT NULL,
  error INTEGER NOT NULL,
  line TEXT NOT NULL,
  prompt_tokens INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  committed_ms INTEGER,  -- NULL, with block_id and worker_id, for lines rejected at submission
  block_id INTEGER,
  worker_id TEXT,
  PRIMARY KEY (job_id, idx),
  FOREIGN KEY (job_id, idx) REFERENCES requests(job_id, idx) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS results_by_kind ON results(job_id, error, idx);
)sql";

struct Conn {
  sqlite3* db;
  const std::string& path;
};

[[noreturn]] void fail(Conn c, int rc) {
  const std::string msg = "job store '" + c.path + "': " + (c.db ? sqlite3_errmsg(c.db) : sqlite3_errstr(rc));
  const int primary = rc & 0xff;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) throw FormatError(msg);
  throw IoError(msg);
}

void check(Conn c, int rc) {
  if (rc != SQLITE_OK) fail(c, rc);
}

void exec(Conn c, const char* sql) { check(c, sqlite3_exec(c.db, sql, nullptr, nullptr, nullptr)); }

// One prepared statement, finalized on every way out. bind() resets it first, so one Stmt serves a
// loop of executions.
class Stmt {
 public:
  Stmt(Conn c, std::string_view sql) : c_(c) {
    check(c_, sqlite3_prepare_v2(c_.db, sql.data(), static_cast<int>(sql.size()), &s_, nullptr));
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  template <class... A>
  Stmt& bind(const A&... args) {
    sqlite3_reset(s_);  // its code repeats the last step's, which step() already reported
    check(c_, sqlite3_clear_bindings(s_));
    int i = 0;
    (bind_one(++i, args), ...);
    return *this;
  }
  bool step() {
    const int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) fail(c_, rc);
    return false;
  }
  // Runs it to the end; the rows it inserted, updated or deleted.
  int64_t run() {
    while (step()) {
    }
    return sqlite3_changes64(c_.db);
  }
  int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }

 private:
  void bind_one(int i, int64_t v) { check(c_, sqlite3_bind_int64(s_, i, v)); }
  void bind_one(int i, std::string_view v) {
    // A null data pointer would bind SQL NULL, not ''.
    check(c_, sqlite3_bind_text64(s_, i, v.data() ? v.data() : "", v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  void bind_one(int i, std::nullptr_t) { check(c_, sqlite3_bind_null(s_, i)); }

  Conn c_;
  sqlite3_stmt* s_ = nullptr;
};

int64_t query_i64(Conn c, const char* sql) {
  Stmt s(c, sql);
  return s.step() ? s.i64(0) : 0;
}

// Runs f() as one transaction: committed when it returns, rolled back when it throws. Readers take
// a deferred transaction: in WAL they see one snapshot without holding the write lock.
template <class F>
auto in_tx(Conn c, bool write, F&& f) -> decltype(f()) {
  exec(c, write ? "BEGIN IMMEDIATE" : "BEGIN");
  try {
    if constexpr (std::is_void_v<decltype(f())>) {
      f();
      exec(c, "COMMIT");
    } else {
      auto r = f();
      exec(c, "COMMIT");
      return r;
    }
  } catch (...) {
    if (!sqlite3_get_autocommit(c.db)) sqlite3_exec(c.db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::string random_id(const char* prefix) {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) | rd();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016" PRIx64, v);
  return prefix + std::string(hex);
}

JobState parse_state(Conn c, const std::string& s, const std::string& job_id) {
  for (JobState st :
       {JobState::Uploading, JobState::Queued, JobState::Running, JobState::Completed, JobState::Cancelled})
    if (s == job_state_name(st)) return st;
  throw FormatError("job store '" + c.path + "': job '" + job_id + "' has unknown state '" + s + "'");
}

constexpr std::pair<const char*, int64_t JobCounts::*> kCountOfState[] = {{"pending", &JobCounts::pending},
                                                                          {"leased", &JobCounts::leased},
                                                                          {"done", &JobCounts::succeeded},
                                                                          {"failed", &JobCounts::failed},
                                                                          {"cancelled", &JobCounts::cancelled}};

JobCounts job_counts(Conn c, const std::string& job_id) {
  JobCounts n;
  Stmt s(c, "SELECT state, COUNT(*) FROM requests WHERE job_id = ? GROUP BY state");
  s.bind(job_id);
  while (s.step()) {
    const std::string st = s.text(0);
    const int64_t k = s.i64(1);
    n.total += k;
    int64_t JobCounts::*slot = nullptr;
    for (const auto& [name, field] : kCountOfState)
      if (st == name) slot = field;
    if (!slot)
      throw FormatError("job store '" + c.path + "': job '" + job_id + "' has a request in state '" + st + "'");
    n.*slot = k;
  }
  Stmt t(c,
         "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM results "
         "WHERE job_id = ? AND error = 0");
  if (t.bind(job_id).step()) {
    n.prompt_tokens = t.i64(0);
    n.completion_tokens = t.i64(1);
  }
  return n;
}

constexpr std::string_view kJobColumns =
    "SELECT id, COALESCE(name, ''), model, state, created_ms, first_result_ms, last_result_ms, finished_ms, "
    "(SELECT COALESCE(MIN(leased_ms), 0) FROM blocks WHERE blocks.job_id = jobs.id) "
    "FROM jobs ";

JobInfo read_job(Conn c, const Stmt& s) {
  JobInfo j;
  j.id = s.text(0);
  j.name = s.text(1);
  j.model = s.text(2);
  j.state = parse_state(c, s.text(3), j.id);
  j.created_ms = s.i64(4);
  j.first_result_ms = s.i64(5);
  j.last_result_ms = s.i64(6);
  j.finished_ms = s.i64(7);
  j.first_lease_ms = s.i64(8);
  j.counts = job_counts(c, j.id);
  return j;
}

std::optional<JobInfo> job_where(Conn c, const char* where, const std::string& key) {
  Stmt s(c, std::string(kJobColumns) + where);
  if (!s.bind(key).step()) return std::nullopt;
  return read_job(c, s);
}

// The job's state; NotFoundError when there is no such job.
JobState require_job(Conn c, const std::string& job_id) {
  Stmt s(c, "SELECT state FROM jobs WHERE id = ?");
  if (!s.bind(job_id).step()) throw NotFoundError("unknown job '" + job_id + "'");
  return parse_state(c, s.text(0), job_id);
}

void require_uploading(Conn c, const std::string& job_id, const char* what) {
  const JobState st = require_job(c, job_id);
  if (st != JobState::Uploading)
    throw FailedPreconditionError(std::string("cannot ") + what + " job '" + job_id + "': it is " + job_state_name(st) +
                                  ", not uploading");
}

}  // namespace

const char* job_state_name(JobState s) {
  static constexpr const char* kNames[] = {"uploading", "queued", "running", "completed", "cancelled"};
  const auto i = static_cast<size_t>(s);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

JobStore::JobStore(const std::string& path) : path_(path) {
  const int rc =
      sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  try {
    const Conn c{db_, path_};
    check(c, rc);
    check(c, sqlite3_extended_result_codes(db_, 1));
    check(c, sqlite3_busy_timeout(db_, 5000));
    // Reading the header is where a file that is not SQLite at all fails (SQLITE_NOTADB).
    const int64_t app_id = query_i64(c, "PRAGMA application_id");
    const int64_t version = query_i64(c, "PRAGMA user_version");
    const int64_t objects = query_i64(c, "SELECT COUNT(*) FROM sqlite_master");
    const bool fresh = app_id == 0 && objects == 0;
    if (!fresh && app_id != kApplicationId)
      throw IoError("job store '" + path_ + "' is not a tiergen job store (another SQLite database)");
    if (!fresh && version != kSchemaVersion)
      throw IoError("job store '" + path_ + "' has schema version " + std::to_string(version) +
                    "; this build reads version " + std::to_string(kSchemaVersion));
    {
      Stmt wal(c, "PRAGMA journal_mode=WAL");
      if (!wal.step() || wal.text(0) != "wal")
        throw IoError("job store '" + path_ + "': cannot switch it to WAL mode (journal_mode is '" + wal.text(0) +
                      "')");
    }
    exec(c, "PRAGMA synchronous=FULL");
    exec(c, "PRAGMA foreign_keys=ON");
    in_tx(c, true, [&] {
      if (fresh) {
        exec(c, kSchema);
        // Pragma arguments cannot be bound; these are our own constants.
        exec(c, ("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str());
        exec(c, ("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str());
      }
      // Not in kSchema, so that stores made before it get it too.
      exec(c, "CREATE INDEX IF NOT EXISTS results_by_worker ON results(worker_id)");
      // Their clients were never told these jobs exist; the cascade removes their lines.
      Stmt(c, "DELETE FROM jobs WHERE state = 'uploading'").run();
    });
    const int read_rc = sqlite3_open_v2(path.c_str(), &reader_, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr);
    const Conn r{reader_, path_};
    check(r, read_rc);
    check(r, sqlite3_extended_result_codes(reader_, 1));
    check(r, sqlite3_busy_timeout(reader_, 5000));
  } catch (...) {
    sqlite3_close_v2(reader_);
    sqlite3_close_v2(db_);
    reader_ = db_ = nullptr;
    throw;
  }
}

JobStore::~JobStore() {
  sqlite3_close_v2(reader_);
  sqlite3_close_v2(db_);
}

std::string JobStore::create_job(const std::string& name, const std::string& model, int64_t now_ms) {
  if (model.empty()) throw InvalidArgumentError("create_job: the model must not be empty");
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    if (!name.empty()) {
      Stmt s(c, "SELECT id FROM jobs WHERE name = ?");
      if (s.bind(name).step()) throw AlreadyExistsError("a job named '" + name + "' exists: " + s.text(0));
    }
    Stmt taken(c, "SELECT 1 FROM jobs WHERE id = ?");
    std::string id = random_id("job-");
    while (taken.bind(id).step()) id = random_id("job-");
    Stmt ins(c, "INSERT INTO jobs(id, name, model, state, created_ms) VALUES (?, NULLIF(?, ''), ?, 'uploading', ?)");
    ins.bind(id, name, model, now_ms).run();
    return id;
  });
}

int64_t JobStore::add_lines(const std::string& job_id, std::span<const NewLine> lines,
                            const std::function<std::string(int64_t index, const std::string& custom_id,
                                                            int64_t first_index)>& duplicate_error) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    require_uploading(c, job_id, "add lines to");
    Stmt used(c, "SELECT 1 FROM requests WHERE job_id = ? AND idx = ?");
    // The earliest line with that id; in-order uploads make it the one that kept its id.
    Stmt first(c, "SELECT MIN(idx) FROM requests WHERE job_id = ? AND custom_id = ?");
    Stmt req(c, "INSERT INTO requests(job_id, idx, custom_id, body, prompt_bytes, state) VALUES (?, ?, ?, ?, ?, ?)");
    Stmt err(c, "INSERT INTO results(job_id, idx, custom_id, error, line) VALUES (?, ?, ?, 1, ?)");
    int64_t errors = 0;
    for (const NewLine& l : lines) {
      if (l.index < 0)
        throw InvalidArgumentError("job '" + job_id + "': negative line index " + std::to_string(l.index));
      if (used.bind(job_id, l.index).step())
        throw InvalidArgumentError("job '" + job_id + "': line index " + std::to_string(l.index) + " is already used");
      if (!l.error && l.custom_id.empty())
        throw InvalidArgumentError("job '" + job_id + "': line " + std::to_string(l.index) +
                                   " is a request without a custom_id");
      bool error = l.error;
      std::string body = l.body;
      if (!error && first.bind(job_id, l.custom_id).step() && !first.is_null(0)) {
        error = true;
        body = duplicate_error(l.index, l.custom_id, first.i64(0));
      }
      if (error) {
        req.bind(job_id, l.index, l.custom_id, "", int64_t{0}, "failed").run();
        err.bind(job_id, l.index, l.custom_id, body).run();
        ++errors;
      } else {
        req.bind(job_id, l.index, l.custom_id, body, l.prompt_bytes, "pending").run();
      }
    }
    return errors;
  });
}

void JobStore::seal_job(const std::string& job_id, int64_t now_ms) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  in_tx(c, true, [&] {
    require_uploading(c, job_id, "seal");
    Stmt s(c,
           "UPDATE jobs SET state = CASE WHEN EXISTS (SELECT 1 FROM requests WHERE job_id = ?1 AND state = 'pending') "
           "THEN 'queued' ELSE 'completed' END, finished_ms = CASE WHEN EXISTS (SELECT 1 FROM requests WHERE "
           "job_id = ?1 AND state = 'pending') THEN 0 ELSE ?2 END WHERE id = ?1");
    s.bind(job_id, now_ms).run();
  });
}

void JobStore::drop_job(const std::string& job_id) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  in_tx(c, true, [&] {
    require_uploading(c, job_id, "drop");
    Stmt(c, "DELETE FROM jobs WHERE id = ?").bind(job_id).run();
  });
}

std::optional<JobInfo> JobStore::job(const std::string& job_id) const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&] { return job_where(c, "WHERE id = ?", job_id); });
}

std::optional<JobInfo> JobStore::job_by_name(const std::string& name) const {
  if (name.empty()) return std::nullopt;
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&] { return job_where(c, "WHERE name = ?", name); });
}

std::vector<JobInfo> JobStore::jobs(int64_t limit) const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&] {
    std::vector<JobInfo> out;
    Stmt s(c, std::string(kJobColumns) + "WHERE state != 'uploading' ORDER BY created_ms DESC, id DESC LIMIT ?");
    s.bind(std::max<int64_t>(limit, 0));
    while (s.step()) out.push_back(read_job(c, s));
    return out;
  });
}

bool JobStore::cancel(const std::string& job_id, int64_t now_ms) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    const JobState st = require_job(c, job_id);
    if (st == JobState::Uploading)
      throw FailedPreconditionError("cannot cancel job '" + job_id + "': it is still uploading");
    if (st == JobState::Completed || st == JobState::Cancelled) return false;
    // Leased requests keep their block_id: the worker may still report them, and that result is kept.
    Stmt(c, "UPDATE requests SET state = 'cancelled' WHERE job_id = ? AND state IN ('pending', 'leased')")
        .bind(job_id)
        .run();
    Stmt(c, "UPDATE jobs SET state = 'cancelled', finished_ms = ? WHERE id = ?").bind(now_ms, job_id).run();
    return true;
  });
}

std::vector<ResultRow> JobStore::results(const std::string& job_id, bool errors, int64_t after_index,
                                         int64_t limit) const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&] {
    require_job(c, job_id);
    std::vector<ResultRow> out;
    Stmt s(c,
           "SELECT idx, custom_id, error, line FROM results WHERE job_id = ? AND error = ? AND idx > ? "
           "ORDER BY idx LIMIT ?");
    s.bind(job_id, int64_t{errors}, after_index, std::max<int64_t>(limit, 0));
    while (s.step()) out.push_back({s.i64(0), s.text(1), s.i64(2) != 0, s.text(3)});
    return out;
  });
}

std::string JobStore::register_worker(const std::string& model, const std::string& description, int64_t now_ms) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    Stmt taken(c, "SELECT 1 FROM workers WHERE id = ?");
    std::string id = random_id("worker-");
    while (taken.bind(id).step()) id = random_id("worker-");
    Stmt(c,
         "INSERT INTO workers(id, model, description, registered_ms, last_heartbeat_ms, ready, alive) "
         "VALUES (?, ?, ?, ?, ?, 0, 1)")
        .bind(id, model, description, now_ms, now_ms)
        .run();
    return id;
  });
}

bool JobStore::heartbeat(const std::string& worker_id, bool ready, int64_t now_ms) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    Stmt s(c, "UPDATE workers SET last_heartbeat_ms = ?, ready = ? WHERE id = ? AND alive = 1");
    return s.bind(now_ms, int64_t{ready}, worker_id).run() == 1;
  });
}

namespace {

// Alive workers that match `where`; with `counts`, what each has done (which counts rows: a listing
// for people, not for every PullBlock).
std::vector<WorkerInfo> workers_where(Conn c, const char* where, const std::string& key, bool counts) {
  std::vector<WorkerInfo> out;
  const char* done = counts ? "(SELECT COUNT(*) FROM blocks b WHERE b.worker_id = w.id AND b.state = 'done'), "
                              "(SELECT COUNT(*) FROM results r WHERE r.worker_id = w.id) "
                            : "0, 0 ";
  Stmt s(c, std::string("SELECT id, model, description, registered_ms, last_heartbeat_ms, ready, ") + done +
                "FROM workers w WHERE alive = 1 " + where + " ORDER BY registered_ms, id");
  if (*where) s.bind(key);
  while (s.step())
    out.push_back({s.text(0), s.text(1), s.text(2), s.i64(3), s.i64(4), s.i64(5) != 0, true, s.i64(6), s.i64(7)});
  return out;
}

}  // namespace

std::vector<WorkerInfo> JobStore::workers() const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&] { return workers_where(c, "", "", true); });
}

std::optional<WorkerInfo> JobStore::worker(const std::string& worker_id) const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&]() -> std::optional<WorkerInfo> {
    auto found = workers_where(c, "AND id = ?", worker_id, false);
    if (found.empty()) return std::nullopt;
    return std::move(found.front());
  });
}

bool JobStore::any_ready_worker() const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&] {
    return query_i64(c, "SELECT EXISTS (SELECT 1 FROM workers WHERE alive = 1 AND ready = 1)") != 0;
  });
}

std::optional<LeasedBlock> JobStore::lease_block(const std::string& worker_id, const std::string& model,
                                                 int64_t max_requests, int64_t now_ms) {
  if (max_requests <= 0)
    throw InvalidArgumentError("lease_block: max_requests must be positive, got " + std::to_string(max_requests));
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&]() -> std::optional<LeasedBlock> {
    Stmt w(c, "SELECT model FROM workers WHERE id = ? AND alive = 1");
    if (!w.bind(worker_id).step()) throw NotFoundError("unknown or dead worker '" + worker_id + "'");
    if (w.text(0) != model)
      throw FailedPreconditionError("worker '" + worker_id + "' serves model '" + w.text(0) + "', not '" + model + "'");
    Stmt j(c,
           "SELECT id FROM jobs WHERE model = ? AND state IN ('queued', 'running') AND EXISTS "
           "(SELECT 1 FROM requests r WHERE r.job_id = jobs.id AND r.state = 'pending') "
           "ORDER BY created_ms, id LIMIT 1");
    if (!j.bind(model).step()) return std::nullopt;
    LeasedBlock b;
    b.job_id = j.text(0);
    b.model = model;
    Stmt(c, "INSERT INTO blocks(job_id, worker_id, leased_ms, state) VALUES (?, ?, ?, 'leased')")
        .bind(b.job_id, worker_id, now_ms)
        .run();
    b.block_id = sqlite3_last_insert_rowid(db_);
    Stmt pick(c,
              "SELECT idx, custom_id, body, attempts FROM requests WHERE job_id = ? AND state = 'pending' "
              "ORDER BY prompt_bytes, idx LIMIT ?");
    pick.bind(b.job_id, max_requests);
    while (pick.step()) b.requests.push_back({pick.i64(0), pick.text(1), pick.text(2), pick.i64(3)});
    Stmt take(
        c, "UPDATE requests SET state = 'leased', block_id = ?, attempts = attempts + 1 WHERE job_id = ? AND idx = ?");
    Stmt attempt(c, "INSERT INTO attempts(job_id, idx, block_id, worker_id, started_ms) VALUES (?, ?, ?, ?, ?)");
    for (const StoredRequest& r : b.requests) {
      take.bind(b.block_id, b.job_id, r.index).run();
      attempt.bind(b.job_id, r.index, b.block_id, worker_id, now_ms).run();
    }
    Stmt(c, "UPDATE jobs SET state = 'running' WHERE id = ?").bind(b.job_id).run();
    return b;
  });
}

int64_t JobStore::commit_results(const std::string& worker_id, int64_t block_id,
                                 std::span<const ReportedResult> results, int64_t now_ms) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    Stmt b(c, "SELECT job_id FROM blocks WHERE id = ?");
    if (!b.bind(block_id).step()) throw NotFoundError("unknown block " + std::to_string(block_id));
    const std::string job_id = b.text(0);
    Stmt has(c, "SELECT 1 FROM requests WHERE job_id = ? AND idx = ?");
    for (const ReportedResult& r : results)
      if (!has.bind(job_id, r.index).step())
        throw InvalidArgumentError("block " + std::to_string(block_id) + " of job '" + job_id + "' (worker '" +
                                   worker_id + "'): the job has no request " + std::to_string(r.index));
    // OR IGNORE: the first result of a request wins, so a repeated or late report adds nothing.
    Stmt ins(c,
             "INSERT OR IGNORE INTO results(job_id, idx, custom_id, error, line, prompt_tokens, completion_tokens, "
             "committed_ms, block_id, worker_id) SELECT job_id, idx, custom_id, ?, ?, ?, ?, ?, ?, ? FROM requests "
             "WHERE job_id = ? AND idx = ?");
    Stmt finish(c, "UPDATE requests SET state = ? WHERE job_id = ? AND idx = ?");
    int64_t added = 0;
    for (const ReportedResult& r : results) {
      if (ins.bind(int64_t{r.error}, r.line, r.prompt_tokens, r.completion_tokens, now_ms, block_id, worker_id, job_id,
                   r.index)
              .run() != 1)
        continue;
      ++added;
      finish.bind(r.error ? "failed" : "done", job_id, r.index).run();
    }
    // What the block held but the report left out runs again elsewhere, rather than stay leased to
    // a block that is over.
    Stmt(c, "UPDATE requests SET state = 'pending', block_id = NULL WHERE block_id = ? AND state = 'leased'")
        .bind(block_id)
        .run();
    Stmt(c, "UPDATE blocks SET state = 'done' WHERE id = ?").bind(block_id).run();
    if (added > 0)
      Stmt(c,
           "UPDATE jobs SET first_result_ms = CASE WHEN first_result_ms = 0 THEN ?1 ELSE first_result_ms END, "
           "last_result_ms = ?1 WHERE id = ?2")
          .bind(now_ms, job_id)
          .run();
    Stmt(c,
         "UPDATE jobs SET state = 'completed', finished_ms = ?1 WHERE id = ?2 AND state IN ('queued', 'running') "
         "AND NOT EXISTS (SELECT 1 FROM requests WHERE job_id = ?2 AND state IN ('pending', 'leased'))")
        .bind(now_ms, job_id)
        .run();
    return added;
  });
}

std::optional<LeasedBlock> JobStore::block(int64_t block_id) const {
  std::lock_guard lock(read_mu_);
  const Conn c{reader_, path_};
  return in_tx(c, false, [&]() -> std::optional<LeasedBlock> {
    Stmt b(c, "SELECT b.job_id, j.model FROM blocks b JOIN jobs j ON j.id = b.job_id WHERE b.id = ?");
    if (!b.bind(block_id).step()) return std::nullopt;
    LeasedBlock out;
    out.block_id = block_id;
    out.job_id = b.text(0);
    out.model = b.text(1);
    // The block's requests are those it was an attempt for, whatever became of them since.
    Stmt q(c,
           "SELECT r.idx, r.custom_id, r.body, r.attempts FROM attempts a JOIN requests r ON r.job_id = a.job_id AND "
           "r.idx = a.idx WHERE a.block_id = ? ORDER BY r.prompt_bytes, r.idx");
    q.bind(block_id);
    while (q.step()) out.requests.push_back({q.i64(0), q.text(1), q.text(2), q.i64(3)});
    return out;
  });
}

int64_t JobStore::expire_workers(int64_t now_ms, int64_t lease_ms) {
  std::lock_guard lock(mu_);
  const Conn c{db_, path_};
  return in_tx(c, true, [&] {
    const int64_t deadline = now_ms - lease_ms;
    // Requests first, blocks next, workers last: each step finds its rows through the one before.
    const int64_t released =
        Stmt(c,
             "UPDATE requests SET state = 'pending', block_id = NULL WHERE state = 'leased' AND block_id IN "
             "(SELECT b.id FROM blocks b JOIN workers w ON w.id = b.worker_id "
             "WHERE b.state = 'leased' AND w.alive = 1 AND w.last_heartbeat_ms < ?)")
            .bind(deadline)
            .run();
    Stmt(c,
         "UPDATE blocks SET state = 'expired' WHERE state = 'leased' AND worker_id IN "
         "(SELECT id FROM workers WHERE alive = 1 AND last_heartbeat_ms < ?)")
        .bind(deadline)
        .run();
    Stmt(c, "UPDATE workers SET alive = 0 WHERE alive = 1 AND last_heartbeat_ms < ?").bind(deadline).run();
    return released;
  });
}

}  // namespace tiergen::coord
