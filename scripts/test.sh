#!/usr/bin/env bash
# The README's test command: set up (idempotent), then run the fast test suite on CPU.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export WANDB_MODE=disabled JAX_PLATFORMS=cpu
ruff check .   # the project's lint rules (pyproject.toml [tool.ruff])
python -m pytest -q "$@"
