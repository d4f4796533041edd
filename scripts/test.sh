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
status=0
ctest --output-on-failure -j "$(nproc)" --timeout 900 "$@" || status=$?
if ((status != 0)); then
  # The failures' output scrolls by among a thousand lines: print it again at the end of the log,
  # then run the failed tests once more, alone (a failure that passes alone is a race to fix). The
  # suite has failed either way.
  echo "test: the output of the tests that failed:"
  while IFS=: read -r _ name; do
    awk -v t="Testing: $name" 'index($0, t) { on = 1 } on { print } on && /^<end of output>/ { exit }' \
      Testing/Temporary/LastTest.log
  done <Testing/Temporary/LastTestsFailed.log
  echo "test: running them again, one at a time"
  ctest --rerun-failed --output-on-failure --timeout 900 || true
  exit "$status"
fi
