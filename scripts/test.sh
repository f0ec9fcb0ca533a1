#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v chromium >/dev/null || ! command -v dot >/dev/null || ! command -v gcc >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium graphviz gcc >/dev/null
  fi
fi
# gcc builds the compiled hot path (tensormagic/engine/csrc/) at install; tests/test_engines.py
# fails if it was not built.
python3 -m pip install -q -c constraints.txt -e ".[test]"
python3 -m pytest -q -p no:cacheprovider "$@"
if [ $# -eq 0 ]; then
  # the pure-Python hot path (used where no compiler was available) on the recording tests
  TENSORMAGIC_ENGINE=python python3 -m pytest -q -p no:cacheprovider \
    tests/test_core_*.py tests/test_diagnostics.py tests/test_magics_trackgrad.py
fi
