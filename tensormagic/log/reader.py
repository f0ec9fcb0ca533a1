"""Reading a log back: a streaming scan (flat memory, for ``summary`` and exports) and
:func:`load_log`, which returns the same :class:`Recording` objects the tracker makes.

Readers skip unknown record types and unknown keys, skip and count lines that do not parse (a
truncated last line, a damaged gzip tail), and say so when a newer writer made the file.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from ..model.events import KINDS, SEEN, Event, Fold, TensorRef, first_seen
from ..model.gradgraph import GraphTable
from ..model.recording import Recording, TensorRecord, attach_events, last_refs, set_before
from .scan import LogReadError, NotALogError, ScanStats, scan
from .writer import LogWarning


@dataclass
class LoggedCell:
    """One cell as the scan found it: its cell record (None if the log ends before it) and the
    per-kind counts and bytes moved of its events; ``events`` holds the event dicts if kept."""

    position: int
    key: str
    record: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    bytes_moved: int = 0
    #: ``move`` events that stayed on their device (a dtype change): casts, counted apart
    casts: int = 0
    n_events: int = 0
    events: list[dict[str, Any]] | None = None
    session: dict[str, Any] | None = None

    @property
    def exec_count(self) -> int | None:
        return (self.record or {}).get("exec_count")

    @property
    def complete(self) -> bool:
        return self.record is not None

    def folded_moves(self) -> int:
        """Moves and casts folded past ``max_events`` (a fold keeps no devices: either sort)."""
        return sum(f["count"] for f in (self.record or {}).get("folds") or ()
                   if isinstance(f, dict) and f.get("kind") == "move" and isinstance(f.get("count"), int))  # fmt: skip

    def all_counts(self) -> dict[str, int]:
        """Event counts plus the folded counts the cell record carries."""
        c = dict(self.counts)
        for f in (self.record or {}).get("folds") or ():
            if isinstance(f, dict) and isinstance(f.get("count"), int):
                c[f.get("kind", "?")] = c.get(f.get("kind", "?"), 0) + f["count"]
        return c

    @property
    def warnings(self) -> int:
        return len((self.record or {}).get("diagnostics") or ())

    @property
    def failed(self) -> bool:
        return (self.record or {}).get("status") == "error"

    def first_line(self) -> str:
        """The first line of the cell's body: not blank, not the ``%%trackgrad`` line."""
        return first_body_line((self.record or {}).get("source"))


def first_body_line(source: Any) -> str:
    if not isinstance(source, str):
        return ""
    for line in source.splitlines():
        s = line.strip()
        if s and not s.startswith("%%"):
            return s
    return ""


def iter_cells(path: str | os.PathLike[str], stats: ScanStats | None = None, *,
               keep_events: bool | Callable[[LoggedCell], bool] = False,
               progress: Callable[[int, int], None] | None = None) -> Iterator[LoggedCell]:  # fmt: skip
    """Cells in the order their cell records appear (then any the log ends inside of), holding
    only the open cells' counts.  ``keep_events`` keeps each cell's event dicts (a predicate
    decides per cell, given the cell with its record, before they are handed on)."""
    stats = stats if stats is not None else ScanStats(os.fspath(path))
    keep_any = keep_events is not False
    pause = _GcPause(keep_any)
    with pause:
        yield from _cells(path, stats, keep_events, keep_any, pause, progress)


def _cells(path: str | os.PathLike[str], stats: ScanStats, keep_events: bool | Callable[[LoggedCell], bool],
           keep_any: bool, pause: _GcPause,
           progress: Callable[[int, int], None] | None) -> Iterator[LoggedCell]:  # fmt: skip
    open_cells: dict[str, LoggedCell] = {}
    sessions: dict[str, dict[str, Any]] = {}
    tallies: dict[str, dict[bytes, int]] | None = None if keep_any else {}
    position = 0
    for r in scan(path, stats, tallies=tallies, progress=progress):
        t = r["type"]
        if t == "event":
            key = str(r.get("key"))
            c = open_cells.get(key)
            if c is None:
                c = open_cells[key] = LoggedCell(0, key, events=[] if keep_any else None)
            ev = r["event"]
            kind = ev.get("kind")
            if first_seen(kind, ev.get("origin"), ev.get("note")):  # counted as Recording.counts does
                kind = SEEN
            c.counts[kind] = c.counts.get(kind, 0) + 1
            c.n_events += 1
            if kind == "move":
                if ev.get("from_device") != ev.get("to_device"):
                    n = ev.get("nbytes")
                    c.bytes_moved += n if isinstance(n, int) else 0
                else:
                    c.casts += 1
            if c.events is not None:
                c.events.append(ev)
        elif t == "cell":
            key = str(r.get("key"))
            c = open_cells.pop(key, None) or LoggedCell(0, key, events=[] if keep_any else None)
            if tallies is not None:
                _add_tally(c, tallies.pop(key, None), stats)
            position += 1
            stats.cells = position
            c.position, c.record = position, r
            c.session = sessions.get(key.rsplit("/", 1)[0])
            if callable(keep_events) and not keep_events(c):
                c.events = None
            with pause.resumed():
                yield c
        else:
            sessions[str(r.get("session"))] = r
    for key, tally in (tallies or {}).items():
        _add_tally(open_cells.setdefault(key, LoggedCell(0, key)), tally, stats)
    for c in open_cells.values():  # the log ends inside these cells (the writer stopped)
        position += 1
        stats.cells = position
        c.position = position
        c.session = sessions.get(c.key.rsplit("/", 1)[0])
        if callable(keep_events) and not keep_events(c):
            c.events = None
        with pause.resumed():
            yield c


def _add_tally(c: LoggedCell, tally: dict[bytes, int] | None, stats: ScanStats) -> None:
    """Fold the counts of the event lines the scan counted without parsing into the cell."""
    for kb, n in (tally or {}).items():
        kind = kb.decode(errors="replace")
        if kind not in KINDS and kind != SEEN:
            stats.unknown_kinds += n
            continue
        c.counts[kind] = c.counts.get(kind, 0) + n
        c.n_events += n


class _GcPause:
    """Keeps the cyclic collector off while a reader piles up acyclic dicts and events: each
    collection it would trigger re-walks everything read so far (4× the reading time)."""

    def __init__(self, active: bool) -> None:
        self.active = active and gc.isenabled()

    def __enter__(self) -> None:
        if self.active:
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.active:
            gc.enable()

    @contextmanager
    def resumed(self) -> Iterator[None]:
        if self.active:
            gc.enable()
        try:
            yield
        finally:
            if self.active:
                gc.disable()


# -- back to Recordings ----------------------------------------------------------------------
def to_recording(c: LoggedCell, stats: ScanStats | None = None) -> Recording:
    """The Recording of one logged cell: same class, same views and queries as a live one."""
    r = c.record or {}
    events: list[Event] = []
    with _GcPause(True):
        for d in c.events or ():
            try:
                events.append(Event.from_dict(d))
            except (TypeError, KeyError, ValueError, AttributeError):
                if stats is not None:
                    stats.bad_events += 1
    err = r.get("error") if isinstance(r.get("error"), dict) else None
    error = None
    if err is not None:
        etype, msg = err.get("type") or "Error", err.get("message")
        error = f"{etype}: {msg}" if msg else str(etype)
    internal = r.get("internal_error")
    if c.record is None:
        internal = "the log ends before this cell's end record (the writing process stopped)"
    elif isinstance(r.get("n_events"), int) and r["n_events"] != c.n_events:
        internal = internal or f"{r['n_events'] - c.n_events} of {r['n_events']} events missing from the log"
    rec = Recording(
        events=tuple(events),
        folds=tuple(_folds(r.get("folds"))),
        graphs=_graphs(r.get("graphs")),
        cell=r.get("exec_count"),
        cell_id=r.get("cell_id"),
        source=r.get("source"),
        file=r.get("file"),
        failed=r.get("status") == "error",
        error=error,
        started=float(r.get("started") or 0.0),
        duration_s=float(r.get("duration_s") or 0.0),
        stats_enabled=bool(r.get("stats_enabled")),
        internal_error=internal,
        unreadable={str(k): str(v) for k, v in (r.get("unreadable") or {}).items()} if isinstance(
            r.get("unreadable"), dict) else {},
        folded_tensors=_count(r.get("folded_tensors")),
        diagnostics=[_diagnostic(d) for d in r.get("diagnostics") or () if _diagnostic_ok(d)],
        finished=True,
    )
    rec.before, rec.histories = _before(r.get("before")), _histories(r.get("histories"))
    rec.tensors = set_before(rebuild_tensors(rec.events, r.get("tensors")), rec.before, rec.histories)
    return rec


def _before(d: Any) -> dict[str, Any]:
    """A cell record's ``before`` (schema 3): tensor id -> (cell, file, line, op) or None; an entry
    of another shape is read as "existed before", without where."""
    out: dict[str, Any] = {}
    for k, v in (d.items() if isinstance(d, dict) else ()):
        ok = (isinstance(v, list) and len(v) == 4 and all(x is None or isinstance(x, int) for x in (v[0], v[2]))
              and (v[1] is None or isinstance(v[1], str)) and isinstance(v[3], str))  # fmt: skip
        out[str(k)] = tuple(v) if ok else None
    return out


def _histories(d: Any) -> dict[str, str]:
    return {str(k): v for k, v in d.items() if isinstance(v, str)} if isinstance(d, dict) else {}


def _count(v: Any) -> int:
    return v if type(v) is int and v >= 0 else 0


def rebuild_tensors(events: tuple[Event, ...], table: Any) -> dict[str, TensorRecord]:
    """TensorRecords from the events (tensors are gone: no weak references), in the writer's
    order; a table entry is an id (its latest snapshot in the events) or a full TensorRef."""
    derived = last_refs(events)
    recs: dict[str, TensorRecord] = {}
    items: list[Any] = list(table) if isinstance(table, list) else list(derived)
    for item in items:
        try:
            ref = derived.get(item) if isinstance(item, str) else TensorRef.from_dict(item)
        except (TypeError, KeyError, ValueError, AttributeError):
            ref = None
        if ref is not None:
            recs[ref.id] = TensorRecord(id=ref.id, names=ref.names, ref=ref)
    return attach_events(recs, events)


def _folds(items: Any) -> list[Fold]:
    out = []
    for d in items if isinstance(items, list) else ():
        if not _fold_ok(d):
            continue
        try:
            out.append(Fold.from_dict(d))
        except (TypeError, KeyError, ValueError, AttributeError):
            continue
    return out


def _fold_ok(d: Any) -> bool:
    return (isinstance(d, dict) and d.get("kind") in KINDS and type(d.get("op")) is str
            and type(d.get("count")) is int and d["count"] >= 0
            and all(d.get(k) is None or type(d[k]) is int for k in ("line", "cell"))
            and all(d.get(k) is None or type(d[k]) is str for k in ("source", "file")))  # fmt: skip


def _graphs(d: Any) -> GraphTable:
    """The cell's graphs, or none when a field is of the wrong type (edges and roots may name
    nodes a truncated graph left out: the views show those as "…")."""
    try:
        g = GraphTable.from_dict(d) if isinstance(d, dict) else GraphTable()
    except (TypeError, KeyError, ValueError, AttributeError):
        return GraphTable()
    return g if _graph_ok(g) else GraphTable()


def _graph_ok(g: GraphTable) -> bool:
    nodes = g.nodes
    for nid, n in nodes.items():
        if type(nid) is not int or type(n.name) is not str or not all(type(t) is str for t in n.tensors):
            return False
        if n.leaf is not None and type(n.leaf) is not str:
            return False
    for k, kids in g.edges.items():
        if type(k) is not int or not all(type(c) is int for c in kids):
            return False
    return all(type(k) is str and type(v) is int for k, v in g.roots.items())


def _diagnostic_ok(d: Any) -> bool:
    """A diagnostic whose fields the views read are text (or absent)."""
    if not isinstance(d, dict):
        return False
    text = all(d.get(k) is None or type(d[k]) is str for k in ("id", "severity", "message", "fix", "where", "source",
                                                                "file"))  # fmt: skip
    ints = all(d.get(k) is None or type(d[k]) is int for k in ("line", "cell", "count"))
    lists = all(d.get(k) is None or type(d[k]) is list for k in ("names", "lines"))
    return text and ints and lists


def _diagnostic(d: dict[str, Any]) -> Any:
    """A ``Diagnostic`` of the event model when the dict is one, else its plain fields."""
    from ..model import events

    cls = getattr(events, "Diagnostic", None)
    if cls is not None:
        try:
            return cls.from_dict(d)
        except (TypeError, KeyError, ValueError, AttributeError):
            pass  # written by something older or foreign: keep what it says
    return SimpleNamespace(**{"where": "?", "message": "", "fix": None, **d})


class LoadedLog(list):  # type: ignore[type-arg]
    """The recordings of a log (a list), with what the reader met: ``stats`` (skipped lines,
    headers, a newer schema) and each recording's cell ``positions`` (1-based, in file order)."""

    def __init__(self, items: list[Recording], stats: ScanStats, positions: list[int]) -> None:
        super().__init__(items)
        self.stats = stats
        self.positions = positions

    @property
    def skipped(self) -> int:
        return self.stats.skipped


def load_log(path: str | os.PathLike[str], *, cell: int | None = None, exec_count: int | None = None,
             last: int | None = None, warn: bool = True) -> LoadedLog:  # fmt: skip
    """The recordings of a log file, one per logged cell, oldest first.

    ``cell`` selects by 1-based position in the file, ``exec_count`` by execution count (several
    kernels may repeat one), ``last`` keeps the last K.  Lines that do not parse are skipped and
    counted (``.skipped``); with ``warn`` a :class:`LogWarning` says so, and says when a newer
    tensormagic wrote the file.  Raises ``FileNotFoundError`` or :class:`NotALogError`."""

    def wanted(c: LoggedCell) -> bool:
        return (cell is None or c.position == cell) and (exec_count is None or c.exec_count == exec_count)

    stats = ScanStats(os.fspath(path))
    kept: deque[tuple[int, Recording]] = deque(maxlen=max(last, 0) if last is not None else None)
    for c in iter_cells(path, stats, keep_events=wanted):
        if wanted(c) and kept.maxlen != 0:
            kept.append((c.position, to_recording(c, stats)))
    recs = [r for _, r in kept]
    positions = [p for p, _ in kept]
    if warn:
        for note in stats.notes():
            warnings.warn(note, LogWarning, stacklevel=2)
    return LoadedLog(recs, stats, positions)


__all__ = [
    "LoadedLog",
    "LogReadError",
    "LoggedCell",
    "NotALogError",
    "ScanStats",
    "first_body_line",
    "iter_cells",
    "load_log",
    "rebuild_tensors",
    "scan",
    "to_recording",
]
