// tiergen command line: parse, validate, call the library. Subcommands live in launch/cmd_*.cc.
// Any error ends with one line on stderr and the exit status of its kind (launch/exit_codes.h).
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "comm/mpi_transport.h"
#include "kernels/cpu_setup.h"
#include "launch/commands.h"
#include "launch/exit_codes.h"
#include "runtime/core/error.h"

namespace {

// A failed run's exit status, after a pause under mpirun: mpirun ends the whole job as soon as one
// rank exits non-zero, and the ranks that found the same error at the same moment (a bad flag or
// config, which every rank checks) would be killed before they print it. The pause lets them.
int failed(int status) {
  std::fflush(stderr);
  if (tiergen::comm::launched_by_mpirun() && tiergen::comm::mpirun_size() > 1)
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  tiergen::kernels::cpu::reexec_with_blas_coretype(argv);
  CLI::App app{
      "tiergen: high-throughput batch generation with large language models.\n"
      "Examples:\n"
      "  tiergen generate --model models/fortune-tiny \"Q: What is a fortune?\"\n"
      "  tiergen tokenize --model models/fortune-tiny \"Hello world\"\n"
      "  tiergen info --model models/fortune-tiny\n"
      "  tiergen bench --device cpu --dummy llama-2-7b --batch-size 1,16 --prompt-len 128 --gen-len 8\n"
      "  tiergen plan --dummy opt-30b --device cuda --percent 20 80 0 100 100 0 --cpu-cache-compute \\\n"
      "      --gpu-batch-size 32 --num-gpu-batches 2 --gpu-mem 24GiB\n",
      "tiergen"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "tiergen 0.1.0");
  std::vector<tiergen::cli::Command> commands = {tiergen::cli::add_generate(app),    tiergen::cli::add_tokenize(app),
                                                 tiergen::cli::add_detokenize(app),  tiergen::cli::add_info(app),
                                                 tiergen::cli::add_bench(app),       tiergen::cli::add_plan(app),
                                                 tiergen::cli::add_coordinator(app), tiergen::cli::add_worker(app)};
  for (auto& c : tiergen::cli::add_job_commands(app)) commands.push_back(std::move(c));
  if (argc > 1 && argv[1][0] != '-') {  // CLI11 would only say "a subcommand is required"
    bool known = false;
    std::string names;
    for (const auto& c : commands) {
      known |= c.sub->get_name() == argv[1];
      names += (names.empty() ? "" : ", ") + c.sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "tiergen: error: unknown command '%s' (commands: %s)\n", argv[1], names.c_str());
      return tiergen::cli::kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "tiergen: error: %s (see tiergen --help)\n", e.what());
    return tiergen::cli::kExitUsage;
  }
  try {
    for (const auto& c : commands)
      if (c.sub->parsed()) return c.run();
    std::fprintf(stderr, "tiergen: error: no subcommand given (see tiergen --help)\n");
    return tiergen::cli::kExitUsage;
  } catch (const tiergen::Error& e) {
    std::fprintf(stderr, "tiergen: error: %s\n", e.what());
    return failed(tiergen::cli::exit_code(e.kind()));
  } catch (const std::filesystem::filesystem_error& e) {  // a path the OS refused (permissions, loops)
    std::fprintf(stderr, "tiergen: error: %s\n", e.what());
    return failed(tiergen::cli::kExitInput);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tiergen: error: out of host memory\n");
    return failed(tiergen::cli::kExitMemory);
  } catch (const std::exception& e) {  // a library error that escaped the typed ones: a bug
    std::fprintf(stderr, "tiergen: error: internal: %s\n", e.what());
    return failed(tiergen::cli::kExitInternal);
  }
}
