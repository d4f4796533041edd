#include "runtime/io/offload_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>

#include "runtime/core/error.h"

namespace tiergen::io {
namespace {

// What the signal handler may touch: fixed arrays of C strings, published with atomics (no
// allocation, no locks in the handler). Each slot is a live folder and the files made in it, listed
// as they are named, so the handler removes them by path: unlink and rmdir are async-signal-safe,
// listing a folder is not.
constexpr int kSlots = 16;
constexpr int kFilesPerSlot = 1024;  // a file per streamed layer: 2 x 96 layers for OPT-175B
constexpr size_t kPath = 4096;

struct Slot {
  std::atomic<bool> live{false};
  char dir[kPath];
  std::atomic<int> n_files{0};
  char (*files)[kPath] = nullptr;  // kFilesPerSlot paths, allocated when the slot is taken
};
std::array<Slot, kSlots> g_slots;
std::mutex g_slots_mutex;  // taking and freeing slots (never in the handler)

void remove_slot(Slot& s) {  // async-signal-safe: unlink and rmdir only
  const int n = s.n_files.load();
  for (int i = 0; i < n; ++i) (void)unlink(s.files[i]);
  (void)rmdir(s.dir);
}

struct sigaction g_previous[2];

void on_signal(int sig) {
  for (Slot& s : g_slots)
    if (s.live.exchange(false)) remove_slot(s);
  const struct sigaction& prev = g_previous[sig == SIGINT ? 0 : 1];
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && !(prev.sa_flags & SA_SIGINFO)) {
    prev.sa_handler(sig);
    return;
  }
  // End the process as the signal would have: restore the default action and raise it again.
  (void)signal(sig, SIG_DFL);
  (void)raise(sig);
}

}  // namespace

void install_cleanup_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, &g_previous[0]);
    (void)sigaction(SIGTERM, &sa, &g_previous[1]);
  });
}

OffloadDir::OffloadDir(const std::string& parent) : slot_(-1) {
  struct stat st {};
  if (parent.empty()) throw IoError("--offload-dir: no folder given for the disk tier");
  if (stat(parent.c_str(), &st) != 0)
    throw IoError("--offload-dir " + parent + ": " + errno_message(errno) + " (create the folder first)");
  if (!S_ISDIR(st.st_mode)) throw IoError("--offload-dir " + parent + ": not a folder");
  std::string templ = parent + (parent.back() == '/' ? "" : "/") + "tiergen-XXXXXX";
  if (templ.size() + 256 >= kPath) throw IoError("--offload-dir " + parent + ": path too long");
  if (mkdtemp(templ.data()) == nullptr)  // mode 0700
    throw IoError("--offload-dir " + parent + ": cannot create a folder in it: " + errno_message(errno));
  path_ = templ;
  install_cleanup_handlers();
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[static_cast<size_t>(i)];
    if (s.live.load()) continue;
    if (!s.files) s.files = new char[kFilesPerSlot][kPath];  // kept for the process's life
    std::strncpy(s.dir, path_.c_str(), kPath - 1);
    s.dir[kPath - 1] = '\0';
    s.n_files.store(0);
    s.live.store(true);
    slot_ = i;
    return;
  }
  (void)rmdir(path_.c_str());
  throw IoError("--offload-dir: more than " + std::to_string(kSlots) + " offload folders open at once");
}

std::string OffloadDir::file(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw InternalError("OffloadDir::file: not a plain file name: '" + name + "'");
  std::string p = path_ + "/" + name;
  if (p.size() >= kPath) throw IoError("offload file path too long: " + p);
  Slot& s = g_slots[static_cast<size_t>(slot_)];
  const int n = s.n_files.load();
  if (n >= kFilesPerSlot)
    throw IoError("offload folder " + path_ + ": more than " + std::to_string(kFilesPerSlot) + " files");
  std::strncpy(s.files[n], p.c_str(), kPath - 1);
  s.files[n][kPath - 1] = '\0';
  s.n_files.store(n + 1);  // published after the path is written
  return p;
}

OffloadDir::~OffloadDir() {
  if (slot_ < 0) return;
  Slot& s = g_slots[static_cast<size_t>(slot_)];
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  if (s.live.exchange(false)) remove_slot(s);
}

}  // namespace tiergen::io
