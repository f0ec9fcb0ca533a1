"""The reader skips and counts any line that is not a well-formed record of a known type, whatever
its JSON types; lines and nesting are bounded; gzip reads in linear time."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tensormagic.log import scan as scan_mod
from tensormagic.log.reader import load_log

DATA = Path(__file__).parent / "data"
LINES = (DATA / "log_schema2.jsonl").read_text().splitlines()


def _event(path_in_event: list[str], value: object) -> str:
    d = json.loads(LINES[1])
    target = d["event"]
    for k in path_in_event[:-1]:
        target = target[k]
    target[path_in_event[-1]] = value
    return json.dumps(d)


BAD_EVENTS = [
    _event(["tensor"], None),
    _event(["tensor", "dtype"], None),
    _event(["tensor", "shape"], ["a"]),
    _event(["seq"], "1"),
    _event(["time_us"], "abc"),
    _event(["inputs"], [None]),
    _event(["stats"], {"min": "x"}),
    re.sub(r'"time_us":[0-9.e+-]+', '"time_us":1e400', LINES[1]),
]


@pytest.mark.parametrize("bad", BAD_EVENTS)
def test_event_with_wrong_types_is_skipped_and_counted(tmp_path: Path, bad: str) -> None:
    """An event whose fields are valid JSON of the wrong types is skipped and counted; the rest loads."""
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([LINES[0], bad, *LINES[1:]]) + "\n")
    recs = load_log(path, warn=False)
    assert recs.stats.bad_events == 1 and len(recs) == 4
    for r in recs:
        assert r.to_text()


@pytest.mark.parametrize("field, value", [("duration_s", "abc"), ("exec_count", "x"), ("source", 5),
                                          ("folds", [{"kind": "create", "op": "x", "count": "many"}])])
def test_cell_record_with_wrong_types_does_not_crash(tmp_path: Path, field: str, value: object) -> None:
    """A cell record with a field of the wrong type is skipped and counted, or (folds) its bad part dropped."""
    i = next(i for i, x in enumerate(LINES) if x.startswith('{"type":"cell"'))
    d = json.loads(LINES[i])
    d[field] = value
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*LINES[:i], json.dumps(d), *LINES[i + 1:]]) + "\n")
    recs = load_log(path, warn=False)
    assert recs.stats.bad_cells + (field == "folds") == 1
    for r in recs:
        assert r.to_text() and r.counts()


def test_deep_nesting_is_skipped(tmp_path: Path) -> None:
    """A 10,000-deep nested list is a skipped line, not a RecursionError."""
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join([*LINES, '{"type":"event","key":"k","event":' + "[" * 10_000 + "]" * 10_000 + "}"]) + "\n")
    recs = load_log(path, warn=False)
    assert len(recs) == 4 and recs.stats.skipped + recs.stats.bad_events == 1


def test_overlong_line_is_skipped_in_bounded_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line past MAX_READ_LINE is skipped and counted, plain and gzip; the cells around it load."""
    monkeypatch.setattr(scan_mod, "MAX_READ_LINE", 20_000)
    long = '{"type":"event","key":"x","event":{"note":"' + "a" * 50_000 + '"}}'
    text = "\n".join([*LINES[:3], long, *LINES[3:]]) + "\n"
    plain, gz = tmp_path / "a.jsonl", tmp_path / "a.jsonl.gz"
    plain.write_text(text)
    gz.write_bytes(gzip.compress(text.encode()))
    for p in (plain, gz):
        recs = load_log(p, warn=False)
        assert recs.stats.skipped == 1 and len(recs) == 4, p


def test_gzip_long_line_reads_in_pieces_not_by_rejoining(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A gzip line spanning many blocks is joined once (linear), not re-joined at every block."""
    joins: list[int] = []
    real = scan_mod._Tail.take

    def counting(self, end):  # type: ignore[no-untyped-def]
        joins.append(self.size)
        return real(self, end)

    monkeypatch.setattr(scan_mod._Tail, "take", counting)
    cell = next(x for x in LINES if x.startswith('{"type":"cell"'))
    d = json.loads(cell)
    d["source"] = "x" * 5_000_000
    gz = tmp_path / "long.jsonl.gz"
    gz.write_bytes(gzip.compress(("\n".join([LINES[0], json.dumps(d)]) + "\n").encode(), 1))
    recs = load_log(gz, warn=False)
    assert len(recs) == 1 and len(recs[0].source) == 5_000_000
    assert len(joins) <= 4


def test_summary_of_dev_zero_is_bounded() -> None:
    """``summary /dev/zero`` ends with a one-line error in bounded memory (it has no newline)."""
    code = ("import resource, sys\nresource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
            "from tensormagic.log import scan\nscan.MAX_READ_LINE = 1 << 20\nfrom tensormagic.cli import main\n"
            "sys.exit(main(['summary', '/dev/zero']))")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "not a tensormagic log" in r.stderr


def _mutations() -> list[tuple[str, str, object]]:
    out: list[tuple[str, str, object]] = []
    cell = json.loads(next(x for x in LINES if x.startswith('{"type":"cell"')))
    ev = json.loads(LINES[1])["event"]
    for where, keys in (("event", ev), ("tensor", ev["tensor"]), ("cell", cell), ("graphs", cell["graphs"])):
        out += [(where, k, v) for k in keys if k != "type" for v in (None, "abc", 2**70, [None], {"a": 1})]
    return out


def test_every_field_of_the_wrong_type_loads_and_renders(tmp_path: Path) -> None:
    """Each event, tensor, cell and graph field set to each wrong JSON type: the log still loads,
    and every recording renders as text and HTML."""
    i = next(i for i, x in enumerate(LINES) if x.startswith('{"type":"cell"'))
    path = tmp_path / "m.jsonl"
    for where, key, value in _mutations():
        ev, cell = json.loads(LINES[1]), json.loads(LINES[i])
        target = {"event": ev["event"], "tensor": ev["event"]["tensor"], "cell": cell, "graphs": cell["graphs"]}[where]
        target[key] = value
        lines = list(LINES)
        lines[1], lines[i] = json.dumps(ev), json.dumps(cell)
        path.write_text("\n".join(lines) + "\n")
        for r in load_log(path, warn=False):
            assert r.to_text() and r.to_html() and r.summary_line(), (where, key, value)
