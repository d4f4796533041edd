#!/usr/bin/env bash
# Installs the Debian packages that building tiergen needs, when any is missing (apt-get update
# first). Safe to run repeatedly: with everything present it does nothing.
# CUDA is not installed here: when nvcc is present (PATH or /usr/local/cuda) the CUDA backend is
# built too, otherwise tiergen builds and runs on the CPU.
set -euo pipefail

PKGS=(cmake ninja-build g++ pkg-config
      nlohmann-json3-dev libfmt-dev libcli11-dev libopenblas-openmp-dev libpcre2-dev libicu-dev
      libgtest-dev libgmock-dev libbenchmark-dev)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
