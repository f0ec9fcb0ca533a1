"""Recording: the events of one block, its tensors and autograd graphs, and the queries on them.

A Recording is a snapshot made when the block ends; a Recording read back from a log file is
the same class, without the weak references to live tensors.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Any, Callable, Iterable

from ..model.gradgraph import GraphTable
from .events import KINDS, SEEN, Event, Fold, Stats, TensorRef
from .gradgraph import GradGraph


@dataclass
class TensorRecord:
    """One tracked tensor: its names, the event that created it and every event that touched it."""

    id: str
    names: tuple[str, ...]
    ref: TensorRef
    created: Event | None = None
    events: list[Event] = field(default_factory=list)
    recorded_stats: Stats | None = None
    #: the tensor existed before the block: (cell, file, line, op) where an earlier tracked block
    #: made it, or None when no tracked block saw it made; unset (False) for a tensor the block made
    made_before: tuple[int | None, str | None, int | None, str] | None | bool = False
    #: what tracked cells did to it up to this block's end, in words (``made In[3] line 2
    #: (torch.randn); written In[5] line 4 (add_)``): kept under ``%trackgrad on`` and in the log
    history: str | None = None
    _weak: weakref.ref[Any] | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.names[0] if self.names else self.id

    @property
    def existed_before(self) -> bool:
        """Whether the tensor existed before the block (no event of the block made it)."""
        return self.made_before is not False

    @property
    def alive(self) -> bool:
        return self._weak is not None and self._weak() is not None

    def tensor(self) -> Any:
        """The live tensor, or None once it is freed (or for a recording read from a log)."""
        return None if self._weak is None else self._weak()

    def stats(self, *, sync: bool = True) -> Stats | None:
        """Statistics now, if the tensor is alive (``sync=False`` refuses to read GPU memory);
        else those recorded during the block with ``stats=True``, if any."""
        t = self.tensor()
        if t is not None and (sync or t.device.type in ("cpu", "meta")):
            from ..engine.stats import compute_stats

            return compute_stats(t)
        return self.recorded_stats


def set_before(recs: dict[str, TensorRecord], before: dict[str, Any],
               histories: dict[str, str]) -> dict[str, TensorRecord]:  # fmt: skip
    """Each tensor's ``made_before`` and ``history`` from the recording's tables (the build's, or
    a log's cell record): a tensor an event of the block made keeps ``made_before`` unset."""
    for rid, made in before.items():
        trec = recs.get(rid)
        if trec is not None and trec.created is None:  # a first sight without an op is a creation
            trec.made_before = made
    for rid, words in histories.items():
        trec = recs.get(rid)
        if trec is not None:
            trec.history = words
    return recs


@dataclass(frozen=True)
class Tally:
    """What a summary line counts: events per kind (folded ones included), moves between devices,
    casts on one device, folded moves, bytes moved between devices."""

    counts: dict[str, int]
    moves: int
    casts: int
    folded_moves: int
    moved_bytes: int


_KIND = attrgetter("kind")
_ORIGIN = attrgetter("origin")


class _Built:
    """A field made on first read from what the block recorded (events cost ~10 µs each to
    build, so a block ends without paying that until someone looks)."""

    def __init__(self, empty: Callable[[], Any]) -> None:
        self.empty = empty

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass default: filled per instance below
        pending = obj.__dict__.get("_pending")
        if pending is not None:
            obj._pending = None
            pending(obj)
        value = obj.__dict__.get(self.attr)
        if value is None:
            later = obj.__dict__.get("_pending" + self.attr)  # a field the build left for its first read
            if later is not None:
                obj.__dict__["_pending" + self.attr] = None
                value = obj.__dict__[self.attr] = later(obj)
            else:
                value = obj.__dict__[self.attr] = self.empty()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.attr] = value


class _Later(_Built):
    """A field the block's end leaves for its first read, like ``_Built``'s ``_pending_<name>``,
    but made without the events: its maker reads only what the block's end took."""

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return None  # the dataclass default: filled per instance below
        value = obj.__dict__.get(self.attr)
        if value is None:
            later = obj.__dict__.get("_pending" + self.attr)
            obj.__dict__["_pending" + self.attr] = None
            value = obj.__dict__[self.attr] = later(obj) if later is not None else self.empty()
        return value


@dataclass
class Recording:
    """What a tracked block did.  Filled in when the block ends (events on first read)."""

    events: tuple[Event, ...] = _Built(tuple)  # type: ignore[assignment]
    tensors: dict[str, TensorRecord] = _Built(dict)  # type: ignore[assignment]
    folds: tuple[Fold, ...] = _Built(tuple)  # type: ignore[assignment]
    graphs: GraphTable = field(default_factory=GraphTable)
    cell: int | None = None
    cell_id: str | None = None
    source: str | None = None
    file: str | None = None
    failed: bool = False
    error: str | None = None
    started: float = 0.0
    duration_s: float = 0.0
    stats_enabled: bool = False
    internal_error: str | None = None
    diagnostics: list[Any] = field(default_factory=list)
    #: tensor id -> what the tracker could not read of it and why (an inference tensor's version,
    #: a nested tensor's irregular sizes); the snapshots hold what it could read
    unreadable: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    #: tensor id -> where an earlier tracked block made it (cell, file, line, op), or None when no
    #: tracked block saw it made, for the tensors that existed before the block (``made_before``)
    before: dict[str, Any] = field(default_factory=dict)
    #: tensor id -> its history across tracked blocks at this block's end, in words (``history``);
    #: put in words on first read, from the entries the block's end copied
    histories: dict[str, str] = _Later(dict)  # type: ignore[assignment]
    #: tensors past ``max_events`` that no kept event names and that died in the block: counted
    #: here, not kept (the way ``folds`` counts events)
    folded_tensors: int = 0
    _pending: Callable[[Recording], None] | None = field(default=None, repr=False, compare=False)
    _pending_tensors: Callable[[Recording], dict[str, TensorRecord]] | None = field(
        default=None, repr=False, compare=False)
    _final_refs: dict[str, TensorRef] | None = field(default=None, repr=False, compare=False)
    _pending_histories: Callable[[Recording], dict[str, str]] | None = field(default=None, repr=False,
                                                                               compare=False)

    # -- queries ---------------------------------------------------------------------------
    def filter(self, kind: str | None = None, line: int | None = None, name: str | None = None,
               op: str | None = None, module: str | None = None) -> list[Event]:  # fmt: skip
        """Events matching every given criterion; ``op`` matches a suffix (``add_`` finds
        ``torch.Tensor.add_``), ``module`` a path prefix, ``name`` any tensor the event names."""
        out = []
        for e in self.events:
            if kind is not None and e.kind != kind:
                continue
            if line is not None and e.line != line:
                continue
            if op is not None and not (e.op == op or e.op.endswith("." + op)):
                continue
            if module is not None and not (e.module == module or (e.module or "").startswith(module + ".")):
                continue
            if name is not None and name not in _event_names(e):
                continue
            out.append(e)
        return out

    def tensor(self, key: Any) -> TensorRecord:
        """A tracked tensor by id (``"t3"``), by name (``"y"``, ``"x.grad"``) or by the tensor."""
        if isinstance(key, str):
            rec = self.tensors.get(key)
            if rec is not None:
                return rec
            for rec in self.tensors.values():
                if key in rec.names:
                    return rec
            raise KeyError(f"no tracked tensor named {key!r} in this recording")
        from ..engine import identity

        tid = identity.tensor_id(key)
        if tid is None or tid not in self.tensors:
            raise KeyError("that tensor was not tracked in this recording")
        return self.tensors[tid]

    def final_refs(self) -> dict[str, TensorRef]:
        """Each tracked tensor's snapshot when the block ended, by id: the ``ref`` of each of
        ``tensors``, without making the TensorRecords (what a log writer needs)."""
        self.events  # noqa: B018 - reading it finishes the build, which fills _final_refs
        if self._final_refs is not None:
            return self._final_refs
        return {tid: r.ref for tid, r in self.tensors.items()}

    def grad_graph(self, tensor_or_name: Any) -> GradGraph:
        """The grad_fn graph below a tensor, as captured when the block ended."""
        rec = self.tensor(tensor_or_name)
        return self.graphs.graph(rec.id, rec.label)

    def results(self) -> list[TensorRecord]:
        """Named tensors with a grad_fn graph: the ones whose graphs a report shows."""
        return [r for r in self.tensors.values() if r.id in self.graphs.roots and r.names]

    def top_results(self) -> list[TensorRecord]:
        """Results whose graph is not part of another result's graph (``out``, not ``y``)."""
        results = self.results()
        inner: set[int] = set()
        for r in results:
            root = self.graphs.roots[r.id]
            inner.update(c for c in self.graphs.edges.get(root, ()))
        reach: set[int] = set()
        stack = list(inner)
        while stack:
            n = stack.pop()
            if n in reach:
                continue
            reach.add(n)
            stack.extend(self.graphs.edges.get(n, ()))
        out, seen = [], set()
        for r in results:
            root = self.graphs.roots[r.id]
            if root not in reach and root not in seen:
                seen.add(root)
                out.append(r)
        return out

    def _unbuilt(self) -> Tally | None:
        """The counts of events not made yet (``build.Pending.tally``), or None once they are."""
        pending = self.__dict__.get("_pending")
        tally = getattr(pending, "tally", None)
        return tally() if tally is not None else None

    def counts(self) -> dict[str, int]:
        c = dict.fromkeys(KINDS, 0)
        t = self._unbuilt()
        if t is not None:  # the summary line of a cell nobody opens: no event is made for it
            for kind, n in t.counts.items():
                c[kind] = c.get(kind, 0) + n
            return c
        events = self.events
        for kind, n in Counter(map(_KIND, events)).items():  # at C speed: a panel opens with this
            c[kind] = c.get(kind, 0) + n
        if c["create"]:  # the creates no op made: few or none, found among the events of another origin
            seen = sum(e.first_seen for e in compress(events, map("op".__ne__, map(_ORIGIN, events))))
            if seen:
                c["create"] -= seen
                c[SEEN] = seen
        for f in self.folds:
            c[f.kind] = c.get(f.kind, 0) + f.count
        return c

    def _moves(self) -> list[Event]:
        return list(compress(self.events, map("move".__eq__, map(_KIND, self.events))))

    def move_counts(self) -> tuple[int, int, int]:
        """(moves between devices, casts on one device, folded moves of either sort)."""
        t = self._unbuilt()
        if t is not None:
            return t.moves, t.casts, t.folded_moves
        moves = casts = 0
        for e in self._moves():
            if e.kind == "move":
                if e.crosses_devices:
                    moves += 1
                else:
                    casts += 1
        return moves, casts, sum(f.count for f in self.folds if f.kind == "move")

    def bytes_moved(self) -> int:
        t = self._unbuilt()
        if t is not None:
            return t.moved_bytes
        return sum(e.nbytes or 0 for e in self._moves() if e.crosses_devices)

    @property
    def folded(self) -> int:
        return sum(f.count for f in self.folds)

    # -- display ---------------------------------------------------------------------------
    def to_text(self, *, width: int = 100) -> str:
        from ..views.text import render_recording

        return render_recording(self, width=width)

    def to_html(self) -> str:
        from ..views.html import render_recording

        return render_recording(self)

    def summary_line(self) -> str:
        from ..views.text import summary_line

        return summary_line(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..ipython.display import current_shell_in_kernel

        if current_shell_in_kernel():  # a recording shown by itself in Jupyter opens the panel
            try:
                from ..views.panel_display import recording_bundle
            except ImportError:  # no ipywidgets: text and HTML still say everything
                pass
            else:
                return recording_bundle(self, include, exclude)
        return {"text/plain": self.to_text(), "text/html": self.to_html()}

    def __repr__(self) -> str:
        if not self.finished:
            return "<Recording (block still running)>"
        return f"<Recording {self.summary_line()}>"


def _event_names(e: Event) -> set[str]:
    refs: Iterable[TensorRef | None] = (e.tensor, e.base, e.source_tensor, *e.inputs, *e.aliases)
    names = {n for r in refs if r is not None for n in r.names}
    names.update(r.id for r in refs if r is not None)
    for g in e.grads:
        names.update(g.tensor.names)
    return names


def touched_tensors(e: Event) -> dict[str, TensorRef | None]:
    """Every tracked tensor an event touches, by id, with its snapshot in this event (None for a
    gradient known only by id)."""
    out: dict[str, TensorRef | None] = {e.tensor.id: e.tensor}
    for r in (e.base, e.source_tensor, *e.inputs):
        if r is not None:
            out.setdefault(r.id, r)
    for g in e.grads:
        out.setdefault(g.tensor.id, g.tensor)
        if g.grad_id:
            out.setdefault(g.grad_id, None)
    return out


def last_refs(events: Iterable[Event]) -> dict[str, TensorRef]:
    """The latest snapshot of each tensor the events mention, in order of first mention."""
    refs: dict[str, TensorRef] = {}
    for e in events:
        # touched_tensors(e), inline (a log writes this for every event): the event's own
        # tensor first, then the others in the same order; within one event the first wins
        t = e.tensor
        own = t.id
        refs[own] = t
        for r in (e.base, e.source_tensor):
            if r is not None and r.id != own:
                refs[r.id] = r
        for r in e.inputs:
            if r.id != own:
                refs[r.id] = r
        for g in e.grads:
            if g.tensor.id != own:
                refs[g.tensor.id] = g.tensor
    return refs


def attach_events(recs: dict[str, TensorRecord], events: Iterable[Event]) -> dict[str, TensorRecord]:
    """Give each TensorRecord the events that touched it, its creating event and the statistics
    recorded for it; shared by the live builder and the log reader."""
    for e in events:
        for tid in touched_tensors(e):
            rec = recs.get(tid)
            if rec is None:
                continue
            rec.events.append(e)
            if e.tensor.id == tid and e.kind in ("create", "view") and rec.created is None:
                rec.created = e
            if e.tensor.id == tid and e.stats is not None:
                rec.recorded_stats = e.stats
    return recs
