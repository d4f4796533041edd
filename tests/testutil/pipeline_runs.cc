#include "tests/testutil/pipeline_runs.h"

#include <exception>

#include "kernels/backend.h"
#include "runtime/engine/model.h"
#include "stage/stage.h"

namespace tiergen::testing {

std::vector<Result> generate_alone(const std::filesystem::path& dir, const std::vector<Request>& reqs, int64_t block) {
  auto model = Model::load(dir);
  auto be = kernels::make_cpu_backend();
  Stage stage(*model, *be);
  Generator gen(stage, nullptr, block);
  return gen.generate(reqs);
}

std::vector<Result> rank_zero_results(std::vector<std::future<std::vector<Result>>>& ranks) {
  std::vector<Result> out;
  std::exception_ptr first;
  for (size_t r = 0; r < ranks.size(); ++r) try {
      auto got = ranks[r].get();
      if (r == 0) out = std::move(got);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  if (first) std::rethrow_exception(first);
  return out;
}

}  // namespace tiergen::testing
