"""``%tensorlog`` and ``TensorMagic.log_path`` in a real InteractiveShell."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from testkit import run

from tensormagic.log import writer as logfile
from tensormagic.log.reader import load_log


@pytest.fixture(autouse=True)
def _release_writers():
    yield
    logfile.close_all()


def _shown(cap) -> str:
    """Everything a cell printed or displayed, as text."""
    return cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)


def _html(cap) -> str:
    return "".join(o.data.get("text/html", "") for o in cap.outputs)


@pytest.fixture
def log_path(ip, tmp_path: Path):
    """``%config TensorMagic.log_path`` set to a fresh file, and unset afterwards."""
    path = tmp_path / "run.jsonl"
    run(ip, f"%config TensorMagic.log_path = {str(path)!r}")
    yield path
    run(ip, "%config TensorMagic.log_path = None")


def test_log_path_logs_every_tracked_cell(ip, log_path: Path) -> None:
    """With log_path set, every %%trackgrad cell is appended to the log."""
    with capture_output():
        run(ip, "%%trackgrad --quiet\na = torch.ones(2)\n")
        run(ip, "%%trackgrad --quiet\nb = torch.zeros(3)\nb.add_(1)\n")
    recs = load_log(log_path)
    assert [[e.tensor.label for e in r.events] for r in recs] == [["a"], ["b", "b"]]
    assert recs[0].source.startswith("%%trackgrad --quiet\n")


def test_log_path_logs_cells_tracked_with_trackgrad_on(ip, log_path: Path) -> None:
    """%trackgrad on with log_path set logs each following cell."""
    with capture_output():
        run(ip, "%trackgrad on --quiet")
        run(ip, "c = torch.ones(4)\n")
        run(ip, "%trackgrad off")
    (rec,) = load_log(log_path)
    assert rec.events[0].tensor.label == "c" and rec.source == "c = torch.ones(4)\n"


def test_tensorlog_shows_logged_cells(ip, tmp_path: Path) -> None:
    """%tensorlog PATH displays every logged cell's report, with its position."""
    path = tmp_path / "own.jsonl"
    with capture_output():
        first = run(ip, f"%%trackgrad --quiet --log {path}\nx = torch.ones(2, 2, requires_grad=True)\n"
                        "out = (x * 2).sum()\nout.backward()\n")  # fmt: skip
        run(ip, f"%%trackgrad --quiet --log {path}\ny = torch.zeros(2)\n")
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", str(path))
    text = _shown(cap)
    assert f"cell #1 (execution count {first.execution_count})" in text and "cell #2" in text
    assert f"tensormagic · cell {first.execution_count}" in text
    assert "MulBackward0" in text and "AccumulateGrad(x)" in text


def test_tensorlog_selects_cells(ip, tmp_path: Path) -> None:
    """--cell, --exec-count and --last pick which logged cells are shown."""
    path = tmp_path / "sel.jsonl"
    with capture_output():
        results = [
            run(ip, f"%%trackgrad --quiet --log {path}\nv{i} = torch.ones({i + 1})\n") for i in range(3)
        ]
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", f"{path} --cell 2")
    assert "cell #2" in _shown(cap) and "cell #1" not in _shown(cap) and "v1" in _shown(cap)
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", f"{path} --exec-count {results[2].execution_count}")
    assert "cell #3" in _shown(cap) and "cell #2" not in _shown(cap)
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", f"{path} --last 2")
    assert "cell #2" in _shown(cap) and "cell #3" in _shown(cap) and "cell #1" not in _shown(cap)


def test_tensorlog_html_is_escaped(ip, tmp_path: Path) -> None:
    """A hostile name from the log reaches the HTML output escaped."""
    path = tmp_path / "hostile.jsonl"
    with capture_output():
        run(ip, "d = {}")
        run(ip, f"%%trackgrad --quiet --log {path}\nd['<img src=x onerror=alert(1)>'] = torch.ones(1)\n")
    with capture_output() as cap:
        ip.run_line_magic("config", "TensorMagic.display = 'html'")
        try:
            ip.run_line_magic("tensorlog", str(path))
        finally:
            ip.run_line_magic("config", "TensorMagic.display = 'auto'")
    html = _html(cap)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html


@pytest.mark.parametrize("kind", ["missing", "not a log", "unknown cell"])
def test_tensorlog_bad_input_is_a_usage_error(ip, tmp_path: Path, kind: str) -> None:
    """A missing file, a file that is not a log, or an unknown cell is a one-line UsageError."""
    path = tmp_path / "x.jsonl"
    args, message = str(path), "no such file"
    if kind == "not a log":
        path.write_text("a,b\n1,2\n")
        message = "is not a tensormagic log"
    elif kind == "unknown cell":
        with capture_output():
            run(ip, f"%%trackgrad --quiet --log {path}\nq = torch.ones(1)\n")
        args, message = f"{path} --cell 5", "has 1 cell; there is no cell 5"
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("tensorlog", args)


def test_tensorlog_on_an_empty_log_says_so(ip, tmp_path: Path) -> None:
    """An empty log prints that no cells were logged yet."""
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with capture_output() as cap:
        ip.run_line_magic("tensorlog", str(path))
    assert "no cells logged yet" in cap.stdout


def test_unwritable_log_path_warns_once_and_cells_still_run(ip, tmp_path: Path) -> None:
    """A log_path in a missing folder warns once; tracked cells still run and are recorded."""
    bad = tmp_path / "missing" / "run.jsonl"
    run(ip, f"%config TensorMagic.log_path = {str(bad)!r}")
    try:
        with warnings.catch_warnings(record=True) as caught, capture_output():
            warnings.simplefilter("always")
            r1 = run(ip, "%%trackgrad --quiet -o r\nk = torch.ones(2)\n")
            r2 = run(ip, "%%trackgrad --quiet -o r2\nk2 = torch.ones(2)\n")
    finally:
        run(ip, "%config TensorMagic.log_path = None")
    assert r1.success and r2.success
    logged = [str(w.message) for w in caught if issubclass(w.category, logfile.LogWarning)]
    assert len(logged) == 1 and "does not exist" in logged[0]
    assert ip.user_ns["r2"].events[0].tensor.label == "k2"


def test_unload_removes_tensorlog(ip) -> None:
    """%unload_ext removes %tensorlog with the other magics."""
    assert "tensorlog" in ip.magics_manager.magics["line"]
    ip.run_line_magic("unload_ext", "tensormagic")
    try:
        assert "tensorlog" not in ip.magics_manager.magics["line"]
    finally:
        ip.run_line_magic("load_ext", "tensormagic")
