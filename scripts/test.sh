#!/usr/bin/env bash
# Quick start, step 2: set up, build, and run the whole test suite (GPU tests skip themselves
# where no GPU is visible). Extra arguments go to ctest, e.g. -R hf_reference.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# Tests run two processes per core pair (ctest -j): spinning OpenMP workers would steal each
# other's cores, so workers sleep when idle unless the caller says otherwise.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
cd "${TIERGEN_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@"
