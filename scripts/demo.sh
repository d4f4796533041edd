#!/usr/bin/env bash
# Quick start, step 1: set up, build, and generate text with the demo model that ships in the
# repository (models/fortune-tiny, a 5.5M-parameter Llama trained on Debian's fortunes). CPU only.
# Extra arguments are passed to `tiergen generate`.
#
# It builds only the `tiergen` executable, not the tests and micro-benchmarks, in the same build
# directory and with the same CMake options as scripts/build.sh, so a later scripts/build.sh or
# scripts/test.sh reuses every object built here. When nvcc is found the CUDA backend is part of
# the executable (a few of the build steps); the demo itself runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TIERGEN_BUILD_DIR:-build}
MODEL=models/fortune-tiny

step() { printf '\n== demo: %s\n' "$*"; }

step "checking packages (scripts/setup.sh)"
bash scripts/setup.sh

step "configuring $BUILD_DIR/ (CMake, Release, Ninja)"
# The options must stay those of scripts/build.sh. CMake's output is shown only when it fails.
log=$(mktemp)
if ! cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
grep '^-- tiergen:' "$log" || true
estimate="about 90 s on 2 cores"
if grep -q 'CUDA backend ON' "$log"; then estimate="about 100 s on 2 cores, the CUDA kernels included"; fi
rm -f "$log"

BIN=$BUILD_DIR/bin/tiergen
if [ -x "$BIN" ]; then
  step "building the tiergen executable (only what changed since the last build)"
else
  # A first build compiles about 70 files: 89 and 103 s measured on 2 otherwise idle cores with nvcc
  # found, about 9 s of it for the CUDA backend (kernels/cuda), which is part of the one executable.
  if (($(nproc) > 2)); then estimate+="; less with this machine's $(nproc)"; fi
  step "building the tiergen executable ($estimate)"
fi
cmake --build "$BUILD_DIR" --target tiergen -j "$(nproc)"

if [ $# -eq 0 ]; then
  set -- "Q: Why did the chicken cross the road?" "The best way to predict the future" "You will"
fi
step "generating with $MODEL: $BIN generate --model $MODEL --max-new-tokens 64 --seed 1 ..."
exec "$BIN" generate --model "$MODEL" --max-new-tokens 64 --seed 1 "$@"
