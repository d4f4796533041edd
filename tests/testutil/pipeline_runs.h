// Pieces of the pipeline tests that run ranks as threads (tests/unit/pipeline_test.cc,
// stage_link_test.cc): the single process's results they are compared with, and rank 0's
// results gathered from the ranks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <future>
#include <vector>

#include "runtime/generate/generator.h"

namespace tiergen::testing {

// `reqs` through one process holding the whole model (CPU), in blocks of `block`.
std::vector<Result> generate_alone(const std::filesystem::path& dir, const std::vector<Request>& reqs, int64_t block);

// Waits for every rank, then returns rank 0's results (ranks[0]), or rethrows the first rank's error.
std::vector<Result> rank_zero_results(std::vector<std::future<std::vector<Result>>>& ranks);

}  // namespace tiergen::testing
