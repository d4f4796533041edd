#!/usr/bin/env bash
# Configures and builds tiergen (Release) into build/ (or $TIERGEN_BUILD_DIR). Extra arguments go
# to cmake, e.g. -DTIERGEN_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TIERGEN_BUILD_DIR:-build}
bash scripts/setup.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
