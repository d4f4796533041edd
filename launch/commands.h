// Subcommands of the `tiergen` executable. Each registers its flags on the app and returns the
// function that runs it; library errors propagate to main(), which prints one line.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "runtime/engine/model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tiergen::cli {

// A subcommand and what runs it once it was parsed.
struct Command {
  CLI::App* sub = nullptr;
  std::function<int()> run;
};

Command add_generate(CLI::App& app);
Command add_tokenize(CLI::App& app);
Command add_detokenize(CLI::App& app);
Command add_info(CLI::App& app);
Command add_bench(CLI::App& app);

// Where a model comes from: a folder (--model) or a preset shape with dummy weights (--dummy).
struct ModelSource {
  std::string dir;
  std::string dummy;
  void add_flags(CLI::App& cmd);
  // Exactly one of the two must be given.
  void validate() const;
  std::unique_ptr<Model> load() const;
  // The folder's tokenizer.json, or null for dummy models / folders without one.
  std::unique_ptr<Tokenizer> tokenizer() const;
};

// Token ids written as "2,40313,318", "[2, 40313, 318]" or "2 40313 318". A word that is not a
// non-negative 32-bit integer is an InvalidArgumentError naming it.
std::vector<int32_t> parse_token_ids(const std::string& text);

// --threads N: OpenMP threads for the CPU backend (0: all cores).
void add_threads_flag(CLI::App& cmd, int& threads);
void apply_threads(int threads);

}  // namespace tiergen::cli
