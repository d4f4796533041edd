#!/usr/bin/env bash
# Quick start, step 1: set up, build, and generate text with the demo model that ships in the
# repository (models/fortune-tiny, a 5.5M-parameter Llama trained on Debian's fortunes). CPU only.
# Extra arguments are passed to `tiergen generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BIN=${TIERGEN_BUILD_DIR:-build}/bin/tiergen
if [ $# -eq 0 ]; then
  set -- "Q: Why did the chicken cross the road?" "The best way to predict the future" "You will"
fi
exec "$BIN" generate --model models/fortune-tiny --max-new-tokens 64 --seed 1 "$@"
