#!/usr/bin/env bash
# The README's test command; CI runs it too (.ci/run).  On a fresh Debian machine it installs what
# the suite needs, then installs tensormagic into a new virtual environment (.venv-test, made anew
# on every run: versions are resolved fresh, so nothing left on the machine can hide a failure) and
# runs the suite on the compiled engine, then the recording tests on the pure-Python engine.
# Both passes always run; the exit status is non-zero if either failed.
#
#   bash scripts/test.sh                 both passes
#   bash scripts/test.sh tests/x.py -k y the compiled pass only, with these pytest arguments
#   PYTHON=python3.12 bash scripts/test.sh   the Python the environment is made from
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv-test

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v chromium >/dev/null || ! command -v dot >/dev/null || ! command -v gcc >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium graphviz gcc >/dev/null
  fi
fi

# gcc builds the compiled hot path (tensormagic/engine/csrc/) at install; torch is pinned by
# constraints.txt (an unpinned torch pulls a multi-GB CUDA build).
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || exit 1
"$VENV/bin/python" -m pip install -q -U pip || exit 1
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test]" || exit 1

# inductor's compile cache lives in the new environment too: each run compiles as a machine that
# never compiled does (a warm /tmp/torchinductor_root once hid a failure) and leaves nothing in /tmp
export TORCHINDUCTOR_CACHE_DIR="$PWD/$VENV/torchinductor"

status=0
# the versions and the engine under test, in the log; fails when the compiled engine was not built
"$VENV/bin/python" -m tensormagic doctor --require-compiled || status=1

"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=1
if [ $# -eq 0 ]; then
  # the pure-Python hot path (what runs where no compiler was available) on the recording tests
  TENSORMAGIC_ENGINE=python "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/test_core_*.py tests/test_diagnostics.py tests/test_magics_*.py tests/test_cell_numbers.py \
    tests/test_tensorlog_magic.py || status=1
fi
exit "$status"
