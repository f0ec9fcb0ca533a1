#!/usr/bin/env bash
# Mutation testing of the engine's Python code (not part of the default CI run).
#
# mutmut (PyPI) mutates the modules below one change at a time and runs a fast subset of the
# core tests against each mutant, on the pure-Python engine (TENSORMAGIC_ENGINE=python); a
# mutant that no test fails "survived".  docs/testing.md has the last run's score and the
# survivors judged harmless.  It works in a scratch copy (MUTATION_WORK, default a temporary
# folder), so the checkout is never changed.
#
#   bash scripts/mutation.sh                      # the default modules, within MUTATION_BUDGET_S
#   MUTATION_MODULES="tensormagic/engine/ops.py" bash scripts/mutation.sh
#   MUTATION_MIN_SCORE=90 bash scripts/mutation.sh   # a gate: exit 1 under 90% killed
#
# Time budget: MUTATION_BUDGET_S (default 2700 s = 45 min) bounds the mutant run; mutants not
# reached by then are reported as not run (the score counts only mutants that ran).
#
# mutmut 3 wraps every function in a trampoline (one extra frame per call).  tensormagic reads
# frames to find the user's line and names; the extra frame is in mutmut's site-packages file,
# which the line finder skips like any library frame, and mutmut's own "clean tests" step runs
# the subset on the trampolined copy first and stops if it is not green.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
BUDGET=${MUTATION_BUDGET_S:-2700}
MODULES=${MUTATION_MODULES:-"tensormagic/engine/mode.py tensormagic/engine/backward.py"}
TESTS=${MUTATION_TESTS:-"tests/test_core_autograd.py tests/test_core_example.py tests/test_core_inplace_forms.py tests/test_core_invariants.py"}
# the slow ones (a 30 s training loop, torch.compile, a 4,000-op GC count) leave the subset
DESELECT=${MUTATION_DESELECT:-"not bit_identical and not compiled_function and not garbage_collector"}
WORK=${MUTATION_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/tm-mutation.XXXXXX")}
"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q "mutmut>=3.8,<4"

mkdir -p "$WORK"
tar -C "$ROOT" --exclude='__pycache__' --exclude='mutants' -cf - tensormagic tests pyproject.toml setup.py README.md \
  | tar -C "$WORK" -xf -
cd "$WORK"
# CompiledTrackMode only sets up the C engine, which TENSORMAGIC_ENGINE=python never runs (the
# twin tests cover it): its lines are left unmutated, in the copy only
"$PY" - <<'PY'
from pathlib import Path
p = Path("tensormagic/engine/mode.py")
s = p.read_text()
s = s.replace("\nclass CompiledTrackMode(", "\n# pragma: no mutate start\nclass CompiledTrackMode(", 1)
s = s.replace("\ndef default_engine(", "\n# pragma: no mutate end\ndef default_engine(", 1)
p.write_text(s)
PY
# mutmut reads [tool.mutmut] from pyproject.toml first: the copy's gets the section (the repo's does not)
{
  echo
  echo "[tool.mutmut]"
  printf 'source_paths = ["tensormagic/"]\n'
  printf 'only_mutate = [%s]\n' "$(printf '"%s",' $MODULES | sed 's/,$//')"
  printf 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-k", "%s"]\n' "$DESELECT"
  printf 'pytest_add_cli_args_test_selection = [%s]\n' "$(printf '"%s",' $TESTS | sed 's/,$//')"
  printf 'process_isolation = "forkserver"\n'
  # mutmut's wall-clock limit per mutant is (test time + constant) x 15: its per-test times leave
  # out setup and teardown (the suite's gc.collect() after each test), so the default constant
  # (1 s) times out healthy runs on a busy 2-core machine
  printf 'timeout_constant = 20.0\n'
  printf 'use_git_change_detection = false\n'
} >> pyproject.toml

export TENSORMAGIC_ENGINE=python OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
set +e
timeout --signal=INT --kill-after=60 "$BUDGET" "$PY" -m mutmut run --max-children "${MUTATION_JOBS:-2}"
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $rc -eq 130 ] || { echo "mutmut run failed ($rc)"; exit $rc; }
"$PY" -m mutmut results --all true > "$WORK/results.txt" 2>&1 || true
"$PY" - "$WORK/results.txt" "${MUTATION_MIN_SCORE:-0}" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
status = {}
for line in text.splitlines():
    m = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
    if m:
        status[m.group(1)] = m.group(2).strip()
counts = {}
for s in status.values():
    counts[s] = counts.get(s, 0) + 1
ran = sum(v for k, v in counts.items() if k in ("killed", "survived", "timeout", "suspicious"))
killed = counts.get("killed", 0) + counts.get("timeout", 0)
score = 100.0 * killed / ran if ran else 0.0
print("mutants by status:", counts)
print(f"score: {killed}/{ran} killed ({score:.1f}%)")
for name, s in sorted(status.items()):
    if s == "survived":
        print("survived:", name)
sys.exit(1 if score < float(sys.argv[2]) else 0)
PY
echo "scratch copy with mutmut's results: $WORK (mutmut show NAME there shows a mutant)"
