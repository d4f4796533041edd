#!/usr/bin/env bash
# Quick start, step 1: set up, build, and generate text with the demo model that ships in the
# repository (models/fortune-tiny, a 5.5M-parameter Llama trained on Debian's fortunes). CPU only.
# Extra arguments are passed to `tiergen generate`.
#
# It builds only what it runs: the `tiergen` executable for the CPU (no tests, no micro-benchmarks,
# no CUDA kernels: their templates take longer to compile than everything else together), in its
# own build directory, build-demo/, so that the full build of scripts/build.sh and scripts/test.sh
# (build/, with the CUDA backend when nvcc is found) keeps its own options.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TIERGEN_DEMO_BUILD_DIR:-build-demo}
MODEL=models/fortune-tiny

step() { printf '\n== demo: %s\n' "$*"; }

step "checking packages (scripts/setup.sh)"
bash scripts/setup.sh

step "configuring $BUILD_DIR/ (CMake, Release, Ninja, CPU backend only)"
# CMake's output is shown only when it fails.
log=$(mktemp)
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTIERGEN_CUDA=OFF -DTIERGEN_TESTS=OFF \
  -DTIERGEN_BENCH=OFF >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
grep '^-- tiergen:' "$log" || true
estimate="about 90 s on 2 cores"
rm -f "$log"

BIN=$BUILD_DIR/bin/tiergen
if [ -x "$BIN" ]; then
  step "building the tiergen executable (only what changed since the last build)"
else
  # A first build compiles about 60 files.
  if (($(nproc) > 2)); then estimate+="; less with this machine's $(nproc)"; fi
  step "building the tiergen executable ($estimate)"
fi
cmake --build "$BUILD_DIR" --target tiergen -j "$(nproc)"

if [ $# -eq 0 ]; then
  set -- "Q: Why did the chicken cross the road?" "The best way to predict the future" "You will"
fi
step "generating with $MODEL: $BIN generate --model $MODEL --max-new-tokens 64 --seed 1 ..."
exec "$BIN" generate --model "$MODEL" --max-new-tokens 64 --seed 1 "$@"
