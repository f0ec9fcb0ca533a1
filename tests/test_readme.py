"""Every README block that shows output is the output of running it now (timings masked).

A block is tied to how it runs by the HTML comment right above it (invisible on GitHub):
``<!-- session -->`` a terminal IPython session (``In [N]:`` cells, ``   ...:`` continuation lines,
then what the terminal printed), run in a fresh ``TerminalInteractiveShell`` in a subprocess;
``<!-- shell -->`` ``$ command`` lines and their output, run in the same folder afterwards;
``<!-- doctest -->`` a Python block in ``>>>`` form, run by ``doctest``.
Run ``python tests/test_readme.py`` to print what each session block prints now.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- (session|shell|doctest) -->\n```[a-z]*\n(.*?)```", re.S)
PROMPT = re.compile(r"^In \[(\d+)\]: ?(.*)$")
CONT = re.compile(r"^ +\.\.\.: ?(.*)$")
# Durations vary run to run; everything else in a report must match character for character.
TIMING = re.compile(r"\d+(?:\.\d+)? ?(?:ms|µs|s)\b")

_RUNNER = r"""
import json, os, sys
os.environ.setdefault("COLUMNS", "100")
from IPython.terminal.interactiveshell import TerminalInteractiveShell
ip = TerminalInteractiveShell.instance(colors="NoColor", simple_prompt=True)
ip.history_manager.enabled = False
for n, cell in json.load(sys.stdin):
    assert ip.execution_count == n, f"the README says In [{n}] where the shell is at In [{ip.execution_count}]"
    print(f"\x00cell {n}", flush=True)
    ip.run_cell(cell, store_history=True)
    sys.stdout.flush()
"""


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall(README.read_text()) if k == kind]


def parse_session(text: str) -> list[tuple[int, str, str]]:
    """``(N, cell source, expected output)`` for each ``In [N]:`` cell of a session block."""
    cells: list[tuple[int, list[str], list[str]]] = []
    for line in text.splitlines():
        if m := PROMPT.match(line):
            cells.append((int(m.group(1)), [m.group(2)], []))
        elif cells and not cells[-1][2] and (m := CONT.match(line)):
            cells[-1][1].append(m.group(1))
        elif cells:
            cells[-1][2].append(line)
    return [(n, "\n".join(src), "\n".join(out).strip("\n")) for n, src, out in cells]


def run_session(cells: list[tuple[int, str, str]], cwd: Path) -> dict[int, str]:
    """Run the cells in a fresh terminal shell; what it printed for each, by cell number."""
    import json

    # stderr joins stdout, unbuffered, so that a usage error appears under its cell as in a terminal
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps([(n, src) for n, src, _ in cells]),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    out: dict[int, str] = {}
    for chunk in proc.stdout.split("\x00cell ")[1:]:
        n, _, body = chunk.partition("\n")
        out[int(n)] = body.strip("\n")
    return out


def masked(text: str) -> str:
    return TIMING.sub("<time>", "\n".join(line.rstrip() for line in text.splitlines()))


SESSIONS = blocks("session")


def test_readme_has_the_blocks_this_test_runs() -> None:
    """The README still marks its output blocks (a marker lost would silently skip a block)."""
    assert len(SESSIONS) >= 3 and blocks("shell") and blocks("doctest")


@pytest.mark.parametrize("index", range(len(SESSIONS)))
def test_readme_session_prints_what_the_readme_shows(index: int, tmp_path: Path) -> None:
    """Each cell of a README session block prints, now, the output the README shows under it."""
    cells = parse_session(SESSIONS[index])
    got = run_session(cells, tmp_path)
    for n, src, expected in cells:
        assert masked(got[n]) == masked(expected), f"In [{n}]: {src!r}\n--- README ---\n{expected}\n--- now ---\n{got[n]}"


def test_readme_shell_commands_print_what_the_readme_shows(tmp_path: Path) -> None:
    """The ``$ python -m tensormagic ...`` lines print what the README shows, on the log its session wrote."""
    logging_session = next(s for s in SESSIONS if "--log" in s)
    run_session(parse_session(logging_session), tmp_path)
    for block in blocks("shell"):
        for command, expected in re.findall(r"^\$ (.*?)\n(.*?)(?=^\$ |\Z)", block, re.S | re.M):
            command = command.split("  #")[0].strip()
            assert expected.strip(), f"the README shows no output for $ {command}"
            argv = shlex.split(command)
            assert argv[:3] == ["python", "-m", "tensormagic"], command
            proc = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=tmp_path, timeout=120)
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert masked(proc.stdout) == masked(expected.strip("\n")), f"$ {command}\n--- now ---\n{proc.stdout}"


def test_readme_python_examples_run_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``>>>`` examples give the values the README shows."""
    monkeypatch.chdir(tmp_path)
    parser = doctest.DocTestParser()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for i, block in enumerate(blocks("doctest")):
        test = parser.get_doctest(block, {}, f"README doctest block {i + 1}", str(README), 0)
        runner = doctest.DocTestRunner(optionflags=flags)
        report: list[str] = []
        runner.run(test, out=report.append)
        assert runner.failures == 0, "".join(report)


def test_session_parser_splits_cells_and_outputs() -> None:
    """The parser reads prompts, continuation lines and outputs as a person reads them."""
    cells = parse_session("In [1]: a = 1\n   ...: b = 2\nhello\n\nIn [2]: b\nOut[2]: 2\n")
    assert cells == [(1, "a = 1\nb = 2", "hello"), (2, "b", "Out[2]: 2")]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for block in SESSIONS:
            cells = parse_session(block)
            outputs = run_session(cells, Path(folder))
            for n, src, _ in cells:
                print(f"In [{n}]: " + "\n   ...: ".join(src.splitlines()))
                if outputs[n]:
                    print(outputs[n])
                print()
            print("=" * 40)
