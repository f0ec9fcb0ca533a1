"""Text meant for a terminal is inert: control characters and bidi overrides from sources, names,
exception messages or a log someone sent print as escapes, never reach the terminal raw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from IPython.utils.capture import capture_output
from testkit import run

import tensormagic
from tensormagic.info import namespace_info, tensor_info
from tensormagic.log import writer as logfile

ESC, BEL, RLO = "\x1b", "\x07", "\u202e"
HOSTILE = f"{ESC}]0;pwned{BEL}{ESC}[2J{RLO}gpj.exe"
RAW = (ESC, BEL, RLO, "\x9b", "\r")


def _assert_inert(text: str) -> None:
    for c in RAW:
        assert c not in text, repr(c)
    assert "\\x1b" in text and "\\u202e" in text


def _hostile_recording() -> tensormagic.Recording:
    d: dict[str, torch.Tensor] = {}
    with pytest.raises(RuntimeError), tensormagic.track(source=f"x = 1  # {HOSTILE}") as rec:
        d[HOSTILE] = torch.zeros(3)
        d[HOSTILE].add_(1)
        raise RuntimeError(f"bad\r{HOSTILE}\x9b")
    return rec


def test_recording_to_text_escapes_control_and_bidi_characters() -> None:
    """``Recording.to_text()`` shows a name and an exception message with ESC, BEL and U+202E as escapes."""
    text = _hostile_recording().to_text()
    _assert_inert(text)
    assert "\\x07" in text


def test_summary_line_is_one_inert_line() -> None:
    """The one-line summary escapes the exception's control characters and stays on one line."""
    rec = _hostile_recording()
    rec.error = f"ValueError: first\nsecond {HOSTILE}"
    line = rec.summary_line()
    _assert_inert(line)
    assert "\n" not in line and "first\\nsecond" in line


def test_tensorinfo_texts_are_inert() -> None:
    """``%tensorinfo``'s text for one tensor and the namespace listing escape a hostile name."""
    t = torch.zeros(2)
    _assert_inert(tensor_info(t, name=HOSTILE).to_text())
    _assert_inert(namespace_info({"d": {HOSTILE: t}}).to_text())


def test_html_stays_escaped() -> None:
    """The HTML report still escapes markup (and keeps the hostile text out of tags)."""
    d = {"<b>x</b>": torch.zeros(1)}
    with tensormagic.track() as rec:
        d["<b>x</b>"].add_(1)
    html = rec.to_html()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_long_name_pads_only_its_own_row() -> None:
    """A 20,000-character name in the ``%tensorinfo`` listing leaves the other rows short."""
    ns = {"a": torch.zeros(1), "b" * 20_000: torch.zeros(1), "c": torch.zeros(1)}
    rows = namespace_info(ns).to_text().splitlines()
    assert len(rows[2]) < 200 and len(rows[4]) < 200
    assert ("b" * 20_000) in rows[3]


def test_tensorinfo_listing_magic_escapes(ip) -> None:
    """``%tensorinfo`` with no argument prints the namespace table with escapes (terminal IPython)."""
    run(ip, "import torch\nd = {}")
    ip.user_ns["d"][HOSTILE] = torch.zeros(2)
    with capture_output() as cap:
        ip.run_line_magic("tensorinfo", "")
    text = cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)
    _assert_inert(text)


@pytest.fixture(scope="module")
def hostile_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inert") / "run.jsonl"
    d: dict[str, torch.Tensor] = {}
    with pytest.raises(RuntimeError), tensormagic.track(log=path, cell=1, source=f"%%trackgrad\n{HOSTILE} = 1"):
        d[HOSTILE] = torch.zeros(3)
        raise RuntimeError(HOSTILE)
    logfile.close_all()
    return path


@pytest.mark.parametrize("command", [["summary"], ["show", "--cell", "1"]])
def test_cli_output_is_inert(hostile_log: Path, command: list[str]) -> None:
    """``summary`` and ``show`` of a log holding escapes print them inert."""
    r = subprocess.run([sys.executable, "-m", "tensormagic", command[0], str(hostile_log), *command[1:]],
                       capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    _assert_inert(r.stdout)


def test_log_warning_is_inert(tmp_path: Path) -> None:
    """The warning about a path that cannot be logged to shows the path's escapes inert."""
    bad = tmp_path / f"no{ESC}[2J{RLO}dir" / "run.jsonl"
    with pytest.warns(logfile.LogWarning) as got:
        with tensormagic.track(log=bad):
            torch.ones(1)
    text = str(got[0].message)
    assert ESC not in text and RLO not in text and "\\x1b" in text


def test_summary_words_agree_with_their_counts(ip) -> None:
    """A cell with one view, one move (cpu to meta) and one cast says "1 view", "1 move", "1 cast"
    in the text report and the panel header, and "1 tensor" where one tensor was made."""
    from tensormagic.views.panel import header_html

    with capture_output():
        run(ip, "%%trackgrad -o rec\na = torch.ones(4)\nv = a[:2]\nm = a.to('meta')\nc = a.double()")
        run(ip, "%%trackgrad -o one\nb = torch.ones(4)")
    words = "1 created, 1 view, 0 in-place, 1 move, 1 cast, 0 backward, 16 B between devices"
    rec = ip.user_ns["rec"]
    assert words in rec.to_text().splitlines()[0] and words in rec.summary_line()
    assert words + " · 4 tensors ·" in header_html(rec)
    assert "0 views, 0 in-place, 0 moves, 0 casts" in ip.user_ns["one"].summary_line()
    assert " · 1 tensor · " in header_html(ip.user_ns["one"])


def test_every_control_and_bidi_character_is_escaped_and_plain_text_kept() -> None:
    """Each C0/DEL/C1 control and bidi or separator character alone in plain text is escaped (C0/C1 as
    \\xNN, the others as \\uNNNN, newline and tab by inert_line only); text without them is unchanged."""
    from tensormagic.views.inert import inert, inert_line

    controls = [c for c in (*range(0x20), *range(0x7F, 0xA0))]
    others = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
    for c in controls + others:
        esc = f"\\x{c:02x}" if c in controls else f"\\u{c:04x}"
        if c == 0x0A:
            esc = "\\n"
        elif c == 0x09:
            esc = "\\t"
        assert inert_line(f"tensormagic · {chr(c)}é") == f"tensormagic · {esc}é", hex(c)
        assert inert_line(f"a{chr(c)}b") == f"a{esc}b", hex(c)
        kept = c in (0x09, 0x0A)
        assert inert(f"a{chr(c)}b") == (f"a{chr(c)}b" if kept else f"a{esc}b"), hex(c)
    plain = "tensormagic · cell 3 · 2 new tensors · 1.0 ms ×2 → ok"
    assert inert_line(plain) == plain and inert(plain) == plain
