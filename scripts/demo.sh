#!/usr/bin/env bash
# The README's main-job command: set up (idempotent), then `metaopt demo`
# (a CPU-sized meta-training run, then the demo leaderboard suite with the result).
# Extra arguments go to `metaopt demo` (e.g. `--out runs/demo2`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
metaopt demo "$@"
