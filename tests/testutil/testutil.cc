#include "tests/testutil/testutil.h"

#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

namespace tiergen::testing {

// The checkout the tests were built in, unless TIERGEN_SOURCE_DIR names another copy of it (a build
// carried to a GPU host runs against the checkout there: scripts/gpu-test.sh run sets it).
std::filesystem::path source_dir() {
  const char* env = std::getenv("TIERGEN_SOURCE_DIR");
  return env && *env ? std::filesystem::path(env) : std::filesystem::path(TIERGEN_SOURCE_DIR);
}
std::filesystem::path data_dir() {
  const char* env = std::getenv("TIERGEN_SOURCE_DIR");
  return env && *env ? std::filesystem::path(env) / "tests" / "data" : std::filesystem::path(TIERGEN_TEST_DATA);
}
std::filesystem::path hf_model_dir(const std::string& name) { return data_dir() / "hf-reference" / "models" / name; }

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  // The pid alone is not unique where containers with their own pid numbering share /tmp; a
  // random part is, and create_directory's answer says whether the name was already taken.
  static std::random_device rd;
  for (;;) {
    char tag[17];
    std::snprintf(tag, sizeof tag, "%08x%08x", rd(), rd());
    path_ = std::filesystem::temp_directory_path() /
            ("tiergen-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + tag);
    if (std::filesystem::create_directory(path_)) break;
  }
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace tiergen::testing
