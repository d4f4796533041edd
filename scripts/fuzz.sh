#!/usr/bin/env bash
# Builds every libFuzzer target (tests/fuzz/fuzz_*.cc) with clang and runs each for SECONDS
# (default 60) on its seed corpus tests/fuzz/corpus/NAME.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 300 fuzz_safetensors
# Env: BUILD_DIR (default build-fuzz), JOBS (ninja -j, default 2), MAX_LEN (default 4096).
# New inputs go to BUILD_DIR/fuzz-corpus/NAME, crashes to BUILD_DIR/fuzz-artifacts/NAME/, so the
# checked-in seeds stay small. Exits non-zero if any target finds a problem.
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-fuzz}"
jobs="${JOBS:-2}"
max_len="${MAX_LEN:-4096}"

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for src in "$root"/tests/fuzz/fuzz_*.cc; do
    [[ -e "$src" ]] && targets+=("$(basename "$src" .cc)")
  done
fi
if [[ ${#targets[@]} -eq 0 ]]; then
  echo "fuzz.sh: no tests/fuzz/fuzz_*.cc targets" >&2
  exit 1
fi

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DTIERGEN_CUDA=OFF -DTIERGEN_FUZZ=ON \
  -DTIERGEN_TESTS=OFF -DTIERGEN_BENCH=OFF >/dev/null
ninja -C "$build" -j "$jobs" "${targets[@]}"

failed=()
for t in "${targets[@]}"; do
  name="${t#fuzz_}"
  work="$build/fuzz-corpus/$name"
  artifacts="$build/fuzz-artifacts/$name/"
  mkdir -p "$work" "$artifacts"
  seeds=()
  [[ -d "$root/tests/fuzz/corpus/$name" ]] && seeds+=("$root/tests/fuzz/corpus/$name")
  echo "== $t: ${seconds}s, max_len $max_len"
  if ! "$build/fuzz/$t" -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 \
      -artifact_prefix="$artifacts" "$work" "${seeds[@]}"; then
    failed+=("$t")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: failures in ${failed[*]}; inputs under $build/fuzz-artifacts/" >&2
  exit 1
fi
echo "fuzz.sh: ${targets[*]} ran ${seconds}s each without findings"
