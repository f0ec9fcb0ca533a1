"""The Lines view and the step history: a recording summed up per source line × op, and the
named tensors over the iterations of a loop.

A 100-step training loop records thousands of events that repeat the same few lines; a person
reads it as "what does each line do, how often, with what shapes and bytes".  Everything here is
computed from the recorded events (never from live tensors: no GPU synchronisation) and kept as
plain data; ``panel_tables`` turns it into HTML.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import Any, Sequence

from ..model.events import BLOCK_END, END_SEEN, Event, Stats, where_label
from ..model.recording import Recording
from .common import fit
from .table import nbytes_of

#: Distinct shapes / dtypes listed per row; past these a row says "+N more".
MAX_SHAPES = 3
#: Named tensors shown in the step history, and steps kept per tensor (oldest dropped first).
MAX_HISTORY_TENSORS = 200
MAX_STEPS = 2_000

LineKey = tuple[Any, Any, Any, str]
_LINE_OP = attrgetter("cell", "file", "line", "op")
_KIND = attrgetter("kind")
_TENSOR = attrgetter("tensor")
_TIME = attrgetter("time_us")
_ORIGIN = attrgetter("origin")
_SHAPE_DTYPE = attrgetter("shape", "dtype")
_MADE = ("create", "view")


class LineRow:
    """One source line × op: what every event of that op on that line did, summed.

    Opening a panel only groups the events; the sums are made when a row is first shown, sorted
    on or clicked (a page shows 25 rows of perhaps thousands)."""

    __slots__ = ("index", "line", "cell", "file", "source", "op", "events", "folded", "diagnostics", "_t", "home")

    def __init__(self, index: int, line: int | None, cell: int | None, file: str | None, source: str,
                 op: str, home: int | None = None) -> None:  # fmt: skip
        self.index, self.line, self.cell, self.file, self.source, self.op = index, line, cell, file, source, op
        self.home = home  # the recording's cell: another cell's line says which
        self.events: list[Event] = []
        self.folded = 0
        self.diagnostics: list[str] = []
        self._t: _Tally | None = None

    @property
    def where(self) -> str:
        if self.line is None and self.events and all(e.note == END_SEEN for e in self.events):
            return BLOCK_END  # tensors the block's end found under a name, that no line showed
        return where_label(self.line, self.file, self.cell, self.home)

    @property
    def count(self) -> int:
        """Events of this op on this line, folded repeats included."""
        return len(self.events) + self.folded

    @property
    def calls(self) -> int:
        """Calls of this op on this line among the kept events (folded repeats are counted as
        events only: ``folded``).  A call's records share its time (``Tracker.one_call``)."""
        return self.tally.calls

    @property
    def tally(self) -> _Tally:
        if self._t is None:
            self._t = _tally(self.events)
        return self._t

    made = property(lambda self: self.tally.made)
    seen = property(lambda self: self.tally.seen)
    shapes = property(lambda self: self.tally.shapes)
    dtypes = property(lambda self: self.tally.dtypes)
    allocated = property(lambda self: self.tally.allocated)
    writes = property(lambda self: self.tally.writes)
    moves = property(lambda self: self.tally.moves)
    moved_bytes = property(lambda self: self.tally.moved_bytes)
    casts = property(lambda self: self.tally.casts)
    cast_bytes = property(lambda self: self.tally.cast_bytes)
    backward = property(lambda self: self.tally.backward)


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    made: int = 0
    seen: int = 0
    shapes: dict[tuple[int, ...], int] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    allocated: int = 0
    writes: int = 0
    moves: int = 0
    moved_bytes: int = 0
    casts: int = 0
    cast_bytes: int = 0
    backward: int = 0


def _made_here(e: Event) -> bool:
    """Whether a create event's tensor was made by its call (an op, or backward's gradient)."""
    return e.origin == "op" or (e.note or "").startswith("gradient")


def _tally(events: Sequence[Event]) -> _Tally:
    # Counters over attribute getters: a row of a 100,000-event loop is summed in a few passes at
    # C speed, not one Python loop doing every test per event
    t = _Tally()
    kinds = Counter(map(_KIND, events))
    # a create of origin "seen" is a tensor first met here that no recorded op made (made before
    # the block, or where no mode sees): the call did not make it and it is no call of its own.
    # Gradients backward filled in are "seen" too, and backward did allocate them.
    # at C speed: the events of another origin than "op" (few, or none), then which of them to drop
    others = list(compress(events, map("op".__ne__, map(_ORIGIN, events)))) if kinds["create"] else []
    seen = [e for e in others if e.kind == "create" and not _made_here(e)]
    t.seen = len(seen)
    if seen:
        seen_ids = set(map(id, seen))
        events = [e for e in events if id(e) not in seen_ids]
    t.calls = len(set(map(_TIME, events)))
    n_made = kinds["create"] + kinds["view"] - t.seen
    # the usual row is one kind of event: then every event's tensor is one it made
    made = list(map(_TENSOR, events)) if n_made == len(events) else [e.tensor for e in events if e.kind in _MADE]
    t.made = n_made
    both = Counter(map(_SHAPE_DTYPE, made))  # few distinct (shape, dtype): everything else is per pair
    for (shape, dtype), n in both.most_common():
        if shape in t.shapes or len(t.shapes) <= MAX_SHAPES:
            t.shapes[shape] = t.shapes.get(shape, 0) + n
        t.dtypes[dtype] = t.dtypes.get(dtype, 0) + n
    if kinds["create"] > t.seen:
        # a view shares its base's memory: it allocates nothing
        if kinds["create"] - t.seen != n_made:
            both = Counter(map(_SHAPE_DTYPE, [e.tensor for e in events if e.kind == "create"]))
        t.allocated = sum((nbytes_of(s, d) or 0) * n for (s, d), n in both.items())
    t.writes = kinds["inplace"]
    t.backward = kinds["backward"]
    if kinds["move"]:
        for e in events:
            if e.kind == "move":
                if e.crosses_devices:  # as the header counts: a same-device change is a cast
                    t.moves += 1
                    t.moved_bytes += e.nbytes or 0
                else:
                    t.casts += 1
                    t.cast_bytes += e.nbytes or 0
                t.writes += e.inplace
    return t


def line_rows(rec: Recording) -> list[LineRow]:
    """One row per (source line, op), in order of first appearance; folds add to their row."""
    rows: dict[LineKey, LineRow] = {}
    events = rec.events
    for key, e in zip(map(_LINE_OP, events), events):
        row = rows.get(key)
        if row is None:
            row = rows[key] = LineRow(len(rows), e.line, e.cell, e.file, e.source or "", e.op, rec.cell)
        row.events.append(e)
    for f in rec.folds:
        key = (f.cell, f.file, f.line, f.op)
        row = rows.get(key)
        if row is None:
            row = rows[key] = LineRow(len(rows), f.line, f.cell, f.file, f.source or "", f.op, rec.cell)
        row.folded += f.count
    first_of_line: dict[tuple[Any, Any, Any], LineRow] = {}
    for row in rows.values():
        first_of_line.setdefault((row.cell, row.file, row.line), row)
    for d in rec.diagnostics:
        row = first_of_line.get((getattr(d, "cell", None), getattr(d, "file", None), getattr(d, "line", None)))
        if row is not None:
            row.diagnostics.append(str(getattr(d, "id", "?")))
    return list(rows.values())


def has_steps(rec: Recording) -> bool:
    """Whether the Steps tab has something to show: a loop, and a backward call or a write to a
    named tensor (a cheap test: ``step_history`` runs when the tab opens)."""
    return has_loops(rec) and any(e.kind == "backward" or (e.kind == "inplace" and e.tensor.names)
                                  for e in rec.events)  # fmt: skip


def has_loops(rec: Recording) -> bool:
    """Whether some line ran in more than one separate run of events (a loop, or a repeated call)."""
    if rec.folds:
        return True
    seen: set[tuple[Any, Any, Any]] = set()
    last = None
    for e in rec.events:
        k = (e.cell, e.file, e.line)
        if k != last:
            if k in seen:
                return True
            seen.add(k)
            last = k
    return False


# -- steps ----------------------------------------------------------------------------------------


def step_starts(events: Sequence[Event]) -> list[int]:
    """Indices into ``events`` where each iteration of the outermost loop begins.

    The loop's head is the first line that comes back after other lines ran: each new run of
    that line starts a step.  No repeated line: no steps (an empty list).  Nor where a line that
    runs in a step before the last never runs in a later one: the head then came back from
    separate calls (a function called on line 2 and again on line 4, with line 3 between them),
    not from a loop, and the calls are no steps."""
    runs: list[tuple[int, tuple[Any, Any, Any]]] = []
    last = None
    for i, e in enumerate(events):
        k = (e.cell, e.file, e.line)
        if k != last:
            runs.append((i, k))
            last = k
    seen: dict[tuple[Any, Any, Any], int] = {}
    head = None
    for i, k in runs:
        if k in seen:
            head = k
            break
        seen[k] = i
    if head is None:
        return []
    starts = [i for i, k in runs if k == head]
    # the step of each run: lines seen again in a later step are the loop's body
    last_step: dict[tuple[Any, Any, Any], int] = {}
    first_step: dict[tuple[Any, Any, Any], int] = {}
    step = -1
    for _i, k in runs:
        if k == head:
            step += 1
        if step >= 0:
            first_step.setdefault(k, step)
            last_step[k] = step
    final = len(starts) - 1
    if any(first_step[k] == last_step[k] < final for k in first_step):
        return []
    return starts


#: names longer than this are cut before the step is added (a label stays one short line)
MAX_STEP_NAME = 60


def step_labels(rec: Recording) -> dict[str, str]:
    """Tensor id -> its name with the step that made it (``xb (step 3)``, ``model.0.weight.grad
    (step 2)``), for the names that tensors made in two or more steps of the loop share (a loop
    target, each step's gradient with ``set_to_none=True``); the first step is step 1.  A name
    made in one step only, or outside the loop, keeps no step, nor does a library call's
    ``… temporary``, nor any tensor of a recording with folded events.  Computed once per recording."""
    cached = rec.__dict__.get("_step_labels")
    if cached is not None:
        return cached
    out: dict[str, str] = {}
    events = rec.events
    # past max_events the repeats are folded away: counting the loop's head among the events kept
    # would give a later step a wrong number, so no step is stated then
    starts = step_starts(events) if not rec.folds else []
    if starts:
        made: dict[str, list[tuple[str, int]]] = {}  # name -> (tensor id, step) of each tensor made
        # the loop's lines: those of the steps before the last.  In the last step, a line not
        # among them runs after the loop (``val = model(X)`` below it), in no step
        body = {(e.cell, e.file, e.line) for e in events[starts[0]:starts[-1]]}
        step = 0
        nxt = starts[0]
        for i, e in enumerate(events):
            while i >= nxt:  # past the start of the next step
                step += 1
                nxt = starts[step] if step < len(starts) else len(events) + 1
            if step == len(starts) and (e.cell, e.file, e.line) not in body:
                continue
            if step and e.kind in _MADE_STEP and not e.inplace and e.tensor.names:
                name = e.tensor.names[0]
                if not name.endswith(" temporary"):  # many a step, made inside a call: no one looks them up
                    made.setdefault(name, []).append((e.tensor.id, step))
        for name, tensors in made.items():
            if len({st for _tid, st in tensors}) > 1:
                short = fit(name, MAX_STEP_NAME)
                for tid, st in tensors:
                    out.setdefault(tid, f"{short} (step {st:,})")
    rec.__dict__["_step_labels"] = out
    return out


_MADE_STEP = ("create", "view", "move")


def shown_label(rec: Recording, ref: Any) -> str:
    """A tensor's label as the views show it: with its step where ``step_labels`` gives one."""
    return step_labels(rec).get(ref.id) or ref.label


def _norm(s: Stats | None) -> float | None:
    """The L2 norm from recorded statistics: sum(x²) = (n-1)·std² + n·mean² (torch's std is unbiased)."""
    if s is None or s.mean is None or s.numel == 0 or s.nan or s.inf:
        return None
    std = s.std if s.std is not None and not math.isnan(s.std) else 0.0
    total = (s.numel - 1) * std * std + s.numel * s.mean * s.mean
    return math.sqrt(max(total, 0.0))


@dataclass(slots=True)
class StepHistory:
    """One named tensor over the steps: its version, and mean and norm where --stats recorded them."""

    name: str
    tensor_id: str
    versions: list[int | None]
    means: list[float | None]
    norms: list[float | None]
    grad: bool = False


def step_history(rec: Recording) -> tuple[int, list[StepHistory]]:
    """(number of steps, the history of each named tensor written during the loop, and of the
    gradients they received), from the recorded events only."""
    events = rec.events
    starts = step_starts(events)
    if not starts:
        return 0, []
    starts = starts[-MAX_STEPS:]
    n = len(starts)
    bounds = [*starts, len(events)]
    names = {tid: t.label for tid, t in rec.tensors.items() if t.names}
    hist: dict[str, StepHistory] = {}

    def slot(key: str, name: str, tid: str, grad: bool) -> StepHistory:
        h = hist.get(key)
        if h is None:
            if len(hist) >= MAX_HISTORY_TENSORS:
                raise KeyError(key)
            h = hist[key] = StepHistory(name, tid, [None] * n, [None] * n, [None] * n, grad)
        return h

    created_stats = {e.tensor.id: e.stats for e in events if e.kind == "create" and e.stats is not None}
    body = {(e.cell, e.file, e.line) for e in events[starts[0] : starts[-1]]}  # as in step_labels
    for step in range(n):
        for e in events[bounds[step] : bounds[step + 1]]:
            if step == n - 1 and (e.cell, e.file, e.line) not in body:
                continue  # a line after the loop: in no step
            try:
                if e.kind == "inplace" and e.tensor.id in names:
                    h = slot(e.tensor.id, names[e.tensor.id], e.tensor.id, False)
                    h.versions[step] = e.tensor.version
                    if e.stats is not None:
                        h.means[step] = e.stats.mean
                        h.norms[step] = _norm(e.stats)
                elif e.kind == "backward":
                    for g in e.grads:
                        name = g.tensor.label + ".grad"
                        h = slot("grad:" + g.tensor.id, name, g.grad_id or "", True)
                        h.versions[step] = 1 if g.accumulated else 0
                        h.tensor_id = g.grad_id or h.tensor_id  # the card shows the latest gradient
                        s = created_stats.get(g.grad_id or "")
                        if s is not None:
                            h.means[step] = s.mean
                            h.norms[step] = _norm(s)
            except KeyError:
                continue  # past MAX_HISTORY_TENSORS: the table says how many it shows
    # the tensors first, then the gradients they received (both in order of first appearance)
    return n, sorted(hist.values(), key=lambda s: s.grad)


__all__ = ["LineRow", "StepHistory", "has_loops", "has_steps", "line_rows", "shown_label", "step_history", "step_labels",
           "step_starts"]
