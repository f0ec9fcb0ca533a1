#!/usr/bin/env bash
# C coverage of the compiled hot path (tensormagic/engine/csrc/) over the twin tests.
#
# Builds the extension with --coverage into a copy of the package under a scratch folder (the
# normal install and its _hotpath*.so are left alone), runs the tests that compare the C twin
# with the Python one against that copy, and has gcovr report the executed lines.
#
#   bash scripts/c_coverage.sh            # fails under the floor (C_COVERAGE_MIN, default 95)
#   C_COVERAGE_KEEP=1 bash scripts/c_coverage.sh   # keeps the scratch folder (per-line .gcov)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
# absolute (the build below runs in another folder), without resolving a venv's symlink
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
MIN=${C_COVERAGE_MIN:-95}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tm-ccov.XXXXXX")
[ -n "${C_COVERAGE_KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
"$PY" -m gcovr --version >/dev/null 2>&1 || "$PY" -m pip install -q "gcovr>=7"

# the package's Python sources and C sources, without the normal build
mkdir -p "$WORK/src"
tar -C "$ROOT" --exclude='*.so' --exclude='__pycache__' -cf - tensormagic setup.py pyproject.toml README.md \
  | tar -C "$WORK/src" -xf -
(
  cd "$WORK/src"
  CFLAGS="--coverage -O0" LDFLAGS="--coverage" "$PY" setup.py -q build_ext --inplace --build-temp "$WORK/obj" \
    >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
)
ls "$WORK"/src/tensormagic/engine/_hotpath*.so >/dev/null

# the twin tests, importing the copy (PYTHONPATH comes before the editable install)
TWINS=(tests/test_engines.py tests/test_build_twins.py tests/test_blockend_twins.py tests/test_encode.py tests/test_saved_index.py
       tests/test_fastinit.py tests/test_walk_twins.py)
PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -q -p no:cacheprovider "${TWINS[@]}" \
  -o "pythonpath=$WORK/src"

# Executed lines of csrc/*.c and hot.h.  Not counted (docs/testing.md says why): a line that
# raises (PyErr_SetString/Format/SetObject/NoMemory); a line that only hands an error on
# (return NULL / return -1 / goto fail / goto done, after optional reference drops; a lone
# `break;`, `Py_CLEAR(out);`, `Py_CLEAR(lst);` or `failed = 1;`: in csrc/ each of these is an
# error exit); and lines marked GCOVR_EXCL_LINE or between GCOVR_EXCL_START and GCOVR_EXCL_STOP.
"$PY" -m gcovr --root "$WORK/src" --object-directory "$WORK/obj" --filter "$WORK/src/tensormagic/engine/csrc/" \
  --exclude-lines-by-pattern '.*PyErr_(SetString|Format|SetObject|NoMemory)\(.*' \
  --exclude-lines-by-pattern '\s*(Py_X?DECREF\([^()]*\); *|Py_CLEAR\([^()]*\); *)*(return (NULL|-1);|goto (fail|done);)\s*}?\s*' \
  --exclude-lines-by-pattern '\s*(Py_CLEAR\((out|lst)\);|failed = 1;|break;)\s*' \
  --txt - --fail-under-line "$MIN" "$WORK/obj"
