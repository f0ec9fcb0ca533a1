"""The panel's tables as plain data and escaped HTML: no ipywidgets here, so they test fast.

A table is a list of row objects plus column specs; filtering, sorting and paging work on the
row objects and only the visible page is ever formatted, so a 100,000-row table costs one pass
to build its rows and a few dozen rows of HTML per page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

from ..events import Event, Fold, TensorRef
from ..recording import Recording, TensorRecord
from .common import KIND_WORD, describe, fmt_bytes, fmt_shape, line_groups, short_op

PAGE_SIZE = 25
TIMELINE_PAGE = 100

R = TypeVar("R")

ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
    "complex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}  # fmt: skip

STYLE = """<style>
.tm-panel{font-size:12px}
.tm-panel .widget-html-content{line-height:1.45}
.tm-panel table.tm-t{border-collapse:collapse;font-family:var(--jp-code-font-family,ui-monospace,monospace);
 font-size:12px;width:100%}
.tm-panel table.tm-t th{text-align:left;padding:2px 8px;border-bottom:1px solid rgba(127,127,127,.5);
 white-space:nowrap}
.tm-panel table.tm-t td{padding:1px 8px;vertical-align:top;white-space:nowrap;max-width:28em;
 overflow:hidden;text-overflow:ellipsis}
.tm-panel table.tm-t tr:nth-child(even) td{background:rgba(127,127,127,.07)}
.tm-panel .tm-src td{background:rgba(127,127,127,.16)!important;font-weight:600}
.tm-panel .tm-muted{opacity:.65}
.tm-panel .tm-k-create{color:#1a7f37}.tm-panel .tm-k-inplace{color:#bc4c00}
.tm-panel .tm-k-move{color:#0969da}.tm-panel .tm-k-backward{color:#8250df}
.tm-panel .tm-k-view{color:#6e7781}.tm-panel .tm-k-numpy{color:#9a6700}
.tm-panel .tm-head{font-size:13px;padding:2px 0 4px 0}
.tm-panel .tm-badge{display:inline-block;margin-left:8px;padding:0 8px;border-radius:9px;
 background:#cf222e;color:#fff;font-weight:600}
.tm-panel .tm-ok{color:#1a7f37}.tm-panel .tm-warn{color:#cf222e}
.tm-panel .tm-card{border:1px solid rgba(127,127,127,.45);border-radius:6px;padding:6px 10px;
 margin-top:4px}
.tm-panel .tm-card h4{margin:0 0 4px 0;font-size:13px}
.tm-panel .tm-card table td{padding:0 10px 0 0;vertical-align:top}
.tm-panel .tm-diag{border-left:3px solid #cf222e;padding:2px 8px;margin:4px 0}
.tm-panel .tm-diag.tm-sev-info{border-left-color:#0969da}
.tm-panel .tm-diag.tm-sev-warning{border-left-color:#bc4c00}
.tm-panel .tm-graph svg{max-width:100%;height:auto}
.tm-panel pre{margin:2px 0}
</style>"""


def h(value: object) -> str:
    """Escape anything shown in HTML: names, source lines and op names come from user code."""
    return escape("" if value is None else str(value), quote=True)


def nbytes_of(shape: tuple[int, ...], dtype: str) -> int | None:
    size = ITEMSIZE.get(dtype)
    if size is None:
        return None
    n = size
    for s in shape:
        n *= s
    return n


# -- a generic table model: filter, sort, page ---------------------------------------------------


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column: its title, the text of a cell, and a sort key (None: not sortable)."""

    title: str
    text: Callable[[R], str]
    key: Callable[[R], Any] | None = None
    css: Callable[[R], str] | None = None


@dataclass
class Table(Generic[R]):
    """Rows, their columns and the view state (filter text, sort, page) as plain data."""

    rows: Sequence[R]
    columns: Sequence[Column[R]]
    search_text: Callable[[R], str]
    page_size: int = PAGE_SIZE
    query: str = ""
    sort_by: str | None = None
    descending: bool = False
    page: int = 0
    _view: list[R] | None = field(default=None, repr=False)
    _search: list[str] | None = field(default=None, repr=False)

    def set_query(self, text: str) -> None:
        self.query, self.page, self._view = text, 0, None

    def set_sort(self, column: str | None, descending: bool = False) -> None:
        self.sort_by, self.descending, self.page, self._view = column, descending, 0, None

    @property
    def view(self) -> list[R]:
        """The rows that pass the filter, in the chosen order."""
        if self._view is None:
            self._view = self._compute()
        return self._view

    def _compute(self) -> list[R]:
        words = self.query.lower().split()
        if words:
            if self._search is None:  # built on the first filter only: opening stays cheap
                self._search = [self.search_text(r).lower() for r in self.rows]
            rows = [r for r, s in zip(self.rows, self._search) if all(w in s for w in words)]
        else:
            rows = list(self.rows)
        col = next((c for c in self.columns if c.title == self.sort_by and c.key is not None), None)
        if col is not None:
            key = col.key
            assert key is not None
            # None sorts last either way: a missing module or line is not "smallest"
            present = [r for r in rows if key(r) is not None]
            missing = [r for r in rows if key(r) is None]
            present.sort(key=key, reverse=self.descending)
            rows = present + missing
        return rows

    @property
    def total(self) -> int:
        return len(self.view)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    def go(self, page: int) -> None:
        self.page = min(max(0, page), self.pages - 1)

    def page_rows(self) -> list[R]:
        start = self.page * self.page_size
        return self.view[start : start + self.page_size]

    def sortable(self) -> list[str]:
        return [c.title for c in self.columns if c.key is not None]

    def status(self) -> str:
        n = self.total
        if n == 0:
            return "no rows" + (f" match “{self.query}”" if self.query else "")
        start = self.page * self.page_size
        of = f" of {n:,}" + (f" (filtered from {len(self.rows):,})" if self.query else "")
        return f"rows {start + 1:,}–{min(n, start + self.page_size):,}{of} · page {self.page + 1}/{self.pages}"

    def html(self) -> str:
        return render_table(self.columns, self.page_rows())


def render_table(columns: Sequence[Column[R]], rows: Iterable[R]) -> str:
    head = "".join(f"<th>{h(c.title)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            cls = c.css(r) if c.css is not None else ""
            attr = f' class="{h(cls)}"' if cls else ""
            text = c.text(r)
            cells.append(f'<td{attr} title="{h(text)}">{h(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="tm-t"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# -- Tensors -------------------------------------------------------------------------------------


class TensorRow:
    """One row of the Tensors tab: a tracked tensor, or a fold (``count`` > 1, ``id`` None).

    Built for every tensor when the panel opens, so it only keeps references: the fields are
    read when a page, a sort or a filter needs them."""

    __slots__ = ("index", "trec", "fold")

    def __init__(self, index: int, trec: TensorRecord | None = None, fold: Fold | None = None) -> None:
        self.index, self.trec, self.fold = index, trec, fold

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
        if self.trec is not None:
            return self.trec.label
        f = self.fold
        assert f is not None
        return f"({KIND_WORD.get(f.kind, f.kind)} ×{f.count:,} folded)"

    @property
    def _ref(self) -> TensorRef | None:
        return None if self.trec is None else self.trec.ref

    @property
    def op(self) -> str:
        if self.fold is not None:
            return short_op(self.fold.op)
        e = self.trec.created if self.trec is not None else None
        return short_op(e.op) if e is not None else ""

    @property
    def line(self) -> int | None:
        if self.fold is not None:
            return self.fold.line
        e = self.trec.created if self.trec is not None else None
        return None if e is None else e.line

    @property
    def where(self) -> str:
        if self.fold is not None:
            return f"line {self.fold.line}" if self.fold.line is not None else "?"
        e = self.trec.created if self.trec is not None else None
        return "" if e is None else e.where

    @property
    def module(self) -> str | None:
        e = self.trec.created if self.trec is not None else None
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
    """A row per tracked tensor in creation order, then a row per fold with its count."""
    rows = [TensorRow(i, t) for i, t in enumerate(rec.tensors.values())]
    n = len(rows)
    rows.extend(TensorRow(n + j, fold=f) for j, f in enumerate(rec.folds))
    return rows


def _tensor_search(r: TensorRow) -> str:
    return "\x00".join((*r.names, r.label, r.op, r.module or "", r.dtype, r.device, r.grad_fn or ""))


def _yes(v: bool | None) -> str:
    return "" if v is None else ("✓" if v else "")


TENSOR_COLUMNS: tuple[Column[TensorRow], ...] = (
    Column("#", lambda r: str(r.index + 1), lambda r: r.index, lambda r: "tm-muted"),
    Column("name", lambda r: ", ".join(r.names) if r.names else r.label, lambda r: r.label.lower()),
    Column("op", lambda r: r.op, lambda r: r.op, lambda r: "tm-k-create"),
    Column("line", lambda r: r.where, lambda r: r.line),
    Column("module", lambda r: r.module or "", lambda r: r.module),
    Column("shape", lambda r: "" if r.shape is None else fmt_shape(r.shape),
           lambda r: None if r.shape is None else (len(r.shape), r.shape)),
    Column("dtype", lambda r: r.dtype, lambda r: r.dtype or None),
    Column("device", lambda r: r.device, lambda r: r.device or None),
    Column("grad", lambda r: _yes(r.requires_grad), lambda r: r.requires_grad),
    Column("grad_fn", lambda r: r.grad_fn or "", lambda r: r.grad_fn),
    Column("version", lambda r: "" if r.version is None else str(r.version), lambda r: r.version),
    Column("size", lambda r: fmt_bytes(r.nbytes) if r.count == 1 else f"×{r.count:,}",
           lambda r: r.nbytes if r.count == 1 else None),
)  # fmt: skip


def tensors_table(rec: Recording, page_size: int = PAGE_SIZE) -> Table[TensorRow]:
    return Table(tensor_rows(rec), TENSOR_COLUMNS, _tensor_search, page_size=page_size)


# -- In-place, Devices & dtypes ------------------------------------------------------------------


def _aliases_text(e: Event) -> str:
    others = [a.label for a in e.aliases]
    if e.base is not None:
        others.insert(0, e.base.label)
    return ", ".join(dict.fromkeys(others))


INPLACE_COLUMNS: tuple[Column[Event], ...] = (
    Column("line", lambda e: e.where, lambda e: e.line),
    Column("source", lambda e: e.source or ""),
    Column("tensor", lambda e: e.tensor.label, lambda e: e.tensor.label.lower()),
    Column("op", lambda e: short_op(e.op), lambda e: e.op, lambda e: "tm-k-inplace"),
    Column("version", lambda e: f"{e.version_before} → {e.version_after}", lambda e: e.version_after),
    Column("shares memory with", _aliases_text),
)  # fmt: skip


def inplace_table(rec: Recording, page_size: int = PAGE_SIZE) -> Table[Event]:
    """Every write to existing memory, with the names that see the change."""
    rows = [e for e in rec.events if e.kind == "inplace" or (e.kind == "move" and e.inplace)]
    return Table(rows, INPLACE_COLUMNS, lambda e: f"{e.tensor.label}\x00{e.op}\x00{e.source or ''}",
                 page_size=page_size)  # fmt: skip


def _direction(e: Event) -> str:
    return f"{e.from_device} → {e.to_device}" if e.from_device != e.to_device else f"{e.to_device} (same)"


def _dtype_change(e: Event) -> str:
    return f"{e.from_dtype} → {e.to_dtype}" if e.from_dtype != e.to_dtype else (e.to_dtype or "")


MOVE_COLUMNS: tuple[Column[Event], ...] = (
    Column("line", lambda e: e.where, lambda e: e.line),
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
    return Table(rows, MOVE_COLUMNS, lambda e: f"{e.tensor.label}\x00{e.op}\x00{_direction(e)}\x00{_dtype_change(e)}",
                 page_size=page_size)  # fmt: skip


def move_totals_html(rec: Recording) -> str:
    """Moves per direction (device change and dtype change), with their bytes."""
    totals: dict[tuple[str, str], list[int]] = {}
    for e in rec.events:
        if e.kind != "move":
            continue
        key = (_direction(e) if e.from_device != e.to_device else "same device",
               f"{e.from_dtype} → {e.to_dtype}" if e.from_dtype != e.to_dtype else "same dtype")  # fmt: skip
        t = totals.setdefault(key, [0, 0])
        t[0] += 1
        t[1] += e.nbytes or 0
    if not totals:
        return "<div class='tm-muted'>no device or dtype moves in this cell</div>"
    rows = "".join(
        f"<tr><td>{h(d)}</td><td>{h(dt)}</td><td>{n:,}</td><td>{h(fmt_bytes(b))}</td></tr>"
        for (d, dt), (n, b) in sorted(totals.items(), key=lambda kv: -kv[1][1])
    )
    return ('<table class="tm-t"><thead><tr><th>direction</th><th>dtype</th><th>moves</th>'
            f"<th>bytes</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip


# -- Timeline ------------------------------------------------------------------------------------


def timeline_html(events: Sequence[Event], folds: Sequence[Fold] = ()) -> str:
    """Events grouped by source line: the line once, its events under it."""
    parts = ['<table class="tm-t"><tbody>']
    for first, group in line_groups(list(events)):
        parts.append(f"<tr class='tm-src'><td>{h(first.where)}</td><td colspan=3>{h(first.source or '')}</td></tr>")
        for e in group:
            parts.append(
                f"<tr><td class='tm-k-{h(e.kind)}'>{h(KIND_WORD.get(e.kind, e.kind))}</td>"
                f"<td>{h(e.tensor.label)}</td><td>{h(short_op(e.op))}</td><td>{h(describe(e))}</td></tr>"
            )
    for f in folds:
        where = f"line {f.line}" if f.line is not None else "?"
        parts.append(f"<tr><td>{h(where)}</td><td colspan=3>{h(KIND_WORD.get(f.kind, f.kind))} "
                     f"{h(short_op(f.op))} ×{f.count:,} more (folded)</td></tr>")  # fmt: skip
    parts.append("</tbody></table>")
    return "".join(parts)


# -- Diagnostics ---------------------------------------------------------------------------------


def diagnostics_html(diagnostics: Sequence[Any]) -> str:
    """Each finding with where, what, and the fix; fields read defensively (a log may be older)."""
    if not diagnostics:
        return "<div class='tm-ok'>✓ no warnings for this cell</div>"
    parts = []
    for d in diagnostics:
        sev = str(getattr(d, "severity", "warning") or "warning")
        names = getattr(d, "names", ()) or ()
        ident = getattr(d, "id", None)
        head = f"<b>{h(getattr(d, 'where', '?'))}</b>: {h(getattr(d, 'message', d))}"
        extra = []
        if getattr(d, "fix", None):
            extra.append(f"<div>fix: {h(d.fix)}</div>")
        if names:
            extra.append(f"<div class='tm-muted'>tensors: {h(', '.join(map(str, names)))}</div>")
        if ident:
            extra.append(f"<div class='tm-muted'>{h(sev)} · {h(ident)}</div>")
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
    "move_totals_html",
    "moves_table",
    "tensor_rows",
    "tensors_table",
    "timeline_html",
]
