"""Never write over what is not ours: export refuses its own input and foreign files; ``--log``
refuses a file that is not a tensormagic log (one warning; the cell still runs, tracked in memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tensormagic
from tensormagic.log import writer as logfile

FIXTURE = Path(__file__).parent / "data" / "log_schema2.jsonl"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    path.write_bytes(FIXTURE.read_bytes())
    return path


def _export(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tensormagic", "export", *map(str, args)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("flag", ["--html", "--chrome"])
@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_export_refuses_to_write_its_input(log: Path, tmp_path: Path, flag: str, how: str) -> None:
    """``export run.jsonl --html run.jsonl`` (or through a link to it) fails, the log unchanged, even with --force."""
    before = log.read_bytes()
    out = log
    if how == "symlink":
        out = tmp_path / "link.html"
        out.symlink_to(log)
    elif how == "hardlink":
        out = tmp_path / "hard.html"
        os.link(log, out)
    r = _export(log, flag, out, "--force")
    assert r.returncode == 1 and "is the log being exported" in r.stderr and len(r.stderr.splitlines()) == 1
    assert log.read_bytes() == before


def test_export_refuses_a_foreign_file_unless_forced(log: Path, tmp_path: Path) -> None:
    """An existing file that is not a tensormagic export is kept; --force replaces it."""
    out = tmp_path / "notes.html"
    out.write_text("my notes")
    r = _export(log, "--html", out)
    assert r.returncode == 1 and "--force" in r.stderr and out.read_text() == "my notes"
    assert _export(log, "--html", out, "--force").returncode == 0 and "tensormagic log" in out.read_text()


def test_export_rewrites_its_own_outputs(log: Path, tmp_path: Path) -> None:
    """Exporting again over the previous export's files needs no --force."""
    html, trace = tmp_path / "r.html", tmp_path / "t.json"
    assert _export(log, "--html", html, "--chrome", trace).returncode == 0
    r = _export(log, "--html", html, "--chrome", trace)
    assert r.returncode == 0, r.stderr


def test_log_refuses_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    """``track(log="train.py")`` warns once, leaves the script as it was, and still records the block."""
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    with pytest.warns(logfile.LogWarning, match="is not a tensormagic log"):
        with tensormagic.track(log=script) as rec:
            x = torch.ones(2) + 1
    assert script.read_text() == "print('hi')\n" and len(rec.events) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tensormagic.track(log=script):
            x = x + 1  # the same path again: no second warning
    assert script.read_text() == "print('hi')\n"
    logfile.close_all()


def test_log_appends_to_an_existing_log(tmp_path: Path) -> None:
    """An existing tensormagic log (plain or gzip) is appended to as before."""
    for name in ("a.jsonl", "a.jsonl.gz"):
        path = tmp_path / name
        for _ in range(2):
            with tensormagic.track(log=path):
                torch.ones(1)
            logfile.close_all()
        assert len(tensormagic.load_log(path)) == 2
