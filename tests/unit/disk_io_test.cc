// The disk tier's I/O (runtime/io): the private offload folder and its removal (destructor,
// SIGINT), O_DIRECT files with checked completions, a full disk, a short read, and the I/O
// threads' deadlines.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <future>
#include <stdexcept>
#include <string>

#include "runtime/core/error.h"
#include "runtime/io/disk_file.h"
#include "runtime/io/io_pool.h"
#include "runtime/io/offload_dir.h"
#include "tests/testutil/testutil.h"

namespace tiergen::io {
namespace {

namespace fs = std::filesystem;
using tiergen::testing::TempDir;

TEST(OffloadDir, IsPrivateAndRemovedWithItsFiles) {
  TempDir parent;
  std::string path, file;
  {
    OffloadDir d(parent.path().string());
    path = d.path();
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    EXPECT_EQ(fs::path(path).parent_path(), parent.path());
    file = d.file("layers.0.weight");
    DiskFile f(file);
    AlignedBuffer b(100);
    std::memset(b.data(), 7, b.size());
    f.write(0, b.data(), 100);
    EXPECT_TRUE(fs::exists(file));
  }
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(path));
}

TEST(OffloadDir, BadFoldersAreClearErrors) {
  TempDir parent;
  EXPECT_THROW_WITH(OffloadDir((parent / "missing").string()), IoError, "No such file or directory");
  EXPECT_THROW_WITH(OffloadDir(""), IoError, "no folder given");
  tiergen::testing::write_file(parent / "plain", "x");
  EXPECT_THROW_WITH(OffloadDir((parent / "plain").string()), IoError, "plain: not a folder");
  // A folder nothing may be created in: /proc even for root (whom a mode of 0500 does not stop).
  EXPECT_THROW_WITH(OffloadDir("/proc"), IoError, "--offload-dir /proc: cannot create a folder in it");
}

TEST(DiskFile, RoundTripsWholeAndPartialBlocks) {
  TempDir parent;
  OffloadDir d(parent.path().string());
  DiskFile f(d.file("t"));
  AlignedBuffer out(3 * kDirectAlign), in(3 * kDirectAlign);
  for (size_t i = 0; i < out.size(); ++i)
    static_cast<unsigned char*>(out.data())[i] = static_cast<unsigned char>(i * 7);
  f.write(0, out.data(), 10000);                        // two blocks and a part of a third
  f.write(3 * kDirectAlign, out.data(), kDirectAlign);  // exactly one block, after them
  f.read(0, in.data(), 10000);
  EXPECT_EQ(std::memcmp(in.data(), out.data(), 10000), 0);
  f.read(3 * kDirectAlign, in.data(), kDirectAlign);
  EXPECT_EQ(std::memcmp(in.data(), out.data(), kDirectAlign), 0);
  // Past the end: a short read, named.
  EXPECT_THROW_WITH(f.read(4 * kDirectAlign, in.data(), 10), IoError, "a short read");
  EXPECT_THROW_WITH(f.read(5, in.data(), 10), InternalError, "not aligned");
}

TEST(DiskFile, AFullDiskIsAnErrorThatSaysSo) {
  // /dev/full answers every write with ENOSPC, as a filled disk does.
  DiskFile f("/dev/full");
  AlignedBuffer b(kDirectAlign);
  EXPECT_THROW_WITH(f.write(0, b.data(), 512), IoError, "disk is full");
}

TEST(OffloadDir, SigintRemovesTheFolder) {
  TempDir parent;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the child: a run with an offloaded file, interrupted
    close(fds[0]);
    try {
      OffloadDir d(parent.path().string());
      DiskFile f(d.file("kv.0"));
      AlignedBuffer b(kDirectAlign);
      f.write(0, b.data(), kDirectAlign);
      const std::string path = d.path() + "\n";
      if (::write(fds[1], path.data(), path.size()) != static_cast<ssize_t>(path.size())) _exit(3);
      raise(SIGINT);
    } catch (...) {
      _exit(2);
    }
    _exit(4);  // SIGINT did not end the process
  }
  close(fds[1]);
  char buf[4096] = {};
  ssize_t got = 0, n;
  while ((n = read(fds[0], buf + got, sizeof(buf) - 1 - static_cast<size_t>(got))) > 0) got += n;
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  std::string path(buf, static_cast<size_t>(got));
  ASSERT_FALSE(path.empty());
  path.pop_back();
  EXPECT_FALSE(fs::exists(path)) << path << " outlived the interrupted run";
  EXPECT_TRUE(fs::is_empty(parent.path()));
}

TEST(IoPool, RunsRequestsAndReportsTheirErrors) {
  IoPool pool(2);
  int a = 0;
  IoTicket t = pool.submit([&] { a = 42; }, "setting a");
  t.wait(std::chrono::seconds(10));
  EXPECT_EQ(a, 42);
  IoTicket bad = pool.submit([] { throw IoError("reading x: Input/output error"); }, "reading x");
  EXPECT_THROW_WITH(bad.wait(std::chrono::seconds(10)), IoError, "Input/output error");
}

TEST(IoPool, AWaitHasADeadline) {
  IoPool pool(1);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  IoTicket stuck = pool.submit([gate] { gate.wait(); }, "reading layers.3 from a stalled disk");
  EXPECT_THROW_WITH(stuck.wait(std::chrono::milliseconds(50)), IoError,
                    "reading layers.3 from a stalled disk: no answer from the disk in 0.05 s");
  release.set_value();  // let the worker finish, so the pool can join it
}

}  // namespace
}  // namespace tiergen::io
