// The README's "Using it" section runs as written: every command in its shell block, from a
// directory laid out like the repository's root after a build, exits 0.
#include <fstream>
#include <sstream>

#include "tests/testutil/cli.h"
#include "tests/testutil/testutil.h"

namespace tiergen {
namespace {

// The commands of the first ```sh block after `heading`: continuation lines joined, comments and
// blank lines dropped.
std::vector<std::string> shell_block_commands(const std::string& markdown, const std::string& heading) {
  std::istringstream in(markdown);
  std::string line;
  bool in_section = false, in_block = false;
  std::vector<std::string> commands;
  std::string pending;
  while (std::getline(in, line)) {
    if (!in_section) {
      in_section = line == heading;
      continue;
    }
    if (!in_block) {
      in_block = line.rfind("```sh", 0) == 0;
      continue;
    }
    if (line.rfind("```", 0) == 0) break;
    if (pending.empty() && (line.empty() || line[0] == '#')) continue;
    if (!line.empty() && line.back() == '\\') {
      pending += line.substr(0, line.size() - 1);
      continue;
    }
    commands.push_back(pending + line);
    pending.clear();
  }
  return commands;
}

TEST(CliReadme, EveryUsingItCommandRuns) {
  const std::filesystem::path root = testing::source_dir();
  const std::vector<std::string> commands = shell_block_commands(testing::read_file(root / "README.md"), "## Using it");
  ASSERT_GE(commands.size(), 10u) << "the README's Using it block was not found or lost commands";

  // The repository root as the README assumes it: models/ and build/bin/tiergen.
  testing::TempDir work;
  std::filesystem::create_directory_symlink(root / "models", work / "models");
  std::filesystem::create_directories(work / "build" / "bin");
  std::filesystem::create_symlink(std::filesystem::absolute(testing::tiergen_binary()),
                                  work / "build" / "bin" / "tiergen");

  // One bash runs them in order (a command may use what an earlier one wrote or exported); after
  // each, its status is printed on a marker line.
  std::string script = "cd '" + work.path().string() + "'\nexport PATH=/usr/bin:/bin\n";
  for (size_t i = 0; i < commands.size(); ++i)
    script += commands[i] + "\necho \"@@status " + std::to_string(i) + " $?\"\n";
  testing::write_file(work / "readme.sh", script);
  const std::string log = (work / "log").string();
  const int raw = std::system(("bash " + (work / "readme.sh").string() + " </dev/null >" + log + " 2>&1").c_str());
  ASSERT_EQ(raw, 0);
  const std::string output = testing::read_file(log);

  for (size_t i = 0; i < commands.size(); ++i) {
    const std::string marker = "@@status " + std::to_string(i) + " ";
    const size_t at = output.find(marker);
    ASSERT_NE(at, std::string::npos) << "no status for: " << commands[i] << "\n" << output;
    EXPECT_EQ(output.substr(at + marker.size(), 2), "0\n") << "failed: " << commands[i] << "\n" << output;
  }
  EXPECT_GT(std::filesystem::file_size(work / "out.jsonl"), 0u);
}

}  // namespace
}  // namespace tiergen
