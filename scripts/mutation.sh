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
# Time budget: MUTATION_BUDGET_S (default 2400 s = 40 min on a busy 2-core machine) bounds the
# run; a mutant not reached by then fails the gate.
#
# mutmut 3 wraps every function in a trampoline (one extra frame per call).  tensormagic reads
# frames to find the user's line and names; the extra frame is in mutmut's site-packages file,
# which the line finder skips like any library frame, and mutmut's own "clean tests" step runs
# the subset on the trampolined copy first and stops if it is not green.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
BUDGET=${MUTATION_BUDGET_S:-2400}
# the gate: the measured score (docs/testing.md) rounded down; MUTATION_MIN_SCORE overrides it
FLOOR=84
MODULES=${MUTATION_MODULES:-"tensormagic/engine/mode.py tensormagic/engine/backward.py"}
# the core tests, the diagnostics (they drive the mode's watch and error paths), the engine twins
# and the magic's cell handling.  mutmut runs for each mutant only the tests of this list that
# reach the mutated function (it records that in its first, unmutated run), stopping at the first
# failure; the copy's conftest runs them in this order (quick and telling first, IPython last)
TESTS=${MUTATION_TESTS:-"tests/test_core_inplace_forms.py tests/test_core_calls.py tests/test_core_example.py tests/test_core_autograd.py tests/test_core_backward.py tests/test_engines.py tests/test_core_invariants.py tests/test_core_threads.py tests/test_core_training_names.py tests/test_core_tutorial.py tests/test_diagnostics.py tests/test_magics_trackgrad.py"}
# the slow ones leave the subset: a 30 s training loop (twice), torch.compile, a 4,000-op GC
# count; and the one that needs the compiled engine as the default
DESELECT=${MUTATION_DESELECT:-"not bit_identical and not compiled_function and not garbage_collector and not correct_training_loop and not is_built_and_is_the_default"}
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
# Every test's teardown runs gc.collect() (conftest.py), which walks all of torch's and IPython's
# objects: 0.2 s a test, most of the subset's time.  In the copy only, what is alive after a
# test's teardown is frozen (gc.freeze), so the next collection walks only what that test made;
# objects a test makes are collected as before (the leak tests still see their tensors go)
cat >> tests/conftest.py <<'CONFTEST'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):  # scripts/mutation.sh
    yield
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:  # scripts/mutation.sh
    gc.collect()
    gc.freeze()


class _MutationOrder:  # scripts/mutation.sh: the files in MUTATION_TESTS order
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        import os

        order = os.environ.get("MUTATION_ORDER", "").split()
        rank = {name: i for i, name in enumerate(order)}
        items.sort(key=lambda it: rank.get(it.nodeid.split("::")[0], len(order)))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_MutationOrder())
CONFTEST
# mutmut reads [tool.mutmut] from pyproject.toml first: the copy's gets the section (the repo's does not)
{
  echo
  echo "[tool.mutmut]"
  printf 'source_paths = ["tensormagic/"]\n'
  printf 'only_mutate = [%s]\n' "$(printf '"%s",' $MODULES | sed 's/,$//')"
  printf 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-k", "%s"]\n' "$DESELECT"
  printf 'pytest_add_cli_args_test_selection = [%s]\n' "$(printf '"%s",' $TESTS | sed 's/,$//')"
  printf 'process_isolation = "forkserver"\n'
  # mutmut's wall-clock limit per mutant is (the selected tests' call time + constant) x
  # multiplier; its times leave out setup and teardown (the IPython shell, gc), so a constant
  # well above mutmut's default (1 s) keeps a busy 2-core machine from timing out healthy runs,
  # and a multiplier under its default (15) frees a worker from a hung mutant within minutes
  printf 'timeout_constant = 20.0\n'
  printf 'timeout_multiplier = 5.0\n'
  printf 'use_git_change_detection = false\n'
} >> pyproject.toml

export TENSORMAGIC_ENGINE=python OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1 MUTATION_ORDER="$TESTS"
set +e
timeout --signal=INT --kill-after=60 "$BUDGET" "$PY" -m mutmut run --max-children "${MUTATION_JOBS:-2}"
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $rc -eq 130 ] || { echo "mutmut run failed ($rc)"; exit $rc; }
"$PY" -m mutmut results --all true > "$WORK/results.txt" 2>&1 || true
echo "scratch copy with mutmut's results: $WORK (mutmut show NAME there shows a mutant)"
# The score: killed (a test failed, timed out or crashed) over every mutant; "no tests" (no test
# of the subset reaches the function) and "suspicious" count as not killed.  A run that did not
# reach every mutant within the budget fails the gate whatever its score.
"$PY" - "$WORK/results.txt" "${MUTATION_MIN_SCORE:-$FLOOR}" <<'PY'
import re, sys
from collections import Counter
status = {}
for line in open(sys.argv[1]).read().splitlines():
    m = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
    if m:
        status[m.group(1)] = m.group(2).strip()
KILLED = {"killed", "timeout", "segfault"}
counts = Counter(status.values())
by_module = {}
for name, st in status.items():
    mod = name.split(".x")[0]
    k, n = by_module.get(mod, (0, 0))
    by_module[mod] = (k + (st in KILLED), n + 1)
killed = sum(v for k, v in counts.items() if k in KILLED)
unrun = counts.get("not checked", 0) + counts.get("check was interrupted by user", 0)
total = len(status)
score = 100.0 * killed / total if total else 0.0
print("mutants by status:", dict(counts))
for mod, (k, n) in sorted(by_module.items()):
    print(f"  {mod}: {k}/{n} killed")
for name, st in sorted(status.items()):
    if st not in KILLED:
        print(f"{st}: {name}")
print(f"score: {killed}/{total} killed ({score:.1f}%); floor {float(sys.argv[2]):.1f}%")
if unrun:
    print(f"FAIL: {unrun} mutants not run within the time budget (MUTATION_BUDGET_S)")
elif score < float(sys.argv[2]):
    print("FAIL: under the floor")
sys.exit(1 if unrun or score < float(sys.argv[2]) else 0)
PY
