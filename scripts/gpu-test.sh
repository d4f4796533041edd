#!/usr/bin/env bash
# Runs tiergen's GPU tests (tests/gpu/*_test.cc, built into one executable, cuda_test) on a GPU host that lacks the Debian packages
# tiergen links, from a build made on another machine of the same architecture. Where the GPU host
# has the packages, build and test there instead (docs/gpu.md):
#   cmake --preset cuda && cmake --build --preset cuda && ctest --test-dir build-cuda -L gpu
#
# The GPU host needs the NVIDIA driver and the CUDA runtime and cuBLAS libraries (the CUDA toolkit),
# a glibc at least as new as the build machine's, and optionally ctest; it needs none of the Debian
# library dependencies (OpenBLAS, PCRE2, fmt, gtest, ...). The work is split between the two machines:
#
#   scripts/gpu-test.sh pack   BUILD MACHINE (the packages and nvcc installed). Configures and
#                              builds the GPU test executables (Release, TIERGEN_CUDA=ON, sm_90) in
#                              build-gpu-tree/ (stays there), copies them stripped into build-gpu/
#                              with a CTestTestfile.cmake that uses relative paths, and packs the
#                              shared libraries they load that the GPU host may lack (everything but
#                              glibc and the CUDA toolkit/driver libraries, so OpenBLAS, gfortran,
#                              quadmath, gomp, libstdc++ ...) into .devlibs/libs.tar.xz (OpenBLAS
#                              alone is 36 MB raw, 4 MB compressed). It also packs the `tiergen` CLI
#                              and the CPU micro-benchmarks, for `bench`, and prints the size of what
#                              is to be copied.
#   (copy)                     The repository's files with build-gpu/ and .devlibs/ to the GPU host,
#                              e.g. as one archive, unpacked there:
#                                { git ls-files -z -co --exclude-standard; printf 'build-gpu\0.devlibs\0'; } |
#                                  tar --null -T - -czf tiergen-gpu.tgz
#   scripts/gpu-test.sh run [GTEST ARGS]  GPU HOST (repository root). Unpacks .devlibs, sets
#                              LD_LIBRARY_PATH, prints `nvidia-smi -L`, runs every build-gpu/*_test
#                              directly (the build's CMake paths point at the build machine's
#                              checkout, so nothing may depend on them) and then `ctest -R _test`
#                              over build-gpu/. Arguments go to the test executables instead of the
#                              ctest pass, e.g. --gtest_filter='*Nccl*'. Logs go to the folder
#                              $TIERGEN_LOG_DIR when it is set. Exit status: non-zero when any test
#                              failed.
#   scripts/gpu-test.sh bench  GPU HOST, after run: CPU throughput of a Llama-2-7b-shaped dummy model
#                              (`tiergen bench --device cpu`, batch 1 and 16, prompt 512, gen 32)
#                              and the kernel micro-benchmarks; logs to $TIERGEN_LOG_DIR when set.
#   scripts/gpu-test.sh bench-gpu  GPU HOST: the GPU engine on OPT-6.7B and Llama-2-7B shapes (dummy
#                              weights, prompt 512, gen 32) at batch 32, 64 and 128 (TIERGEN_BATCHES
#                              overrides the OPT list), then the baselines
#                              in the same run: Hugging Face transformers fp16 (tests/bench/hf_baseline.py)
#                              and, when FLEXGEN_HARNESS names a FlexGen baseline harness folder
#                              (flexgen_baseline.sh, with FLEXGEN_SRC and SHIM_TOK_DIR set as it asks),
#                              upstream FlexGen at 32 and 128 (FLEXGEN_CASES overrides the harness
#                              cases). Every bench prints the roofline rates it measured and each
#                              run's share of its bound. Logs to $TIERGEN_LOG_DIR when set.
#   scripts/gpu-test.sh bench-offload  GPU HOST: the offloading engine's scenarios (dummy weights,
#                              prompt 512): OPT-30B under a 24 GiB GPU budget, OPT-66B and
#                              Llama-2-70B under 70 GiB, OPT-30B with 24 GiB of GPU and 24 GiB of
#                              host memory and the rest on disk (gen 8), each with --json and a
#                              trace; TIERGEN_SCENARIOS picks some (names as in docs/benchmarks.md),
#                              TIERGEN_OFFLOAD_DIR is the disk folder (default /tmp). Then upstream
#                              FlexGen's offloading cases when FLEXGEN_HARNESS is set (FLEXGEN_CASES,
#                              default 30b_off 30b_24g). Logs to $TIERGEN_LOG_DIR.
#   scripts/gpu-test.sh bench-pipeline  GPU HOST with 2 GPUs: OPT-66B under --gpu-mem 24GiB on one GPU,
#                              then as a 2-stage pipeline (mpirun -np 2, NCCL between the stages),
#                              in one run (docs/pipeline.md, "Scaling"). Logs to $TIERGEN_LOG_DIR.
#   NCCL: the pipeline loads libnccl.so.2 at run time; unpacking puts a Python install's copy on
#   LD_LIBRARY_PATH where the host has no other.
# build-gpu/, build-gpu-tree/ (/build*/) and .devlibs/ are ignored by .gitignore.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The real build tree: objects and static libraries stay here. TIERGEN_GPU_TREE may name another
# CUDA build (e.g. build/ where nvcc was found) so that pack does not build everything twice.
TREE="$(realpath -m "${TIERGEN_GPU_TREE:-$ROOT/build-gpu-tree}")"
BIN="$ROOT/build-gpu"         # what travels: the stripped test executables
LIBS="$ROOT/.devlibs"

gpu_tests() {  # the GPU test executable: every tests/gpu/*_test.cc is built into cuda_test
  compgen -G "$ROOT/tests/gpu/*_test.cc" >/dev/null && echo cuda_test
}

pack() {
  local tests
  mapfile -t tests < <(gpu_tests)
  ((${#tests[@]})) || { echo "no tests/gpu/*_test.cc to build" >&2; exit 1; }

  cmake -S "$ROOT" -B "$TREE" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTIERGEN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DTIERGEN_BENCH=ON >/dev/null
  ninja -C "$TREE" "${tests[@]}" tiergen tiergen_microbench

  rm -rf "$BIN" "$LIBS"
  mkdir -p "$BIN" "$LIBS/stage"
  {
    echo "# Written by scripts/gpu-test.sh pack: one ctest test per GPU test executable, beside this file."
    for t in "${tests[@]}"; do
      cp "$TREE/tests/$t" "$BIN/$t"
      strip "$BIN/$t"
      echo "add_test($t \"\${CMAKE_CURRENT_LIST_DIR}/$t\" --gtest_color=no)"
    done
  } >"$BIN/CTestTestfile.cmake"
  mkdir -p "$BIN/tools"
  cp "$TREE/bin/tiergen" "$TREE/tests/tiergen_microbench" "$BIN/tools/"
  strip "$BIN/tools/"*
  # The CUDA backend module, which tools/tiergen loads from ../lib for --device cuda.
  mkdir -p "$BIN/lib"
  cp "$TREE/lib/libtiergen_cuda.so" "$BIN/lib/"
  strip "$BIN/lib/libtiergen_cuda.so"

  # Libraries to leave out: glibc's (the GPU host's must be at least as new, and must match its
  # loader) and the CUDA toolkit and driver libraries (they are there, and must match its driver).
  local skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libcuda|libcudart|libcublas|libnvidia|libnvrtc|libnccl)'
  local name path
  for exe in "${tests[@]/#/$BIN/}" "$BIN"/tools/* "$BIN"/lib/*.so; do
    if ldd "$exe" | grep -q 'not found'; then
      ldd "$exe" | grep 'not found' >&2
      exit 1
    fi
    while read -r name _ path _; do
      [[ "$path" == /* && ! "$name" =~ $skip ]] || continue
      cp -L "$path" "$LIBS/stage/$name"
    done < <(ldd "$exe")
  done
  tar -C "$LIBS/stage" -cJf "$LIBS/libs.tar.xz" .
  # The executables too, compressed: copying .devlibs/ alone is then enough (run unpacks build-gpu/).
  tar -C "$ROOT" -cJf "$LIBS/bin.tar.xz" "$(basename "$BIN")"
  echo "packed libraries:"
  ls -l "$LIBS/stage" | tail -n +2
  rm -rf "$LIBS/stage"

  # What to copy to the GPU host: the working tree (without build folders) and .devlibs/, which
  # holds the libraries and the executables (build-gpu/ is unpacked from it there).
  local tree_bytes copy_bytes
  tree_bytes=$(cd "$ROOT" && git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) || true
  copy_bytes=$(du -cb "$LIBS" | tail -1 | cut -f1)
  echo "what to copy: .devlibs $((copy_bytes / 1024)) KiB, working tree $((tree_bytes / 1024)) KiB;" \
    "$(((copy_bytes + tree_bytes + 1048575) / 1048576)) MiB in all"
}

unpack_libs() {
  [[ -f "$LIBS/libs.tar.xz" ]] || { echo "run 'scripts/gpu-test.sh pack' on the build machine first" >&2; exit 1; }
  if [[ ! -d "$BIN" ]]; then
    if command -v xz >/dev/null; then
      tar -C "$ROOT" -xJf "$LIBS/bin.tar.xz"
    else
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$LIBS/bin.tar.xz" "$ROOT"
    fi
  fi
  local unpacked="$LIBS/lib"
  mkdir -p "$unpacked"
  if command -v xz >/dev/null; then
    tar -C "$unpacked" -xJf "$LIBS/libs.tar.xz"
  else  # no xz binary: Python's lzma reads it
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$LIBS/libs.tar.xz" "$unpacked"
  fi
  export TIERGEN_SOURCE_DIR="$ROOT"  # the tests read tests/data and models/ from this checkout
  export TIERGEN_BINARY="$BIN/tools/tiergen"  # and run the packed executable
  export LD_LIBRARY_PATH="$unpacked:/usr/local/cuda/lib64:/usr/local/cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # NCCL, for the pipeline's links between GPUs (tiergen loads it at run time): the host's own, else
  # a Python install's (the nvidia-nccl wheel that PyTorch brings), else none, and a pipeline's
  # hidden states then cross through host memory.
  if ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so\.2' && [[ ! -e /usr/local/cuda/lib64/libnccl.so.2 ]]; then
    local nccl
    nccl=$(python3 -c 'import os, nvidia.nccl; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' \
      2>/dev/null) || nccl=""
    if [[ -n "$nccl" && -e "$nccl/libnccl.so.2" ]]; then export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$nccl"; fi
  fi
}

bench() {
  unpack_libs
  local out="${TIERGEN_LOG_DIR:-}"
  echo "== host $(hostname): $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  "$BIN/tools/tiergen_microbench" --benchmark_min_time=0.2 2>&1 | tee ${out:+"$out/microbench.txt"}
  "$BIN/tools/tiergen" bench --device cpu --dummy llama-2-7b --batch-size 1,16 --prompt-len 512 --gen-len 32 --json \
    2>&1 | tee ${out:+"$out/bench-llama-2-7b-cpu.txt"}
}

bench_gpu() {
  unpack_libs
  local out="${TIERGEN_LOG_DIR:-/tmp/tiergen-bench}" t="$BIN/tools/tiergen"
  mkdir -p "$out"
  nvidia-smi -L | tee "$out/nvidia-smi.txt"
  "$t" bench --device cuda --dummy opt-6.7b --batch-size "${TIERGEN_BATCHES:-32,64,128}" --prompt-len 512 --gen-len 32 --json 2>&1 |
    tee "$out/tiergen-opt-6.7b.txt"
  "$t" bench --device cuda --dummy llama-2-7b --batch-size 32 --prompt-len 512 --gen-len 32 --json 2>&1 |
    tee "$out/tiergen-llama-2-7b.txt"
  if python3 -c 'import torch, transformers' 2>/dev/null; then
    python3 "$ROOT/tests/bench/hf_baseline.py" --model opt-6.7b --device cuda --batch 32 --dtype float16 2>&1 |
      tee "$out/hf-opt-6.7b.txt"
  fi
  if [[ -n "${FLEXGEN_HARNESS:-}" ]]; then
    # The harness writes its logs to the folder its OUT variable names.
    # FLEXGEN_CASES: the harness's cases to run (default: batch 32 and 128, all on the GPU).
    # shellcheck disable=SC2086  # a list of case names
    OUT="$out" T="${T:-300}" bash "$FLEXGEN_HARNESS/flexgen_baseline.sh" ${FLEXGEN_CASES:-67b_gpu 67b_gpu128} 2>&1 |
      tee "$out/flexgen.txt"
  fi
}

# name, then tiergen bench flags: the offloading scenarios (prompt 512; gen 32 unless given).
offload_scenario() {
  case "$1" in
    opt-30b-gpu24g) echo "--dummy opt-30b --gpu-mem 24GiB --percent ${P30:-25 75 0 100 100 0} --cpu-cache-compute" \
      "--gpu-batch-size ${G30:-40} --num-gpu-batches ${N30:-2}" ;;
    opt-66b-gpu70g) echo "--dummy opt-66b --gpu-mem 70GiB --percent ${P66:-50 50 0 100 100 0} --cpu-cache-compute" \
      "--gpu-batch-size ${G66:-12} --num-gpu-batches ${N66:-2}" ;;
    llama-2-70b-gpu70g) echo "--dummy llama-2-70b --gpu-mem 70GiB --percent ${P70:-40 60 100 0 100 0}" \
      "--gpu-batch-size ${G70:-16} --num-gpu-batches ${N70:-2}" ;;
    opt-30b-disk) echo "--dummy opt-30b --gpu-mem 24GiB --cpu-mem 24GiB --percent ${PD:-25 25 100 0 100 0}" \
      "--gpu-batch-size ${GD:-8} --num-gpu-batches ${ND:-1} --gen-len 8" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

bench_offload() {
  unpack_libs
  local out="${TIERGEN_LOG_DIR:-/tmp/tiergen-bench}" t="$BIN/tools/tiergen" name flags
  mkdir -p "$out"
  nvidia-smi -L | tee "$out/nvidia-smi.txt"
  for name in ${TIERGEN_SCENARIOS:-opt-30b-gpu24g opt-66b-gpu70g llama-2-70b-gpu70g opt-30b-disk}; do
    flags=$(offload_scenario "$name")
    echo "=== $name: tiergen bench --device cuda $flags"
    # shellcheck disable=SC2086  # flags are words
    "$t" bench --device cuda $flags --prompt-len 512 --json --progress 30 \
      --offload-dir "${TIERGEN_OFFLOAD_DIR:-/tmp}" --trace "$out/$name.trace.json" 2>&1 | tee "$out/tiergen-$name.txt" ||
      echo "=== $name failed"
  done
  if [[ -n "${FLEXGEN_HARNESS:-}" ]]; then
    # shellcheck disable=SC2086  # a list of case names
    OUT="$out" T="${T:-300}" bash "$FLEXGEN_HARNESS/flexgen_baseline.sh" ${FLEXGEN_CASES:-30b_off 30b_24g} 2>&1 |
      tee "$out/flexgen.txt"
  fi
}

run() {
  unpack_libs
  local out="${TIERGEN_LOG_DIR:-}"

  echo "== host $(hostname)"
  nvidia-smi -L | tee ${out:+"$out/nvidia-smi.txt"}

  local failed=() t log
  for exe in "$BIN"/*_test; do
    t="$(basename "$exe")"
    echo "== $t"
    if ldd "$exe" | grep 'not found'; then
      failed+=("$t (missing libraries)")
      continue
    fi
    log="${out:+$out/$t.log}"
    if ! "$exe" --gtest_color=no "$@" 2>&1 | tee ${log:+"$log"}; then
      failed+=("$t")
    fi
  done

  if (($#)); then
    echo "== a selection of the tests: no ctest pass"
  elif command -v ctest >/dev/null; then
    echo "== ctest -R _test (build-gpu)"
    (cd "$BIN" && ctest -R _test --output-on-failure 2>&1 | tail -n 20 | tee ${out:+"$out/ctest.log"}) ||
      failed+=("ctest")
  else
    echo "== ctest not found; the executables above are the result"
  fi

  if ((${#failed[@]})); then
    echo "GPU TESTS FAILED: ${failed[*]}"
    exit 1
  fi
  echo "GPU TESTS PASSED"
}

# mpirun as a user runs it on one node, root allowed and without the single-copy shared-memory path
# (containers often forbid both); every rank gets the environment.
mpirun_np() {
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none NCCL_NVLS_ENABLE=0 \
    mpirun --oversubscribe -x LD_LIBRARY_PATH -x NCCL_NVLS_ENABLE -x TIERGEN_CUDA_MODULE -np "$@"
}

# GPU HOST with 2 GPUs: OPT-66B fp16 (dummy weights, prompt 512, gen 32) under the same per-GPU
# budget, --gpu-mem 24GiB, on one GPU and as a pipeline of two (mpirun -np 2, NCCL between them),
# in one run. Each stage holds half the layers, so under the same budget it keeps a larger share of
# them on its GPU (the --percent below fit 24 GiB by `tiergen plan`: 12% of all layers on one GPU,
# 26% of each half on two); P66_P1 and P66_P2 give other policies. Host memory is given, never
# read off the machine (some hosts report less than they will grant).
bench_pipeline() {
  unpack_libs
  local out="${TIERGEN_LOG_DIR:-/tmp/tiergen-bench}" t="$BIN/tools/tiergen"
  mkdir -p "$out"
  nvidia-smi -L | tee "$out/nvidia-smi.txt"
  local flags="--device cuda --dummy opt-66b --gpu-mem 24GiB --prompt-len 512 --gen-len 32 --json --progress 30"
  local batch="--cpu-cache-compute --gpu-batch-size ${G66P:-16} --num-gpu-batches ${N66P:-2}"
  local p1="--percent ${P66_P1:-12 88 0 100 100 0} --cpu-mem ${CPU_MEM_P1:-200GiB} $batch"
  local p2="--percent ${P66_P2:-26 74 0 100 100 0} --cpu-mem ${CPU_MEM_P2:-100GiB} $batch --stage-link nccl"
  echo "=== opt-66b-gpu24g-p1: tiergen bench $flags $p1"
  # shellcheck disable=SC2086  # flags are words
  "$t" bench $flags $p1 2>&1 | tee "$out/tiergen-opt-66b-gpu24g-p1.txt" || echo "=== opt-66b-gpu24g-p1 failed"
  echo "=== opt-66b-gpu24g-p2: mpirun -np 2 tiergen bench $flags $p2"
  # shellcheck disable=SC2086
  TIERGEN_CUDA_MODULE="$BIN/lib/libtiergen_cuda.so" mpirun_np 2 "$t" bench $flags $p2 2>&1 |
    tee "$out/tiergen-opt-66b-gpu24g-p2.txt" || echo "=== opt-66b-gpu24g-p2 failed"
}

case "${1:-}" in
  pack) pack ;;
  bench-pipeline) bench_pipeline ;;
  run) run "${@:2}" ;;
  bench) bench ;;
  bench-gpu) bench_gpu ;;
  bench-offload) bench_offload ;;
  *)
    echo "usage: $0 pack|run|bench|bench-gpu|bench-offload|bench-pipeline   (see the comment at the top)" >&2
    exit 2
    ;;
esac
