"""The log file: writing real recordings, reading them back, damage, concurrency and gzip."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import tensormagic
from tensormagic.log import records as logrecords
from tensormagic.log import writer as logfile
from tensormagic.log.reader import NotALogError, load_log
from tensormagic.log.writer import LogError, LogWarning, LogWriter
from tensormagic.model.events import KINDS, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _release_writers():
    """Each test starts with no writer held (gzip writers keep their file locked)."""
    yield
    logfile.close_all()


def _every_kind(log: Path | None = None, stats: bool = True) -> tensormagic.Recording:
    """A block that produces every event kind: create, view, inplace, move, backward, numpy, compiled."""
    with tensormagic.track(stats=stats, log=log, cell=7, cell_id="abc",
                           source="%%trackgrad\nx = torch.ones(2, 2, requires_grad=True)") as rec:  # fmt: skip
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        v = y.view(4)
        w = torch.zeros(3)
        w.add_(1)
        m = w.to("meta")
        d = w.double()
        a = w.numpy()
        out = (y * y * 3).mean()
        out.backward()
        c = _double_relu(w)
    del v, m, d, a, c
    return rec


def _relu2(u: torch.Tensor) -> torch.Tensor:
    return (u * 2).relu()


_double_relu = torch.compile(_relu2, backend="eager")  # compiled at its first call


def _read_lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_round_trip_every_event_kind(tmp_path: Path) -> None:
    """A recording read back has the same events, tensors, graphs, folds and reports."""
    log = tmp_path / "run.jsonl"
    rec = _every_kind(log)
    assert {e.kind for e in rec.events} == set(KINDS)
    (back,) = load_log(log)
    assert back.events == rec.events
    assert back.folds == rec.folds
    assert list(back.tensors) == list(rec.tensors)
    for tid, t in rec.tensors.items():
        b = back.tensors[tid]
        assert (b.names, b.ref, b.created, b.events, b.recorded_stats) == (
            t.names, t.ref, t.created, t.events, t.recorded_stats)  # fmt: skip
        assert b.tensor() is None
    assert back.graphs == rec.graphs
    assert (back.cell, back.cell_id, back.source, back.failed, back.stats_enabled) == (
        7,
        "abc",
        rec.source,
        False,
        True,
    )
    assert back.to_text() == rec.to_text()
    assert back.to_html() == rec.to_html()


def test_event_to_dict_matches_the_generic_encoder() -> None:
    """Event.to_dict, spelled out for speed, writes exactly what the field-by-field encoder writes."""
    from tensormagic.model.events import _to_dict

    events = _every_kind().events
    assert events and all(e.to_dict() == _to_dict(e) for e in events)
    assert all(list(e.to_dict()) == list(_to_dict(e)) for e in events)  # same key order too


def test_cell_lines_are_the_records_encoded() -> None:
    """Each line the writer assembles is byte for byte ``dumps`` of the same record."""
    rec = _every_kind()
    expected = [logrecords.dumps(r) for r in logrecords.cell_records(rec, "abc/1")]
    assert list(logrecords.cell_lines(rec, "abc/1")) == expected
    assert len(expected) == len(rec.events) + 1


def test_last_refs_is_the_latest_snapshot_of_each_touched_tensor() -> None:
    """last_refs, inlined for speed, keeps what touched_tensors reports, in order of first mention."""
    from tensormagic.model.recording import last_refs, touched_tensors

    events = _every_kind().events
    expected: dict[str, object] = {}
    for e in events:
        for tid, r in touched_tensors(e).items():
            if r is not None:
                expected[tid] = r
    got = last_refs(events)
    assert len(got) > 3 and list(got.items()) == list(expected.items())


def test_grad_record_to_dict_matches_the_generic_encoder() -> None:
    """GradRecord.to_dict, spelled out for speed, writes what the generic encoder writes, key order included."""
    import dataclasses

    from tensormagic.model.events import _to_dict

    grads = [g for e in _every_kind().events for g in e.grads]
    grads.append(dataclasses.replace(grads[0], accumulated=not grads[0].accumulated, grad_id=None))
    assert len(grads) > 1 and all(list(g.to_dict().items()) == list(_to_dict(g).items()) for g in grads)


def test_loaded_recording_answers_queries(tmp_path: Path) -> None:
    """filter, tensor and grad_graph give the same answers on a loaded recording."""
    log = tmp_path / "run.jsonl"
    rec = _every_kind(log, stats=False)
    (back,) = load_log(log)
    assert back.filter(kind="move") == rec.filter(kind="move")
    assert back.filter(op="add_") == rec.filter(op="add_")
    assert back.tensor("y").events == rec.tensor("y").events
    assert (
        back.grad_graph("out").chain()
        == "MeanBackward0 → MulBackward0 → MulBackward0 ⇉ AddBackward0 → AccumulateGrad(x)"
    )
    assert back.grad_graph("out") == rec.grad_graph("out")


def test_folded_events_round_trip(tmp_path: Path) -> None:
    """Counts folded past max_events are logged with the cell and counted back."""
    log = tmp_path / "run.jsonl"
    with tensormagic.track(max_events=5, log=log) as rec:
        x = torch.zeros(3)
        for _ in range(50):
            x.add_(1)
    assert rec.folds
    (back,) = load_log(log)
    assert back.folds == rec.folds and back.counts() == rec.counts()
    assert list(back.tensors) == list(rec.tensors)


def test_failed_cell_round_trip(tmp_path: Path) -> None:
    """A cell that raised is logged as failed, with the exception's type and message."""
    log = tmp_path / "run.jsonl"
    with pytest.raises(ValueError, match="bad: thing"), tensormagic.track(log=log):
        torch.ones(2)
        raise ValueError("bad: thing")
    (cell,) = [r for r in _read_lines(log) if r["type"] == "cell"]
    assert cell["status"] == "error" and cell["error"] == {"type": "ValueError", "message": "bad: thing"}
    (back,) = load_log(log)
    assert back.failed and back.error == "ValueError: bad: thing"


def test_diagnostics_are_logged(tmp_path: Path) -> None:
    """Diagnostics are written with their own to_dict and read back as the same Diagnostic."""
    from tensormagic.model.events import Diagnostic

    rec = _every_kind(stats=False)
    diag = Diagnostic(id="inplace-saved", severity="error", message="in-place <write>", line=3,
                      names=("y",), fix="clone first", lines=(2,))  # fmt: skip
    rec.diagnostics = [diag]
    LogWriter(tmp_path / "d.jsonl").write(rec)
    (back,) = load_log(tmp_path / "d.jsonl")
    assert back.diagnostics == [diag]
    assert "in-place &lt;write&gt;" in back.to_html()


def test_foreign_diagnostics_keep_their_fields(tmp_path: Path) -> None:
    """A diagnostic the event model cannot read back keeps its where/message/fix."""

    class Diag(SimpleNamespace):
        def to_dict(self) -> dict:
            return dict(vars(self))

    rec = _every_kind(stats=False)
    rec.diagnostics = [Diag(where="line 3", message="odd", fix="none")]
    LogWriter(tmp_path / "d.jsonl").write(rec)
    (d,) = load_log(tmp_path / "d.jsonl")[0].diagnostics
    assert (d.where, d.message, d.fix) == ("line 3", "odd", "none")


def test_header_record(tmp_path: Path) -> None:
    """The first record says which process, versions and devices wrote the log."""
    log = tmp_path / "run.jsonl"
    _every_kind(log, stats=False)
    _every_kind(log, stats=False)
    recs = _read_lines(log)
    headers = [r for r in recs if r["type"] == "header"]
    assert len(headers) == 1 and recs[0] is headers[0]
    h = headers[0]
    assert h["format"] == "tensormagic-log" and h["schema_version"] == SCHEMA_VERSION
    assert h["pid"] == os.getpid() and h["torch"] == torch.__version__ and "cpu" in h["devices"]
    assert h["tensormagic"] == tensormagic.__version__ and h["hostname"] and h["python"]
    assert [r["type"] for r in recs].count("cell") == 2


def test_events_carry_a_cell_key(tmp_path: Path) -> None:
    """Every event record names the cell it belongs to; the cell record closes the cell."""
    log = tmp_path / "run.jsonl"
    rec = _every_kind(log, stats=False)
    recs = _read_lines(log)
    events = [r for r in recs if r["type"] == "event"]
    cell = recs[-1]
    assert cell["type"] == "cell" and {e["key"] for e in events} == {cell["key"]}
    assert [e["event"] for e in events] == [e.to_dict() for e in rec.events]


def test_long_cell_is_written_in_chunks(tmp_path: Path) -> None:
    """A writer flushing every 3 records writes the same log as one that writes at once."""
    rec = _every_kind(stats=False)
    LogWriter(tmp_path / "a.jsonl", chunk=3).write(rec)
    LogWriter(tmp_path / "b.jsonl").write(rec)
    a, b = _read_lines(tmp_path / "a.jsonl")[1:], _read_lines(tmp_path / "b.jsonl")[1:]
    assert [r.get("event") for r in a] == [r.get("event") for r in b]
    assert load_log(tmp_path / "a.jsonl")[0].events == rec.events


_APPENDER = """
import sys, time
from tensormagic.model.events import Event, TensorRef
from tensormagic.log.writer import LogWriter
from tensormagic.model.recording import Recording
path, tag, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
ref = TensorRef(id="t1", storage_id="s1", names=(tag,), shape=(4,), dtype="float32", device="cpu",
                requires_grad=False, is_leaf=True, grad_fn=None, version=0)
w = LogWriter(path, chunk=7)
while time.time() < start:
    time.sleep(0.001)
for c in range(100):
    events = tuple(Event(seq=i, kind="create", op="torch.ones", tensor=ref, source=tag * 50) for i in range(100))
    w.write(Recording(events=events, cell=c, source=tag, finished=True))
"""


def test_two_processes_append_to_one_file(tmp_path: Path) -> None:
    """Two processes appending 10,000 event records each leave every line whole."""
    log = tmp_path / "shared.jsonl"
    start = str(time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(log), tag, start]) for tag in ("A", "B")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with open(log, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[-1] == b""
    recs = [json.loads(line) for line in lines[:-1]]
    assert len(recs) == 2 * (1 + 100 + 10_000)
    for tag in ("A", "B"):
        events = [r for r in recs if r["type"] == "event" and r["event"]["tensor"]["names"] == [tag]]
        assert len(events) == 10_000
    loaded = load_log(log)
    assert len(loaded) == 200 and loaded.skipped == 0
    assert all(len(r.events) == 100 for r in loaded)


_GZIP_HOLDER = """
import sys
from tensormagic.model.events import Event, TensorRef
from tensormagic.log.writer import LogWriter
from tensormagic.model.recording import Recording
ref = TensorRef(id="t1", storage_id=None, names=("x",), shape=(), dtype="float32", device="cpu",
                requires_grad=False, is_leaf=True, grad_fn=None, version=0)
rec = Recording(events=(Event(seq=0, kind="create", op="torch.ones", tensor=ref),), finished=True)
w = LogWriter(sys.argv[1])
w.write(rec)
print("ready", flush=True)
sys.stdin.readline()
w.write(rec)
"""


def _track_ones(log: Path) -> tensormagic.Recording:
    with tensormagic.track(log=log) as rec:
        torch.ones(2)
    return rec


def test_second_gzip_writer_is_refused(tmp_path: Path) -> None:
    """While one process writes a .jsonl.gz, another gets a clear error and the file stays whole."""
    log = tmp_path / "run.jsonl.gz"
    holder = subprocess.Popen([sys.executable, "-c", _GZIP_HOLDER, str(log)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(LogError, match="another process is writing this gzip log"):
            LogWriter(log)
        with pytest.warns(LogWarning, match="another process is writing this gzip log"):
            rec = _track_ones(log)
        assert len(rec.events) == 1
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    loaded = load_log(log)
    assert len(loaded) == 2 and loaded.skipped == 0


def test_gzip_write_and_read(tmp_path: Path) -> None:
    """A .jsonl.gz log holds one gzip member per cell and reads back like a plain one."""
    log = tmp_path / "run.jsonl.gz"
    rec1 = _every_kind(log)
    rec2 = _every_kind(log)
    raw = log.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw.count(b"\x1f\x8b\x08") >= 2
    back = load_log(log)
    assert [r.events for r in back] == [rec1.events, rec2.events]
    assert back[1].to_text() == rec2.to_text()


@pytest.mark.parametrize("kind", ["missing folder", "directory"])
def test_unwritable_path_warns_once_and_still_tracks(tmp_path: Path, kind: str) -> None:
    """A log path that cannot be written warns once, clearly; the block runs and is tracked."""
    log = tmp_path / "no" / "such" / "run.jsonl" if kind == "missing folder" else tmp_path
    expected = "does not exist" if kind == "missing folder" else "is a directory"
    with pytest.warns(LogWarning, match=expected) as caught, tensormagic.track(log=log) as rec:
        y = torch.ones(2) + 1
    assert len([w for w in caught if issubclass(w.category, LogWarning)]) == 1
    assert rec.tensor("y").ref.shape == (2,) and y.sum() == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        with tensormagic.track(log=log) as rec2:
            torch.ones(2)
    assert len(rec2.events) == 1


def test_log_warning_is_not_a_tracking_warning() -> None:
    """Log problems use their own category, which the test suite does not turn into errors."""
    assert issubclass(LogWarning, UserWarning)
    assert not issubclass(LogWarning, tensormagic.TrackingWarning)


def test_no_permission_warns(tmp_path: Path) -> None:
    """A place the user may not write to gives the permission warning."""
    if os.geteuid() == 0:
        # root passes permission checks on ordinary folders; sysfs refuses new files even to root
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("running as root without /sys: no place that refuses root")
        log = Path("/sys/kernel/tensormagic-test.jsonl")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        log = folder / "run.jsonl"
    with pytest.warns(LogWarning, match="permission denied"), tensormagic.track(log=log) as rec:
        torch.ones(2)
    assert len(rec.events) == 1


def _two_cells(log: Path) -> None:
    for _ in range(2):
        _every_kind(log, stats=False)


def test_truncated_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    """A log cut inside its last line reads the cells before it and counts the damaged line."""
    log = tmp_path / "run.jsonl"
    _two_cells(log)
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])
    with pytest.warns(LogWarning, match="skipped 1 corrupt or truncated line"):
        back = load_log(log)
    assert back.skipped == 1 and len(back) == 2
    assert back[1].internal_error and "ends before" in back[1].internal_error
    assert len(back[0].events) == len(back[1].events)


def test_corrupt_line_is_skipped_and_counted(tmp_path: Path) -> None:
    """A garbage line in the middle is skipped and counted; everything else is read."""
    log = tmp_path / "run.jsonl"
    _two_cells(log)
    lines = log.read_bytes().split(b"\n")
    lines.insert(3, b"\x00\xff not json {")
    log.write_bytes(b"\n".join(lines))
    with pytest.warns(LogWarning, match="skipped 1"):
        back = load_log(log)
    assert back.skipped == 1 and len(back) == 2 and back[1].internal_error is None


def test_truncated_gzip_is_skipped_and_counted(tmp_path: Path) -> None:
    """A .jsonl.gz cut short reads its complete members and counts the damage."""
    log = tmp_path / "run.jsonl.gz"
    _two_cells(log)
    logfile.close_all()
    data = log.read_bytes()
    log.write_bytes(data[:-30])
    with pytest.warns(LogWarning, match="skipped 1"):
        back = load_log(log)
    assert back.skipped == 1 and len(back) >= 1 and len(back[0].events) > 0


def test_unknown_types_and_keys_are_ignored(tmp_path: Path) -> None:
    """Records of unknown types and unknown keys (a newer writer's) do not break the reader."""
    log = tmp_path / "run.jsonl"
    rec = _every_kind(log, stats=False)
    recs = _read_lines(log)
    for r in recs:
        r["added_later"] = {"x": 1}
        if r["type"] == "event":
            r["event"]["new_field"] = 3
            r["event"]["tensor"]["new_ref_field"] = "z"
    recs.insert(1, {"type": "future-thing", "payload": [1, 2]})
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        back = load_log(log)
    assert back.stats.unknown == 1 and back[0].events == rec.events


def test_newer_schema_says_so(tmp_path: Path) -> None:
    """A log from a newer schema warns clearly and reads what this version understands."""
    log = tmp_path / "run.jsonl"
    _every_kind(log, stats=False)
    recs = _read_lines(log)
    recs[0]["schema_version"] = SCHEMA_VERSION + 1
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.warns(LogWarning, match=f"newer tensormagic \\(log schema {SCHEMA_VERSION + 1}"):
        back = load_log(log)
    assert len(back) == 1 and back.stats.newer_schema == SCHEMA_VERSION + 1


@pytest.mark.parametrize("content", [b'{"a": 1}\n' * 60, b"x,y\n1,2\n", b"\x89PNG\r\n\x1a\n\x00\x00binary"])
def test_not_a_log_is_refused(tmp_path: Path, content: bytes) -> None:
    """A file that is not a tensormagic log raises a clear error."""
    p = tmp_path / "other.jsonl"
    p.write_bytes(content)
    with pytest.raises(NotALogError, match="is not a tensormagic log"):
        load_log(p)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    """A missing file raises FileNotFoundError; an empty file is a log with no cells yet."""
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_log(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert load_log(tmp_path / "empty.jsonl") == []


def test_select_cells(tmp_path: Path) -> None:
    """load_log selects by position, by execution count and the last K cells."""
    log = tmp_path / "run.jsonl"
    for n in (1, 2, 1):
        with tensormagic.track(log=log, cell=n):
            torch.ones(n)
    assert [r.cell for r in load_log(log)] == [1, 2, 1]
    assert load_log(log, cell=2).positions == [2]
    assert load_log(log, exec_count=1).positions == [1, 3]
    assert load_log(log, last=2).positions == [2, 3]
    assert load_log(log, last=0) == []
    assert tensormagic.load_log is load_log


def test_numpy_event_leaves_no_array(tmp_path: Path) -> None:
    """Logging holds no tensor data: only metadata reaches the file."""
    log = tmp_path / "run.jsonl"
    with tensormagic.track(log=log):
        a = torch.arange(5.0).numpy()
    np.testing.assert_array_equal(a, np.arange(5.0))
    text = log.read_text()
    assert "[0.0, 1.0" not in text and "[0,1,2" not in text


def _synthetic(n: int, tag: str = "x") -> tensormagic.Recording:
    from tensormagic.model.events import Event, TensorRef

    ref = TensorRef(id="t1", storage_id="s1", names=(tag,), shape=(4,), dtype="float32", device="cpu",
                    requires_grad=False, is_leaf=True, grad_fn=None, version=0)  # fmt: skip
    events = tuple(
        Event(seq=i, kind="create", op="torch.ones", tensor=ref, source=tag * 200) for i in range(n)
    )
    return tensormagic.Recording(events=events, finished=True)


def test_gzip_cell_larger_than_a_read_block(tmp_path: Path) -> None:
    """A gzip cell that decompresses to several megabytes reads back whole (lines cross blocks)."""
    log = tmp_path / "big.jsonl.gz"
    LogWriter(log).write(_synthetic(12_000))
    (back,) = load_log(log)
    assert len(back.events) == 12_000 and back.events[-1].seq == 11_999


def test_counting_scan_agrees_with_full_parse(tmp_path: Path) -> None:
    """The summary's counting scan gives the counts and bytes moved a full parse gives."""
    from tensormagic.log.reader import iter_cells

    log = tmp_path / "run.jsonl"
    _two_cells(log)
    lines = log.read_bytes().split(b"\n")
    lines[2] = b" " + lines[2]  # framed differently: takes the full parse
    lines.insert(4, b'{"type":"event","key":"x/1","event":{"seq":1,"kind":"create"')  # cut short
    log.write_bytes(b"\n".join(lines))

    def tally(keep: bool) -> list[tuple]:
        return [
            (c.position, c.key, c.all_counts(), c.bytes_moved, c.n_events)
            for c in iter_cells(log, keep_events=keep)
        ]

    assert tally(False) == tally(True)
    assert tally(False)[0][3] == 12 and tally(False)[0][4] == len(load_log(log, warn=False)[0].events)


_WITHOUT_ORJSON = """
import sys
sys.modules["orjson"] = None  # as if it were not installed
from tensormagic.log import writer as logfile, reader as logread, records as logrecords
assert logrecords._orjson is None
from tensormagic.model.events import Event, TensorRef
from tensormagic.model.recording import Recording
ref = TensorRef(id="t1", storage_id=None, names=("é",), shape=(2,), dtype="float32", device="cpu",
                requires_grad=True, is_leaf=True, grad_fn=None, version=0)
rec = Recording(events=(Event(seq=0, kind="create", op="torch.ones", tensor=ref, source="x = 'é'"),),
                source="x = 'é'", finished=True)
logfile.LogWriter(sys.argv[1]).write(rec)
(back,) = logread.load_log(sys.argv[1])
assert back.events == rec.events and back.source == rec.source
print("ok")
"""


def test_log_works_without_orjson(tmp_path: Path) -> None:
    """Without orjson the writer and reader use the standard library, with the same results."""
    out = subprocess.run([sys.executable, "-c", _WITHOUT_ORJSON, str(tmp_path / "run.jsonl")],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    (back,) = load_log(tmp_path / "run.jsonl")  # and orjson reads what the stdlib wrote
    assert back.events[0].tensor.names == ("é",)


def test_memoized_ref_dicts_write_the_same_bytes_as_to_dict() -> None:
    """The writer's memo of TensorRef dicts (one per shared snapshot) gives the lines of to_dict."""
    rec = _every_kind(stats=True)
    refs = logrecords.ref_dicts()
    for e in rec.events:
        assert logrecords.dumps({"event": e.to_dict(refs=refs)}) == logrecords.dumps({"event": e.to_dict()})


def test_undecodable_source_is_still_logged(tmp_path: Path) -> None:
    """A cell source holding a lone surrogate (undecodable bytes) is logged, not dropped."""
    rec = _every_kind(stats=False)
    rec.source = "x = 1  # \udc80"
    LogWriter(tmp_path / "s.jsonl").write(rec)
    (back,) = load_log(tmp_path / "s.jsonl")
    assert back.source == rec.source and back.events == rec.events


def test_append_after_a_cut_line_starts_a_new_line(tmp_path: Path) -> None:
    """A writer appending after a line another writer left unfinished starts on a new line."""
    log = tmp_path / "run.jsonl"
    _every_kind(log, stats=False)
    with open(log, "ab") as f:
        f.write(b'{"type":"event","key":"dead/1","event":{"seq":0,"ki')  # a writer killed mid-line
    logfile.close_all()
    _every_kind(log, stats=False)
    with pytest.warns(LogWarning, match="skipped 1"):
        back = load_log(log)
    assert len(back) == 2 and back[0].counts() == back[1].counts() and not back[1].internal_error


def test_damaged_gzip_member_is_skipped_and_reading_resumes(tmp_path: Path) -> None:
    """A damaged gzip member (one cell) is skipped and counted; the members after it are read."""
    log = tmp_path / "run.jsonl.gz"
    for n in (1, 2, 3):
        with tensormagic.track(log=log, cell=n):
            torch.ones(n)
    logfile.close_all()
    data = bytearray(log.read_bytes())
    starts = [i for i in range(len(data)) if data[i : i + 3] == b"\x1f\x8b\x08"]
    assert len(starts) == 3
    mid = (starts[1] + starts[2]) // 2
    data[mid : mid + 8] = b"\x00" * 8
    log.write_bytes(bytes(data))
    with pytest.warns(LogWarning, match="skipped"):
        back = load_log(log)
    assert [r.cell for r in back] == [1, 3] and back.skipped >= 1


def test_accumulated_gradient_round_trips(tmp_path: Path) -> None:
    """A backward onto a .grad that already holds values is read back as accumulated; the first one is not."""
    log = tmp_path / "acc.jsonl"
    with tensormagic.track(log=log, diagnostics=None) as rec:
        w = torch.ones(3, requires_grad=True)
        (w * 2).sum().backward()  # onto an empty .grad
        (w * 3).sum().backward()  # onto the 2s left by the first: torch sums them
    assert torch.equal(w.grad, torch.full((3,), 5.0))
    (back,) = load_log(log)
    grads = [[(g.tensor.label, g.accumulated) for g in e.grads] for e in back.filter(kind="backward")]
    assert grads == [[("w", False)], [("w", True)]]
    assert back.events == rec.events
