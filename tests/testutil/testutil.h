// Shared test helpers: paths to the copied reference data, temp dirs, error-message matching.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace tiergen::testing {

// tests/data in the source tree: reference outputs of Hugging Face transformers (tests/data/README.md).
std::filesystem::path data_dir();
std::filesystem::path hf_model_dir(const std::string& name);  // tests/data/hf-reference/models/NAME
std::filesystem::path source_dir();

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& p, const std::string& bytes);
std::string read_file(const std::filesystem::path& p);

}  // namespace tiergen::testing

// Expects `stmt` to throw ErrorType whose what() contains `substring`.
#define EXPECT_THROW_WITH(stmt, ErrorType, substring)                                  \
  do {                                                                                 \
    try {                                                                              \
      stmt;                                                                            \
      ADD_FAILURE() << "expected " #ErrorType " containing \"" << (substring) << "\""; \
    } catch (const ErrorType& e) {                                                     \
      EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)              \
          << "message: " << e.what() << "\nexpected to contain: " << (substring);      \
    }                                                                                  \
  } while (0)
