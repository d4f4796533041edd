// JobStore: submissions, leases grouped by prompt length, idempotent commits, worker expiry,
// cancellation, durability across a reopen of the same file, and refusing files that are not ours.
#include <gtest/gtest.h>

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "comm/coordinator/job_store.h"
#include "runtime/core/error.h"
#include "tests/testutil/testutil.h"

namespace tiergen::coord {
namespace {

using testing::TempDir;

constexpr const char* kModel = "llama-tiny";

NewLine request(int64_t index, const std::string& custom_id, int64_t prompt_bytes) {
  return {index, custom_id, false, "{\"req\":" + std::to_string(index) + "}", prompt_bytes};
}
NewLine error_line(int64_t index, const std::string& custom_id) {
  return {index, custom_id, true, "{\"error\":" + std::to_string(index) + "}", 0};
}

std::string dup_error(int64_t index, const std::string& custom_id, int64_t first_index) {
  return "dup " + std::to_string(index) + " " + custom_id + " of " + std::to_string(first_index);
}

// A sealed job of `n` requests, custom ids "r<i>", prompt_bytes `bytes(i)`.
std::string submit(JobStore& store, int64_t n, int64_t now_ms, const std::function<int64_t(int64_t)>& bytes,
                   const std::string& name = "") {
  const std::string id = store.create_job(name, kModel, now_ms);
  std::vector<NewLine> lines;
  for (int64_t i = 0; i < n; ++i) lines.push_back(request(i, "r" + std::to_string(i), bytes(i)));
  EXPECT_EQ(store.add_lines(id, lines, dup_error), 0);
  store.seal_job(id, now_ms);
  return id;
}

std::vector<ReportedResult> outputs_for(const LeasedBlock& b, const std::string& tag = "out") {
  std::vector<ReportedResult> out;
  for (const StoredRequest& r : b.requests)
    out.push_back({r.index, false, tag + std::to_string(r.index), 10 + r.index, 1});
  return out;
}

void expect_counts_add_up(const JobCounts& n) {
  EXPECT_EQ(n.total, n.pending + n.leased + n.succeeded + n.failed + n.cancelled);
}

TEST(JobStoreTest, SubmitWithErrorLinesAndDuplicatesCountsAddUp) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = store.create_job("batch-1", kModel, 1000);
  EXPECT_EQ(id.rfind("job-", 0), 0u);
  EXPECT_EQ(id.size(), 4u + 16u);
  EXPECT_EQ(store.job(id)->state, JobState::Uploading);

  const std::vector<NewLine> first = {request(0, "a", 5), error_line(1, ""), request(2, "b", 7)};
  EXPECT_EQ(store.add_lines(id, first, dup_error), 1);
  // Line 3 reuses "a" (first used by line 0); line 4 reuses "b" (line 2); line 5 is fresh.
  const std::vector<NewLine> second = {request(3, "a", 1), request(4, "b", 1), request(5, "c", 3), error_line(6, "d")};
  EXPECT_EQ(store.add_lines(id, second, dup_error), 3);
  store.seal_job(id, 2000);

  const JobInfo j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Queued);
  EXPECT_EQ(j.name, "batch-1");
  EXPECT_EQ(j.model, kModel);
  EXPECT_EQ(j.created_ms, 1000);
  EXPECT_EQ(j.finished_ms, 0);
  EXPECT_EQ(j.first_result_ms, 0);  // submission errors are not worker results
  EXPECT_EQ(j.counts.total, 7);
  EXPECT_EQ(j.counts.pending, 3);
  EXPECT_EQ(j.counts.failed, 4);
  EXPECT_EQ(j.counts.succeeded, 0);
  expect_counts_add_up(j.counts);

  const std::vector<ResultRow> errors = store.results(id, true, -1, 100);
  ASSERT_EQ(errors.size(), 4u);
  EXPECT_EQ(errors[0].index, 1);
  EXPECT_EQ(errors[0].line, "{\"error\":1}");
  EXPECT_EQ(errors[1].index, 3);
  EXPECT_EQ(errors[1].custom_id, "a");
  EXPECT_EQ(errors[1].line, "dup 3 a of 0");
  EXPECT_EQ(errors[2].line, "dup 4 b of 2");
  EXPECT_EQ(errors[3].index, 6);
  EXPECT_EQ(errors[3].custom_id, "d");
  EXPECT_TRUE(errors[3].error);
  EXPECT_TRUE(store.results(id, false, -1, 100).empty());

  // The duplicates never reach a worker.
  const std::string w = store.register_worker(kModel, "{}", 2000);
  const auto block = store.lease_block(w, kModel, 100, 2000);
  ASSERT_TRUE(block);
  std::set<int64_t> leased;
  for (const auto& r : block->requests) leased.insert(r.index);
  EXPECT_EQ(leased, (std::set<int64_t>{0, 2, 5}));
}

TEST(JobStoreTest, AddLinesRejectsBadInputAndWrongState) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = store.create_job("", kModel, 1);
  const std::vector<NewLine> one = {request(0, "a", 1)};
  store.add_lines(id, one, dup_error);
  EXPECT_THROW_WITH(store.add_lines(id, one, dup_error), InvalidArgumentError, "index 0 is already used");
  // The whole call is one transaction: line 1 is not kept when line 0 fails.
  const std::vector<NewLine> mixed = {request(1, "b", 1), request(0, "c", 1)};
  EXPECT_THROW(store.add_lines(id, mixed, dup_error), InvalidArgumentError);
  EXPECT_EQ(store.job(id)->counts.total, 1);
  const std::vector<NewLine> no_id = {request(2, "", 1)};
  EXPECT_THROW_WITH(store.add_lines(id, no_id, dup_error), InvalidArgumentError, id);
  EXPECT_THROW_WITH(store.add_lines("job-0000000000000000", one, dup_error), NotFoundError, "job-0000000000000000");
  store.seal_job(id, 2);
  const std::vector<NewLine> more = {request(5, "z", 1)};
  EXPECT_THROW_WITH(store.add_lines(id, more, dup_error), FailedPreconditionError, id);
  EXPECT_THROW_WITH(store.seal_job(id, 3), FailedPreconditionError, id);
  EXPECT_THROW_WITH(store.drop_job(id), FailedPreconditionError, id);
}

TEST(JobStoreTest, JobOfOnlyErrorsOrNothingCompletesAtSeal) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string errs = store.create_job("", kModel, 1);
  const std::vector<NewLine> lines = {error_line(0, "x"), error_line(1, "")};
  EXPECT_EQ(store.add_lines(errs, lines, dup_error), 2);
  store.seal_job(errs, 50);
  JobInfo j = *store.job(errs);
  EXPECT_EQ(j.state, JobState::Completed);
  EXPECT_EQ(j.finished_ms, 50);
  EXPECT_EQ(j.counts.failed, 2);
  EXPECT_EQ(j.counts.total, 2);

  const std::string empty = store.create_job("", kModel, 2);
  store.seal_job(empty, 60);
  j = *store.job(empty);
  EXPECT_EQ(j.state, JobState::Completed);
  EXPECT_EQ(j.counts.total, 0);
}

TEST(JobStoreTest, NamesAreUniqueAndLookedUp) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string a = store.create_job("nightly", kModel, 1);
  EXPECT_THROW_WITH(store.create_job("nightly", kModel, 2), AlreadyExistsError, "nightly");
  // Nameless jobs never collide with one another.
  const std::string b = store.create_job("", kModel, 3);
  const std::string c = store.create_job("", kModel, 4);
  EXPECT_NE(b, c);
  ASSERT_TRUE(store.job_by_name("nightly"));
  EXPECT_EQ(store.job_by_name("nightly")->id, a);
  EXPECT_FALSE(store.job_by_name(""));
  EXPECT_FALSE(store.job_by_name("other"));
  EXPECT_FALSE(store.job("job-ffffffffffffffff"));
}

TEST(JobStoreTest, JobsListsNewestFirstWithoutUploading) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string a = submit(store, 1, 100, [](int64_t) { return 1; });
  const std::string b = submit(store, 1, 200, [](int64_t) { return 1; });
  const std::string uploading = store.create_job("", kModel, 300);
  const std::vector<JobInfo> all = store.jobs(10);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, b);
  EXPECT_EQ(all[1].id, a);
  ASSERT_EQ(store.jobs(1).size(), 1u);
  EXPECT_EQ(store.jobs(1)[0].id, b);
  store.drop_job(uploading);
  EXPECT_FALSE(store.job(uploading));
  EXPECT_THROW_WITH(store.drop_job(uploading), NotFoundError, uploading);
}

TEST(JobStoreTest, LeaseTakesSmallestPromptsInOrderUpToMax) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  // prompt_bytes: 0->90 1->10 2->50 3->10 4->30 5->70 6->20 7->60
  const std::vector<int64_t> sizes = {90, 10, 50, 10, 30, 70, 20, 60};
  const std::string id = submit(store, 8, 100, [&](int64_t i) { return sizes[i]; });
  const std::string w = store.register_worker(kModel, "{\"ranks\":1}", 100);
  EXPECT_EQ(w.rfind("worker-", 0), 0u);
  EXPECT_EQ(w.size(), 7u + 16u);

  const auto b1 = store.lease_block(w, kModel, 3, 110);
  ASSERT_TRUE(b1);
  EXPECT_EQ(b1->job_id, id);
  EXPECT_EQ(b1->model, kModel);
  ASSERT_EQ(b1->requests.size(), 3u);
  EXPECT_EQ(b1->requests[0].index, 1);  // 10 (ties by index)
  EXPECT_EQ(b1->requests[1].index, 3);  // 10
  EXPECT_EQ(b1->requests[2].index, 6);  // 20
  EXPECT_EQ(b1->requests[0].custom_id, "r1");
  EXPECT_EQ(b1->requests[0].body, "{\"req\":1}");
  EXPECT_EQ(b1->requests[0].attempts, 0);

  const auto b2 = store.lease_block(w, kModel, 3, 120);
  ASSERT_TRUE(b2);
  EXPECT_NE(b2->block_id, b1->block_id);
  ASSERT_EQ(b2->requests.size(), 3u);
  EXPECT_EQ(b2->requests[0].index, 4);  // 30
  EXPECT_EQ(b2->requests[1].index, 2);  // 50
  EXPECT_EQ(b2->requests[2].index, 7);  // 60

  JobInfo j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Running);
  EXPECT_EQ(j.counts.leased, 6);
  EXPECT_EQ(j.counts.pending, 2);
  expect_counts_add_up(j.counts);

  const auto b3 = store.lease_block(w, kModel, 10, 130);
  ASSERT_TRUE(b3);
  ASSERT_EQ(b3->requests.size(), 2u);
  EXPECT_EQ(b3->requests[0].index, 5);
  EXPECT_EQ(b3->requests[1].index, 0);
  EXPECT_FALSE(store.lease_block(w, kModel, 10, 140));  // nothing pending
  EXPECT_THROW(store.lease_block(w, kModel, 0, 140), InvalidArgumentError);
}

// A block is found again by its id with the requests it was leased, even after they were reported.
TEST(JobStoreTest, BlockGivesItsRequestsBack) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = submit(store, 5, 100, [](int64_t i) { return 10 * (5 - i); });
  const std::string w = store.register_worker(kModel, "{}", 100);
  const auto b = store.lease_block(w, kModel, 2, 110);
  ASSERT_TRUE(b);
  EXPECT_FALSE(store.block(b->block_id + 1000));
  for (int pass = 0; pass < 2; ++pass) {
    const auto again = store.block(b->block_id);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->job_id, id);
    EXPECT_EQ(again->model, kModel);
    ASSERT_EQ(again->requests.size(), 2u);
    EXPECT_EQ(again->requests[0].index, 4);
    EXPECT_EQ(again->requests[1].index, 3);
    EXPECT_EQ(again->requests[1].custom_id, "r3");
    store.commit_results(w, b->block_id, outputs_for(*b), 120);
  }
}

TEST(JobStoreTest, LeaseServesOldestJobOfTheModelOnly) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string newer = submit(store, 2, 500, [](int64_t) { return 1; });
  const std::string older = submit(store, 2, 100, [](int64_t) { return 1; });
  const std::string uploading = store.create_job("", kModel, 50);
  const std::vector<NewLine> up = {request(0, "u", 1)};
  store.add_lines(uploading, up, dup_error);

  const std::string other = store.register_worker("other-model", "{}", 0);
  EXPECT_FALSE(store.lease_block(other, "other-model", 10, 600));
  EXPECT_THROW_WITH(store.lease_block(other, kModel, 10, 600), FailedPreconditionError, other);

  const std::string w = store.register_worker(kModel, "{}", 0);
  auto b = store.lease_block(w, kModel, 10, 600);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->job_id, older);
  b = store.lease_block(w, kModel, 10, 600);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->job_id, newer);
  EXPECT_FALSE(store.lease_block(w, kModel, 10, 600));  // the uploading job is never leased
  EXPECT_EQ(store.job(uploading)->counts.pending, 1);
}

TEST(JobStoreTest, CommitIsIdempotentAndCompletesTheJob) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = submit(store, 4, 100, [](int64_t i) { return i; });
  const std::string w = store.register_worker(kModel, "{}", 100);
  const auto b = store.lease_block(w, kModel, 4, 110);
  ASSERT_TRUE(b);
  std::vector<ReportedResult> res = outputs_for(*b);
  res[2].error = true;
  res[2].line = "err2";
  EXPECT_EQ(store.commit_results(w, b->block_id, res, 200), 4);

  JobInfo j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Completed);
  EXPECT_EQ(j.finished_ms, 200);
  EXPECT_EQ(j.first_result_ms, 200);
  EXPECT_EQ(j.last_result_ms, 200);
  EXPECT_EQ(j.counts.succeeded, 3);
  EXPECT_EQ(j.counts.failed, 1);
  EXPECT_EQ(j.counts.prompt_tokens, 10 + 11 + 13);  // the failed request's tokens do not count
  EXPECT_EQ(j.counts.completion_tokens, 3);
  expect_counts_add_up(j.counts);

  std::vector<ReportedResult> again = outputs_for(*b, "changed");
  EXPECT_EQ(store.commit_results(w, b->block_id, again, 300), 0);
  const std::vector<ResultRow> out = store.results(id, false, -1, 100);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].index, 0);
  EXPECT_EQ(out[0].line, "out0");
  EXPECT_EQ(out[0].custom_id, "r0");
  EXPECT_EQ(out[1].index, 1);
  EXPECT_EQ(out[2].index, 3);
  const std::vector<ResultRow> errs = store.results(id, true, -1, 100);
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_EQ(errs[0].index, 2);
  EXPECT_EQ(errs[0].line, "err2");
  EXPECT_EQ(store.job(id)->last_result_ms, 200);
  EXPECT_EQ(store.job(id)->finished_ms, 200);
}

TEST(JobStoreTest, CommitValidatesIndicesAndBlock) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string a = submit(store, 3, 100, [](int64_t) { return 1; });
  const std::string b = submit(store, 5, 200, [](int64_t) { return 1; });
  const std::string w = store.register_worker(kModel, "{}", 100);
  const auto block = store.lease_block(w, kModel, 3, 300);
  ASSERT_TRUE(block);
  ASSERT_EQ(block->job_id, a);
  // Index 4 exists in job b but not in a: nothing of the report is kept.
  const std::vector<ReportedResult> bad = {{0, false, "x", 1, 1}, {4, false, "y", 1, 1}};
  EXPECT_THROW_WITH(store.commit_results(w, block->block_id, bad, 310), InvalidArgumentError, a);
  EXPECT_TRUE(store.results(a, false, -1, 10).empty());
  EXPECT_EQ(store.job(a)->counts.leased, 3);
  EXPECT_THROW_WITH(store.commit_results(w, 999999, bad, 310), NotFoundError, "999999");
  EXPECT_EQ(store.job(b)->counts.pending, 5);
}

TEST(JobStoreTest, PartialReportReleasesTheRest) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = submit(store, 3, 100, [](int64_t i) { return i; });
  const std::string w = store.register_worker(kModel, "{}", 100);
  const auto b = store.lease_block(w, kModel, 3, 110);
  ASSERT_TRUE(b);
  const std::vector<ReportedResult> one = {{0, false, "out0", 1, 1}};
  EXPECT_EQ(store.commit_results(w, b->block_id, one, 120), 1);
  JobInfo j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Running);
  EXPECT_EQ(j.counts.pending, 2);
  EXPECT_EQ(j.counts.leased, 0);
  const auto again = store.lease_block(w, kModel, 3, 130);
  ASSERT_TRUE(again);
  ASSERT_EQ(again->requests.size(), 2u);
  EXPECT_EQ(again->requests[0].attempts, 1);
}

TEST(JobStoreTest, ResultsPageInIndexOrder) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  // Descending prompt sizes, so results arrive in reverse index order.
  const std::string id = submit(store, 10, 100, [](int64_t i) { return 100 - i; });
  const std::string w = store.register_worker(kModel, "{}", 100);
  for (int k = 0; k < 5; ++k) {
    const auto b = store.lease_block(w, kModel, 2, 200 + k);
    ASSERT_TRUE(b);
    EXPECT_EQ(store.commit_results(w, b->block_id, outputs_for(*b), 300 + k), 2);
  }
  EXPECT_EQ(store.job(id)->first_result_ms, 300);
  EXPECT_EQ(store.job(id)->last_result_ms, 304);
  std::vector<int64_t> seen;
  int64_t after = -1;
  for (;;) {
    const std::vector<ResultRow> page = store.results(id, false, after, 3);
    if (page.empty()) break;
    EXPECT_LE(page.size(), 3u);
    for (const ResultRow& r : page) seen.push_back(r.index);
    after = page.back().index;
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(store.results(id, false, 7, 100).size(), 2u);
  EXPECT_TRUE(store.results(id, true, -1, 100).empty());
  EXPECT_THROW_WITH(store.results("job-1234", false, -1, 10), NotFoundError, "job-1234");
}

TEST(JobStoreTest, WorkersHeartbeatAndExpire) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  EXPECT_FALSE(store.any_ready_worker());
  const std::string a = store.register_worker(kModel, "{\"a\":1}", 1000);
  const std::string b = store.register_worker(kModel, "{\"b\":1}", 1000);
  EXPECT_FALSE(store.any_ready_worker());
  EXPECT_TRUE(store.heartbeat(a, true, 1500));
  EXPECT_TRUE(store.any_ready_worker());
  EXPECT_FALSE(store.heartbeat("worker-0123456789abcdef", true, 1500));
  std::vector<WorkerInfo> ws = store.workers();
  ASSERT_EQ(ws.size(), 2u);
  const auto wa = std::find_if(ws.begin(), ws.end(), [&](const WorkerInfo& w) { return w.id == a; });
  ASSERT_NE(wa, ws.end());
  EXPECT_EQ(wa->description, "{\"a\":1}");
  EXPECT_EQ(wa->model, kModel);
  EXPECT_EQ(wa->registered_ms, 1000);
  EXPECT_EQ(wa->last_heartbeat_ms, 1500);
  EXPECT_TRUE(wa->ready);
  EXPECT_TRUE(wa->alive);
  const auto one = store.worker(b);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->description, "{\"b\":1}");
  EXPECT_FALSE(one->ready);
  EXPECT_FALSE(store.worker("worker-0123456789abcdef"));

  // b's last heartbeat (1000) is older than 2600 - 1500; a's (1500) is not.
  EXPECT_EQ(store.expire_workers(2600, 1500), 0);
  ws = store.workers();
  ASSERT_EQ(ws.size(), 1u);
  EXPECT_EQ(ws[0].id, a);
  EXPECT_FALSE(store.worker(b));                  // dead
  EXPECT_FALSE(store.heartbeat(b, false, 2700));  // dead: it must register again
  EXPECT_THROW_WITH(store.lease_block(b, kModel, 1, 2700), NotFoundError, b);
  EXPECT_THROW_WITH(store.lease_block("worker-nobody", kModel, 1, 2700), NotFoundError, "worker-nobody");
  EXPECT_TRUE(store.any_ready_worker());
  EXPECT_EQ(store.expire_workers(5000, 1000), 0);
  EXPECT_FALSE(store.any_ready_worker());
  EXPECT_TRUE(store.workers().empty());
}

TEST(JobStoreTest, ExpiredLeaseIsHandedOutAgainAndFirstResultWins) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = submit(store, 4, 100, [](int64_t i) { return i; });
  const std::string a = store.register_worker(kModel, "{}", 100);
  const auto ba = store.lease_block(a, kModel, 3, 200);
  ASSERT_TRUE(ba);
  ASSERT_EQ(ba->requests.size(), 3u);

  const std::string b = store.register_worker(kModel, "{}", 5000);
  EXPECT_EQ(store.expire_workers(6000, 1000), 3);  // a is silent since 100
  JobInfo j = *store.job(id);
  EXPECT_EQ(j.counts.pending, 4);
  EXPECT_EQ(j.counts.leased, 0);
  EXPECT_EQ(store.expire_workers(6000, 1000), 0);  // a is already dead

  const auto bb = store.lease_block(b, kModel, 10, 6000);
  ASSERT_TRUE(bb);
  ASSERT_EQ(bb->requests.size(), 4u);
  for (const StoredRequest& r : bb->requests) EXPECT_EQ(r.attempts, r.index < 3 ? 1 : 0) << r.index;

  // a's late report is accepted; b's report of the same requests adds only what a did not have.
  EXPECT_EQ(store.commit_results(a, ba->block_id, outputs_for(*ba, "a"), 6100), 3);
  EXPECT_EQ(store.job(id)->state, JobState::Running);  // index 3 is still leased to b
  EXPECT_EQ(store.commit_results(b, bb->block_id, outputs_for(*bb, "b"), 6200), 1);
  EXPECT_EQ(store.commit_results(b, bb->block_id, outputs_for(*bb, "b"), 6300), 0);
  // b is credited with the one result that was its, in one block; a is dead and no longer listed.
  const std::vector<WorkerInfo> ws = store.workers();
  ASSERT_EQ(ws.size(), 1u);
  EXPECT_EQ(ws[0].id, b);
  EXPECT_EQ(ws[0].blocks_done, 1);
  EXPECT_EQ(ws[0].requests_done, 1);

  j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Completed);
  EXPECT_EQ(j.counts.succeeded, 4);
  EXPECT_EQ(j.first_result_ms, 6100);
  EXPECT_EQ(j.last_result_ms, 6200);
  expect_counts_add_up(j.counts);
  const std::vector<ResultRow> out = store.results(id, false, -1, 100);
  ASSERT_EQ(out.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(out[i].index, i);
    EXPECT_EQ(out[i].line, (i < 3 ? "a" : "b") + std::to_string(i));
  }
}

TEST(JobStoreTest, CancelStopsLeasingAndKeepsLateResults) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  const std::string id = store.create_job("", kModel, 100);
  const std::vector<NewLine> lines = {request(0, "a", 1), request(1, "b", 2), request(2, "c", 3), request(3, "d", 4),
                                      error_line(4, "e")};
  store.add_lines(id, lines, dup_error);
  store.seal_job(id, 100);
  const std::string w = store.register_worker(kModel, "{}", 100);
  const auto b = store.lease_block(w, kModel, 2, 110);  // indices 0 and 1
  ASSERT_TRUE(b);

  EXPECT_TRUE(store.cancel(id, 150));
  JobInfo j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Cancelled);
  EXPECT_EQ(j.finished_ms, 150);
  EXPECT_EQ(j.counts.cancelled, 4);
  EXPECT_EQ(j.counts.failed, 1);
  EXPECT_EQ(j.counts.pending + j.counts.leased, 0);
  expect_counts_add_up(j.counts);
  EXPECT_FALSE(store.lease_block(w, kModel, 10, 160));
  EXPECT_FALSE(store.cancel(id, 170));
  EXPECT_EQ(store.job(id)->finished_ms, 150);

  // The worker's report for the cancelled block is kept and counted as a result, not as cancelled.
  EXPECT_EQ(store.commit_results(w, b->block_id, outputs_for(*b), 200), 2);
  j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Cancelled);
  EXPECT_EQ(j.finished_ms, 150);
  EXPECT_EQ(j.counts.succeeded, 2);
  EXPECT_EQ(j.counts.cancelled, 2);
  EXPECT_EQ(j.counts.total, 5);
  expect_counts_add_up(j.counts);
  EXPECT_EQ(store.results(id, false, -1, 10).size(), 2u);

  const std::string done = submit(store, 1, 300, [](int64_t) { return 1; });
  const auto bd = store.lease_block(w, kModel, 1, 310);
  ASSERT_TRUE(bd);
  store.commit_results(w, bd->block_id, outputs_for(*bd), 320);
  EXPECT_FALSE(store.cancel(done, 330));
  EXPECT_EQ(store.job(done)->state, JobState::Completed);
  EXPECT_EQ(store.job(done)->counts.cancelled, 0);

  EXPECT_THROW_WITH(store.cancel("job-missing", 1), NotFoundError, "job-missing");
  const std::string up = store.create_job("", kModel, 400);
  EXPECT_THROW_WITH(store.cancel(up, 410), FailedPreconditionError, up);
}

TEST(JobStoreTest, EverythingSurvivesAReopenButUploadingJobs) {
  TempDir dir;
  const std::string path = (dir / "jobs.db").string();
  std::string id, uploading, w;
  int64_t open_block = 0;
  {
    JobStore store(path);
    id = submit(
        store, 6, 100, [](int64_t i) { return i; }, "durable");
    uploading = store.create_job("half", kModel, 150);
    const std::vector<NewLine> part = {request(0, "x", 1), error_line(1, "y")};
    store.add_lines(uploading, part, dup_error);
    w = store.register_worker(kModel, "{\"gpus\":2}", 100);
    store.heartbeat(w, true, 120);
    const auto b1 = store.lease_block(w, kModel, 2, 200);
    ASSERT_TRUE(b1);
    EXPECT_EQ(store.commit_results(w, b1->block_id, outputs_for(*b1), 210), 2);
    const auto b2 = store.lease_block(w, kModel, 2, 220);  // left leased across the reopen
    ASSERT_TRUE(b2);
    open_block = b2->block_id;
  }
  JobStore store(path);
  EXPECT_FALSE(store.job(uploading));
  EXPECT_FALSE(store.job_by_name("half"));
  store.create_job("half", kModel, 500);  // its name is free again

  const JobInfo j = *store.job(id);
  EXPECT_EQ(j.name, "durable");
  EXPECT_EQ(j.state, JobState::Running);
  EXPECT_EQ(j.counts.total, 6);
  EXPECT_EQ(j.counts.succeeded, 2);
  EXPECT_EQ(j.counts.leased, 2);
  EXPECT_EQ(j.counts.pending, 2);
  EXPECT_EQ(j.first_result_ms, 210);
  const std::vector<ResultRow> out = store.results(id, false, -1, 10);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].line, "out0");
  EXPECT_EQ(out[1].line, "out1");

  ASSERT_EQ(store.workers().size(), 1u);
  EXPECT_EQ(store.workers()[0].id, w);
  EXPECT_TRUE(store.workers()[0].ready);
  EXPECT_TRUE(store.heartbeat(w, true, 600));
  const auto b3 = store.lease_block(w, kModel, 10, 610);
  ASSERT_TRUE(b3);
  EXPECT_GT(b3->block_id, open_block);
  ASSERT_EQ(b3->requests.size(), 2u);
  EXPECT_EQ(b3->requests[0].index, 4);
}

// A coordinator killed mid-run: the child process never closes the database (no destructor, no
// checkpoint), so what the parent reads back comes from the write-ahead log alone.
TEST(JobStoreTest, AcknowledgedWorkSurvivesAProcessKill) {
  TempDir dir;
  const std::string path = (dir / "jobs.db").string();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 1;
    try {
      auto* store = new JobStore(path);  // leaked on purpose: the process dies without closing it
      const std::string id = submit(
          *store, 5, 100, [](int64_t i) { return i; }, "killed");
      store->create_job("in-flight", kModel, 150);
      const std::string w = store->register_worker(kModel, "{}", 100);
      const auto b = store->lease_block(w, kModel, 3, 200);
      if (b && store->commit_results(w, b->block_id, outputs_for(*b), 210) == 3) code = 0;
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);

  JobStore store(path);
  const auto j = store.job_by_name("killed");
  ASSERT_TRUE(j);
  EXPECT_EQ(j->counts.total, 5);
  EXPECT_EQ(j->counts.succeeded, 3);
  EXPECT_EQ(j->counts.pending, 2);
  EXPECT_EQ(store.results(j->id, false, -1, 10).size(), 3u);
  EXPECT_FALSE(store.job_by_name("in-flight"));
}

TEST(JobStoreTest, RefusesFilesThatAreNotJobStores) {
  TempDir dir;
  const std::string garbage = (dir / "garbage.db").string();
  testing::write_file(garbage, std::string(8192, '\x5a') + "this is not an sqlite database at all");
  EXPECT_THROW_WITH(JobStore store(garbage), FormatError, garbage);

  const std::string foreign = (dir / "foreign.db").string();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(foreign.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE jobs(x INTEGER); INSERT INTO jobs VALUES (1);", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  EXPECT_THROW_WITH(JobStore store(foreign), IoError, "not a tiergen job store");
  EXPECT_THROW_WITH(JobStore store(foreign), IoError, foreign);

  const std::string missing_dir = (dir / "no" / "such" / "dir" / "jobs.db").string();
  EXPECT_THROW_WITH(JobStore store(missing_dir), IoError, missing_dir);
}

TEST(JobStoreTest, ConcurrentWorkersCommitEveryIndexOnce) {
  TempDir dir;
  JobStore store((dir / "jobs.db").string());
  constexpr int64_t kLines = 400;
  const std::string id = submit(store, kLines, 100, [](int64_t i) { return (i * 37) % 101; });
  std::atomic<int64_t> added{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      try {
        const std::string w = store.register_worker(kModel, "{}", 100);
        for (int64_t now = 200; now < 200 + 4 * kLines; ++now) {  // bounded: a bug must not hang
          const auto b = store.lease_block(w, kModel, 1 + t * 3, now);
          if (!b) break;
          added += store.commit_results(w, b->block_id, outputs_for(*b, "t"), now);
        }
      } catch (const std::exception&) {
        ++failures;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(added.load(), kLines);
  const JobInfo j = *store.job(id);
  EXPECT_EQ(j.state, JobState::Completed);
  EXPECT_EQ(j.counts.succeeded, kLines);
  const std::vector<ResultRow> out = store.results(id, false, -1, kLines + 10);
  ASSERT_EQ(out.size(), static_cast<size_t>(kLines));
  for (int64_t i = 0; i < kLines; ++i) EXPECT_EQ(out[i].index, i);
}

}  // namespace
}  // namespace tiergen::coord
