"""The command-line reviewer, run as a subprocess on a real log: summary, show, export, errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tensormagic
from tensormagic.log import writer as logfile

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of three cells: the autograd example with a move, a hostile name, and a failure."""
    path = tmp_path_factory.mktemp("cli") / "run.jsonl"
    with tensormagic.track(
        log=path, cell=3, source="%%trackgrad\n\nx = torch.ones(2, 2, requires_grad=True)\n"
    ):
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        out = (y * y * 3).mean()
        out.backward()
        h = x.detach().to(torch.float64)
        m = h.to("meta")
    d: dict[str, torch.Tensor] = {}
    with tensormagic.track(
        log=path, cell=4, source=f"d[{HOSTILE!r}] = torch.zeros(3)  # <script>alert(2)</script>"
    ):
        d[HOSTILE] = torch.zeros(3)
        d[HOSTILE].add_(1)
    with pytest.raises(RuntimeError), tensormagic.track(log=path, cell=3, source="%%trackgrad\nboom()"):
        torch.ones(1)
        raise RuntimeError("boom")
    del x, y, out, h, m, d
    logfile.close_all()
    return path


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensormagic", *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_summary_lists_cells_and_totals(log: Path) -> None:
    """summary prints one line per cell (position, exec count, body's first line, counts) and totals."""
    r = run_cli("summary", log)
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert "new" in lines[0] and "moved" in lines[0] and "warn" in lines[0]
    assert re.match(r"\s+1\s+\[3\]\s+x = torch.ones\(2, 2, requires_grad=True\)", lines[1])
    assert "%%trackgrad" not in r.stdout
    assert lines[1].rstrip().endswith("ok") and "32 B" in lines[1]  # 2×2 float64 to meta
    assert re.match(r"\s+2\s+\[4\]\s+d\['<img", lines[2])
    assert lines[3].rstrip().endswith("FAILED") and "boom()" in lines[3]
    assert "total: 3 cells" in lines[4] and "1 failed" in lines[4]


def test_summary_reads_gzip(log: Path, tmp_path: Path) -> None:
    """summary reads a .jsonl.gz log the same way."""
    gz = tmp_path / "run.jsonl.gz"
    for rec in tensormagic.load_log(log):
        logfile.LogWriter(gz).write(rec)
    logfile.close_all()
    plain, packed = run_cli("summary", log), run_cli("summary", gz)
    assert packed.returncode == 0 and packed.stdout == plain.stdout


def test_show_by_position(log: Path) -> None:
    """show --cell N prints that cell's full text report."""
    r = run_cli("show", log, "--cell", "1")
    assert r.returncode == 0
    assert "MeanBackward0 → MulBackward0 → MulBackward0 ⇉ AddBackward0 → AccumulateGrad(x)" in r.stdout
    assert (
        r.stdout
        == "── cell #1 (execution count 3) ──\n" + tensormagic.load_log(log, cell=1)[0].to_text() + "\n"
    )


def test_show_by_exec_count_shows_every_match(log: Path) -> None:
    """show --exec-count N shows every cell with that count (kernels repeat them)."""
    r = run_cli("show", log, "--exec-count", "3")
    assert r.returncode == 0
    assert "── cell #1 (execution count 3) ──" in r.stdout and "── cell #3 (execution count 3) ──" in r.stdout
    assert "FAILED: RuntimeError: boom" in r.stdout


@pytest.mark.parametrize("args", [("--cell", "9"), ("--exec-count", "99")])
def test_show_unknown_cell_is_one_line_error(log: Path, args: tuple[str, str]) -> None:
    """An unknown cell is one line on stderr and exit status 1."""
    r = run_cli("show", log, *args)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "has 3 cells; there is no cell" in r.stderr


def test_export_chrome_trace(log: Path, tmp_path: Path) -> None:
    """export --chrome writes Trace Event JSON: cells as X slices, events as instants, a bytes counter."""
    out = tmp_path / "trace.json"
    r = run_cli("export", log, "--chrome", out)
    assert r.returncode == 0 and "wrote" in r.stdout
    trace = json.loads(out.read_text())
    evs = trace["traceEvents"]
    cells = [e for e in evs if e["ph"] == "X"]
    instants = [e for e in evs if e["ph"] == "i"]
    counters = [e for e in evs if e["ph"] == "C"]
    assert len(cells) == 3 and all(e["cat"] == "cell" and e["dur"] >= 0 for e in cells)
    assert cells[0]["args"]["exec_count"] == 3 and cells[2]["args"]["status"] == "error"
    n_events = sum(len(r.events) for r in tensormagic.load_log(log))
    assert len(instants) == n_events and all(e["s"] == "t" for e in instants)
    assert {e["cat"] for e in instants} >= {"create", "inplace", "move", "backward"}
    move = next(e for e in instants if e["cat"] == "move" and e["args"]["to_device"] == "meta")
    assert move["args"]["nbytes"] == 32 and move["args"]["tensor"]["dtype"] == "float64"
    assert counters and counters[-1]["name"] == "bytes moved" and counters[-1]["args"]["bytes"] == 32
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in evs)
    assert all(isinstance(e["ts"], (int, float)) and e["ts"] >= 0 for e in evs if "ts" in e)
    assert cells[0]["ts"] <= instants[0]["ts"] <= cells[0]["ts"] + cells[0]["dur"] + 1e6


def test_export_html_is_self_contained_and_escaped(log: Path, tmp_path: Path) -> None:
    """export --html writes one file with every cell, the hostile name escaped, no scripts, no network."""
    out = tmp_path / "report.html"
    r = run_cli("export", log, "--html", out)
    assert r.returncode == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<details") == 3
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img" not in page and "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page and " src=" not in page.replace("img src=x", "")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "MeanBackward0" in page


def test_export_both_at_once(log: Path, tmp_path: Path) -> None:
    """export takes --chrome and --html together."""
    r = run_cli("export", log, "--chrome", tmp_path / "t.json", "--html", tmp_path / "r.html")
    assert r.returncode == 0 and (tmp_path / "t.json").exists() and (tmp_path / "r.html").exists()


def test_export_needs_a_format(log: Path) -> None:
    """export without --chrome or --html is a one-line error."""
    r = run_cli("export", log)
    assert r.returncode == 1 and "--chrome" in r.stderr and r.stderr.count("\n") == 1


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    """A missing log file is one line on stderr and exit status 1."""
    r = run_cli("summary", tmp_path / "nope.jsonl")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"tensormagic: error: {tmp_path / 'nope.jsonl'}: no such file\n"


def test_not_a_log_is_one_line_error(tmp_path: Path) -> None:
    """A file that is not a tensormagic log is one line on stderr and exit status 1."""
    p = tmp_path / "data.csv"
    p.write_text("a,b\n1,2\n")
    for cmd in (("summary", p), ("show", p, "--cell", "1"), ("export", p, "--html", tmp_path / "x.html")):
        r = run_cli(*cmd)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "is not a tensormagic log" in r.stderr


def test_damaged_log_reports_skipped_lines(log: Path, tmp_path: Path) -> None:
    """A truncated log is summarised, with a note on stderr counting the skipped line."""
    p = tmp_path / "cut.jsonl"
    data = log.read_bytes()
    p.write_bytes(data[: len(data) - 25])
    r = run_cli("summary", p)
    assert r.returncode == 0 and "incomplete" in r.stdout
    assert "skipped 1 corrupt or truncated line in" in r.stderr  # one line: the singular


@pytest.mark.parametrize("cmd", [(), ("summary",), ("show",), ("export",), ("demo",)])
def test_help_everywhere(cmd: tuple[str, ...]) -> None:
    """--help works for the program and every command."""
    r = run_cli(*cmd, "--help")
    assert r.returncode == 0 and "usage: tensormagic" in r.stdout


def test_no_command_is_usage_error() -> None:
    """No command prints the usage on stderr and exits 2."""
    r = run_cli()
    assert r.returncode == 2 and "usage: tensormagic" in r.stderr


def test_bad_arguments_are_usage_errors(log: Path) -> None:
    """show without a cell selector is a usage error (exit 2)."""
    r = run_cli("show", log)
    assert r.returncode == 2 and "--cell" in r.stderr


def test_console_script_is_declared() -> None:
    """The tensormagic console script points at cli.main."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'tensormagic = "tensormagic.cli:main"' in text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_waits_then_draws_then_clears() -> None:
    """The progress bar stays silent for the first second, then draws, and clears itself."""
    from tensormagic.cli import Progress

    now = [0.0]
    stream = _Tty()
    bar = Progress("reading", stream, clock=lambda: now[0])
    bar(10, 100)
    assert stream.getvalue() == ""
    now[0] = 1.5
    bar(50, 100)
    assert "reading [" in stream.getvalue() and "50%" in stream.getvalue()
    bar.close()
    assert stream.getvalue().endswith("\r\033[K")


def test_no_progress_bar_in_a_pipe(log: Path) -> None:
    """With stderr a pipe, nothing but errors and notes reaches it."""
    r = run_cli("summary", log)
    assert r.stderr == ""


def test_summary_total_counts_one_cell_in_the_singular(tmp_path: Path) -> None:
    """A log of one cell totals "1 cell", and export says "1 cell" too (not "1 cells")."""
    path = tmp_path / "one.jsonl"
    with tensormagic.track(log=path, cell=1, source="a = torch.ones(2)"):
        torch.ones(2)
    logfile.close_all()
    r = run_cli("summary", path)
    assert r.returncode == 0 and "total: 1 cell " in r.stdout.splitlines()[-1] + " "
    r = run_cli("export", path, "--html", tmp_path / "one.html")
    assert r.returncode == 0 and r.stdout.strip().endswith(": 1 cell"), r.stdout
