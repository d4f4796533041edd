#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages that building tiergen needs, when any is missing: the
# compiler and build tools (g++, CMake, Ninja, pkg-config), the libraries tiergen links
# (nlohmann-json, fmt, CLI11, OpenBLAS, PCRE2, ICU, Open MPI for pipelines of ranks, yaml-cpp for
# cluster configs, gRPC, Protobuf and SQLite for the coordinator) and what the tests use
# (GoogleTest, Google Benchmark, and openssl for the TLS tests' certificates). Runs `apt-get update`
# and then `apt-get install`, as root or through sudo; without either it prints the command to run
# as root and exits 1. Safe to run repeatedly: with everything present it does nothing.
# CUDA is not installed here: when nvcc is present (PATH or /usr/local/cuda) the CUDA backend is
# built too, otherwise tiergen builds and runs on the CPU.
set -euo pipefail

PKGS=(cmake ninja-build g++ pkg-config
      nlohmann-json3-dev libfmt-dev libcli11-dev libopenblas-openmp-dev libpcre2-dev libicu-dev
      libopenmpi-dev openmpi-bin libyaml-cpp-dev
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libsqlite3-dev
      libgtest-dev libgmock-dev libbenchmark-dev openssl)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

INSTALL="apt-get install -y --no-install-recommends ${missing[*]}"
echo "setup: building tiergen needs ${#missing[@]} Debian package(s) that are not installed:"
echo "setup:   ${missing[*]}"
echo "setup: (compiler and build tools, the libraries tiergen links, and GoogleTest/Google Benchmark for the tests)"
if ! command -v apt-get >/dev/null; then
  echo "setup: error: no apt-get here; install these packages (or your system's equivalents) and run again" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then
    SUDO="sudo"
    echo "setup: installing them with sudo (it may ask for your password)"
  else
    echo "setup: error: installing packages needs root, and sudo is not available; as root, run" >&2
    echo "  apt-get update && $INSTALL" >&2
    echo "setup: then run this script again" >&2
    exit 1
  fi
fi
echo "setup: $SUDO${SUDO:+ }apt-get update"
$SUDO apt-get update
echo "setup: $SUDO${SUDO:+ }$INSTALL"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
echo "setup: packages installed"
