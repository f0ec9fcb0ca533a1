#!/usr/bin/env bash
# Compatibility run: the declared oldest (Python 3.10, the oldest torch and IPython 8 that
# pyproject.toml allows) and the newest (Python 3.13, the newest torch, IPython and ipywidgets
# the package index serves).  Each environment is made anew under .venv-compat/ and runs the core,
# magics, diagnostics, engine and log tests on the compiled engine, then on the Python engine.
# Not part of scripts/test.sh or CI: each environment downloads torch from PyPI, a CUDA build on
# Linux (about 5 GB installed, several minutes).  Exit status: non-zero if any run failed.
#
#   bash scripts/compat.sh                 both environments
#   bash scripts/compat.sh newest          one of them
#   PY310=/path/python3.10 PY313=/path/python3.13 bash scripts/compat.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=.venv-compat
find_python() {  # the first candidate that runs (a pyenv shim on PATH may exist and refuse to)
  local c
  for c in "$@"; do
    if "$c" --version >/dev/null 2>&1; then echo "$c"; return; fi
  done
  echo "$1"
}
PY310="${PY310:-$(find_python python3.10 /root/.pyenv/versions/3.10.13/bin/python)}"
PY313="${PY313:-$(find_python python3.13 /root/.pyenv/versions/3.13.0/bin/python)}"

# oldest: the lower bounds of pyproject.toml's dependencies, pinned
OLDEST=("torch==2.13.0" "ipython==8.0.1" "ipywidgets==8.0.0" "traitlets==5.0.0")
# newest: unpinned (a machine-wide pip constraint, such as a cap on torch, is lifted below)
NEWEST=("torch" "ipython" "ipywidgets" "traitlets")
TOOLS=("pytest>=8" "numpy" "orjson")

PYTHON_ENGINE_TESTS=(tests/test_core_*.py tests/test_magics_*.py tests/test_diagnostics.py tests/test_cell_numbers.py
                     tests/test_tensorlog_magic.py tests/test_logfile.py tests/test_saved_index.py
                     tests/test_encode.py tests/test_fastinit.py tests/test_doctor.py)
# test_engines, test_build_twins and the torch.compile tests run both engines themselves and
# need the compiled one; the compile matrix (every backend x engine x way, ~3 min) runs here too:
# it leans on Dynamo's hooks and cache entries, which a torch release can change
TESTS=("${PYTHON_ENGINE_TESTS[@]}" tests/test_engines.py tests/test_build_twins.py
       tests/test_compile.py tests/test_compile_events.py tests/test_compile_matrix.py)

summary=()
status=0

run_env() {  # name python requirements...
  local name=$1 python=$2; shift 2
  local venv="$ROOT/$name" t0 t1 disk
  echo "=== $name: $("$python" --version 2>&1), ${*}"
  rm -rf "$venv"
  t0=$(date +%s)
  "$python" -m venv "$venv" || return 1
  "$venv/bin/python" -m pip install -q -U pip || return 1
  PIP_CONSTRAINT=/dev/null "$venv/bin/python" -m pip install -q "$@" "${TOOLS[@]}" || return 1
  PIP_CONSTRAINT=/dev/null "$venv/bin/python" -m pip install -q --no-deps -e . || return 1
  t1=$(date +%s)
  disk=$(du -sh "$venv" | cut -f1)
  "$venv/bin/python" -m tensormagic doctor || status=1
  local versions
  versions=$("$venv/bin/python" -c "import sys, torch, IPython, ipywidgets; print(f'Python {sys.version.split()[0]}, torch {torch.__version__}, IPython {IPython.__version__}, ipywidgets {ipywidgets.__version__}')")
  local c p
  c=$(TENSORMAGIC_COMPILE_MATRIX=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" 2>&1 \
      | tee "$ROOT/$name-compiled.log" | tail -1)
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  p=$(TENSORMAGIC_ENGINE=python "$venv/bin/python" -m pytest -q -p no:cacheprovider "${PYTHON_ENGINE_TESTS[@]}" 2>&1 \
      | tee "$ROOT/$name-python.log" | tail -1)
  [ "${PIPESTATUS[0]}" = 0 ] || status=1
  summary+=("$name: $versions; install $((t1 - t0)) s, $disk; compiled engine: $c; Python engine: $p")
}

mkdir -p "$ROOT"
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(oldest newest)
for name in "${wanted[@]}"; do
  case $name in
    oldest) run_env oldest "$PY310" "${OLDEST[@]}" || { status=1; summary+=("oldest: install failed"); } ;;
    newest) run_env newest "$PY313" "${NEWEST[@]}" || { status=1; summary+=("newest: install failed"); } ;;
    *) echo "unknown environment $name (oldest, newest)" >&2; exit 2 ;;
  esac
done
echo
printf '%s\n' "${summary[@]}"
exit "$status"
