"""The panel's tables: Tensors, In-place, Devices & dtypes, Timeline, Diagnostics, as row models
and escaped HTML (no ipywidgets here).  The generic filter/sort/page model is in ``table.py``.
"""

from __future__ import annotations

from typing import Any, Container, Mapping, Sequence

from ..model.events import NO_VERSION, Event, Fold, TensorRef, where_label
from ..model.recording import Recording, TensorRecord
from .common import (
    EXISTED,
    FOLD_WORD,
    describe,
    fmt_bytes,
    fmt_shape,
    kind_word,
    line_groups,
    made_before_words,
    plural,
    short_op,
    write_versions,
)
from .html import fold_row
from .lines import step_labels
from .table import PAGE_SIZE, STYLE, Column, Table, h, nbytes_of

TIMELINE_PAGE = 50


# -- Tensors -------------------------------------------------------------------------------------


class TensorRow:
    """One row of the Tensors tab: a tracked tensor, or a fold (``count`` > 1, ``id`` None).

    Built for every tensor when the panel opens, so it only keeps references: the fields are
    read when a page, a sort or a filter needs them."""

    __slots__ = ("index", "trec", "fold", "step_label")

    def __init__(self, index: int, trec: TensorRecord | None = None, fold: Fold | None = None,
                 step_label: str | None = None) -> None:  # fmt: skip
        self.index, self.trec, self.fold = index, trec, fold
        self.step_label = step_label  # ``xb (step 3)``: its name with the step that made it

    @property
    def id(self) -> str | None:
        return None if self.trec is None else self.trec.id

    @property
    def count(self) -> int:
        return 1 if self.fold is None else self.fold.count

    @property
    def names(self) -> tuple[str, ...]:
        return () if self.trec is None else self.trec.names

    @property
    def label(self) -> str:
        if self.step_label is not None:
            return self.step_label
        if self.trec is not None:
            return self.trec.label
        f = self.fold
        assert f is not None
        return f"({FOLD_WORD.get(f.kind, f.kind)} ×{f.count:,} folded)"

    @property
    def _origin(self) -> Event | None:
        return None if self.trec is None else origin_event(self.trec)

    @property
    def _ref(self) -> TensorRef | None:
        return None if self.trec is None else self.trec.ref

    @property
    def op(self) -> str:
        if self.fold is not None:
            return short_op(self.fold.op)
        e = self._origin
        if e is None:
            return EXISTED if self.trec is not None and self.trec.existed_before else ""
        return short_op(e.op)

    @property
    def line(self) -> int | None:
        if self.fold is not None:
            return self.fold.line
        e = self._origin
        return None if e is None else e.line

    @property
    def where(self) -> str:
        if self.fold is not None:
            f = self.fold
            return where_label(f.line, f.file, f.cell)
        e = self._origin
        if e is None and self.trec is not None and isinstance(self.trec.made_before, tuple):
            cell, file, line, _op = self.trec.made_before
            return f"In[{cell}] line {line}" if cell is not None else where_label(line, file, None)
        return "" if e is None else e.where

    @property
    def module(self) -> str | None:
        e = self._origin
        return None if e is None else e.module

    @property
    def shape(self) -> tuple[int, ...] | None:
        r = self._ref
        return None if r is None else r.shape

    @property
    def dtype(self) -> str:
        r = self._ref
        return "" if r is None else r.dtype

    @property
    def device(self) -> str:
        r = self._ref
        return "" if r is None else r.device

    @property
    def requires_grad(self) -> bool | None:
        r = self._ref
        return None if r is None else r.requires_grad

    @property
    def grad_fn(self) -> str | None:
        r = self._ref
        return None if r is None else r.grad_fn

    @property
    def version(self) -> int | None:
        r = self._ref
        return None if r is None else r.version

    @property
    def nbytes(self) -> int | None:
        r = self._ref
        return None if r is None else nbytes_of(r.shape, r.dtype)


def tensor_rows(rec: Recording) -> list[TensorRow]:
    """A row per tracked tensor in creation order: as many rows as the header counts tensors
    (repeats folded past ``max_events`` are counted by ``tensors_intro`` and on the Timeline)."""
    labels = step_labels(rec)
    return [TensorRow(i, t, None, labels.get(t.id)) for i, t in enumerate(rec.tensors.values())]


def tensors_intro(rec: Recording) -> str:
    """The Tensors tab's note on the tensors folded into counts, or "" when none were."""
    folded = sum(f.count for f in rec.folds if f.kind in ("create", "view", "move"))
    if not folded:
        return ""
    were = "was" if folded == 1 else "were"
    return (f"<div class='tm-muted'>{plural(len(rec.tensors), 'tensor')} listed; {folded:,} more made by "
            f"repeated lines {were} folded into counts (see the Timeline's last page)</div>")  # fmt: skip


def _tensor_search(r: TensorRow) -> str:
    return "\x00".join((*r.names, r.label, r.op, r.module or "", r.dtype, r.device, r.grad_fn or ""))


def _yes(v: bool | None) -> str:
    return "" if v is None else ("✓" if v else "")


TENSOR_COLUMNS: tuple[Column[TensorRow], ...] = (
    Column("#", lambda r: str(r.index + 1), lambda r: r.index, lambda r: "tm-muted"),
    Column("name", lambda r: ", ".join((r.label, *r.names[1:])) if r.names else r.label, lambda r: r.label.lower()),
    Column("op", lambda r: r.op, lambda r: r.op, lambda r: "tm-k-create"),
    Column("line", lambda r: r.where, lambda r: r.line),
    Column("module", lambda r: r.module or "", lambda r: r.module),
    Column("shape", lambda r: "" if r.shape is None else fmt_shape(r.shape),
           lambda r: None if r.shape is None else (len(r.shape), r.shape)),
    Column("dtype", lambda r: r.dtype, lambda r: r.dtype or None),
    Column("device", lambda r: r.device, lambda r: r.device or None),
    Column("grad", lambda r: _yes(r.requires_grad), lambda r: r.requires_grad),
    Column("grad_fn", lambda r: r.grad_fn or "", lambda r: r.grad_fn),
    Column("version", lambda r: "" if r.version is None else "none" if r.version == NO_VERSION else str(r.version),
           lambda r: r.version),  # fmt: skip
    Column("size", lambda r: fmt_bytes(r.nbytes) if r.count == 1 else f"×{r.count:,}",
           lambda r: r.nbytes if r.count == 1 else None),
)  # fmt: skip


def origin_event(trec: TensorRecord) -> Event | None:
    """The event that made a tensor: its creation or view, else the move that produced it
    (``b = a.to(torch.float64)`` makes ``b`` by a move); None for a tensor that existed before
    the block (a later write is never its origin)."""
    if trec.created is not None:
        return trec.created
    return next((e for e in trec.events if e.tensor.id == trec.id and e.kind == "move" and not e.inplace), None)


def tensors_table(rec: Recording, page_size: int = PAGE_SIZE) -> Table[TensorRow]:
    # the module column only where some op ran inside an nn.Module: it is empty otherwise
    has_module = any(e.module for e in rec.events)
    columns = [c for c in TENSOR_COLUMNS if has_module or c.title != "module"]
    return Table(tensor_rows(rec), columns, _tensor_search, page_size=page_size)


# -- In-place, Devices & dtypes ------------------------------------------------------------------


def _aliases_text(e: Event) -> str:
    others = [a.label for a in e.aliases]
    if e.base is not None:
        others.insert(0, e.base.label)
    return ", ".join(dict.fromkeys(others))


INPLACE_COLUMNS: tuple[Column[Event], ...] = (
    Column("line", lambda e: e.where, lambda e: e.line),
    Column("source", lambda e: e.source or ""),
    Column("tensor", lambda e: e.tensor.label, lambda e: e.tensor.label.lower()),  # with its step: _stepped
    Column("op", lambda e: short_op(e.op), lambda e: e.op, lambda e: "tm-k-inplace"),
    Column("version", lambda e: write_versions(e, " → ").removeprefix("version "), lambda e: e.version_after),
    Column("shares memory with", _aliases_text),
)  # fmt: skip


def inplace_table(rec: Recording, page_size: int = PAGE_SIZE) -> Table[Event]:
    """Every write to existing memory, with the names that see the change."""
    rows = [e for e in rec.events if e.kind == "inplace" or (e.kind == "move" and e.inplace)]
    labels = step_labels(rec)
    return Table(rows, _stepped(INPLACE_COLUMNS, labels),
                 lambda e: f"{labels.get(e.tensor.id) or e.tensor.label}\x00{e.op}\x00{e.source or ''}",
                 page_size=page_size)  # fmt: skip


def _stepped(columns: tuple[Column[Event], ...], labels: Mapping[str, str]) -> tuple[Column[Event], ...]:
    """The columns with the tensor named with its step (``step_labels``) where it has one."""
    if not labels:
        return columns
    return tuple(Column(c.title, lambda e: labels.get(e.tensor.id) or e.tensor.label, c.key, c.css)
                 if c.title == "tensor" else c for c in columns)  # fmt: skip


def _direction(e: Event) -> str:
    return f"{e.from_device} → {e.to_device}" if e.from_device != e.to_device else f"{e.to_device} (same)"


def _dtype_change(e: Event) -> str:
    return f"{e.from_dtype} → {e.to_dtype}" if e.from_dtype != e.to_dtype else (e.to_dtype or "")


MOVE_COLUMNS: tuple[Column[Event], ...] = (
    Column("line", lambda e: e.where, lambda e: e.line),
    Column("kind", kind_word, kind_word),
    Column("tensor", lambda e: e.tensor.label, lambda e: e.tensor.label.lower()),
    Column("op", lambda e: short_op(e.op), lambda e: e.op, lambda e: "tm-k-move"),
    Column("direction", _direction, _direction),
    Column("dtype", _dtype_change, _dtype_change),
    Column("bytes", lambda e: fmt_bytes(e.nbytes), lambda e: e.nbytes),
    Column("in place", lambda e: "✓" if e.inplace else ""),
    Column("source", lambda e: e.source or ""),
)  # fmt: skip


def moves_table(rec: Recording, page_size: int = PAGE_SIZE) -> Table[Event]:
    rows = [e for e in rec.events if e.kind == "move"]
    return Table(rows, _stepped(MOVE_COLUMNS, step_labels(rec)), _move_search, page_size=page_size)


def _move_search(e: Event) -> str:
    return f"{e.tensor.label}\x00{e.op}\x00{_direction(e)}\x00{_dtype_change(e)}"


def move_totals_html(rec: Recording) -> str:
    """Moves (between devices) and casts (a dtype change on one device) per direction, with their
    bytes: the header's "N moves, M casts" are the sums of the rows of each kind."""
    totals: dict[tuple[str, str, str], list[int]] = {}
    for e in rec.events:
        if e.kind != "move":
            continue
        device = _direction(e) if e.from_device != e.to_device else "same device"
        key = (kind_word(e), device, _dtype_change(e) if e.from_dtype != e.to_dtype else "same dtype")
        t = totals.setdefault(key, [0, 0])
        t[0] += 1
        t[1] += e.nbytes or 0
    folded = sum(f.count for f in rec.folds if f.kind == "move")
    if not totals and not folded:
        return "<div class='tm-muted'>no device moves or casts in this cell</div>"
    rows = "".join(
        f"<tr><td>{h(k)}</td><td>{h(d)}</td><td>{h(dt)}</td><td>{n:,}</td><td>{h(fmt_bytes(b))}</td></tr>"
        for (k, d, dt), (n, b) in sorted(totals.items(), key=lambda kv: (kv[0][0] != "move", -kv[1][1]))
    )
    if folded:  # the header counts them too: the rows below list the others
        rows += f"<tr><td colspan=3>moves/casts folded (see the Timeline)</td><td>{folded:,}</td><td></td></tr>"
    return ('<table class="tm-t"><thead><tr><th>kind</th><th>direction</th><th>dtype</th><th>count</th>'
            f"<th>bytes</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip


# -- Timeline ------------------------------------------------------------------------------------


def timeline_html(events: Sequence[Event], folds: Sequence[Fold] = (), tracked: Container[str] = (),
                  labels: Mapping[str, str] | None = None, home: int | None = None) -> str:  # fmt: skip
    """Events grouped by source line: the line once, its events under it; the row of an event on
    a ``tracked`` tensor carries its click key; ``labels`` (``step_labels``) names a tensor with its
    step; ``home`` is the recording's cell (another cell's line names its cell)."""
    labels = labels or {}
    parts = ['<table class="tm-t tm-clickable"><tbody>']
    for first, group in line_groups(list(events)):
        src = h(first.source or "")
        parts.append(f"<tr class='tm-src'><td>{h(first.where_in(home))}</td><td colspan=3 title='{src}'>{src}</td></tr>")
        for e in group:
            text = h(describe(e, labels))
            key = f" data-tm='t:{h(e.tensor.id)}'" if e.tensor.id in tracked else ""
            parts.append(
                f"<tr{key}><td class='tm-k-{h(e.kind)}'>{h(kind_word(e))}</td>"
                f"<td title='{h(e.tensor.label)}'>{h(labels.get(e.tensor.id) or e.tensor.label)}</td>"
                f"<td>{h(short_op(e.op))}</td>"
                f"<td title='{text}'>{text}</td></tr>"
            )
    parts.extend(fold_row(f) for f in folds)
    parts.append("</tbody></table>")
    return "".join(parts)


# -- Diagnostics ---------------------------------------------------------------------------------


def diagnostics_html(diagnostics: Sequence[Any]) -> str:
    """Each finding with where, what, and the fix; fields read defensively (a log may be older)."""
    if not diagnostics:
        return "<div class='tm-ok'>✓ no findings for this cell</div>"
    parts = []
    for d in diagnostics:
        sev = str(getattr(d, "severity", "warning") or "warning")
        names = getattr(d, "names", ()) or ()
        ident = getattr(d, "id", None)
        count = int(getattr(d, "count", 1) or 1)
        times = f" <span class='tm-muted'>(×{count:,})</span>" if count > 1 else ""
        head = (f"<span class='tm-sev-word'>{h(sev)}</span> <b>{h(getattr(d, 'where', '?'))}</b>: "
                f"{h(getattr(d, 'message', d))}{times}")  # fmt: skip
        extra = []
        if getattr(d, "source", None):
            extra.append(f"<div><code>{h(d.source)}</code></div>")
        if getattr(d, "fix", None):
            extra.append(f"<div>fix: {h(d.fix)}</div>")
        if names:
            extra.append(f"<div class='tm-muted'>tensors: {h(', '.join(map(str, names)))}</div>")
        if ident:
            extra.append(f"<div class='tm-muted'>{h(ident)}</div>")
        parts.append(f"<div class='tm-diag tm-sev-{h(sev)}'>{head}{''.join(extra)}</div>")
    return "".join(parts)


__all__ = [
    "PAGE_SIZE",
    "STYLE",
    "Column",
    "Table",
    "TensorRow",
    "diagnostics_html",
    "h",
    "inplace_table",
    "made_before_words",
    "move_totals_html",
    "moves_table",
    "tensor_rows",
    "tensors_intro",
    "tensors_table",
    "timeline_html",
]
