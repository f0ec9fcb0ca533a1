#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian machine, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v chromium >/dev/null || ! command -v dot >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium graphviz >/dev/null
  fi
fi
python3 -m pip install -q -c constraints.txt -e ".[test]"
python3 -m pytest -q -p no:cacheprovider "$@"
