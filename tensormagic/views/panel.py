"""The inspector panel: an ipywidgets view of a Recording (header, six tabs, a detail card).

Only the widget path imports this module (terminal IPython never does).  Tables are one HTML
widget per page, never a widget per row; selecting a tensor in any selector fills the one detail
card through a Python observer, so in a browser it is a real kernel round-trip.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar

import ipywidgets as W

from ..model.recording import Recording
from .card import EMPTY_CARD, record_card_html, tensor_card_html
from .common import count_words, fmt_bytes, fmt_shape
from .graph import graph_html
from .panel_tables import (
    TIMELINE_PAGE,
    diagnostics_html,
    inplace_table,
    move_totals_html,
    moves_table,
    tensors_intro,
    tensors_table,
    timeline_html,
)  # fmt: skip
from .table import STYLE, Column, Table, h

TAB_TITLES = ("Tensors", "Autograd", "In-place", "Devices & dtypes", "Timeline", "Diagnostics")
NO_PICK = "— pick a tensor —"
# A Dropdown whose value is None shows nothing selected: real sentinels keep the label visible
NONE = ""
RECORDED_ORDER = ("", False)

R = TypeVar("R")
Option = tuple[str, Any]


def close_widget(w: W.Widget) -> None:
    """Close a widget and the Layout and Style widgets every widget makes for itself
    (``Widget.close`` leaves those in the registry)."""
    for name in ("layout", "style"):
        sub = getattr(w, name, None)
        if isinstance(sub, W.Widget):
            sub.close()
    w.close()


class _Owner:
    """Remembers every widget it makes, so ``close()`` frees them all (containers do not close
    their children)."""

    def __init__(self) -> None:
        self._widgets: list[W.Widget] = []

    def make(self, cls: Callable[..., Any], *args: Any, css: str | None = None, **kw: Any) -> Any:
        w = cls(*args, **kw)
        if css:
            w.add_class(css)
        self._widgets.append(w)
        return w

    def close(self) -> None:
        widgets, self._widgets = self._widgets, []
        for w in reversed(widgets):
            close_widget(w)

    @property
    def closed(self) -> bool:
        return not self._widgets


class TableView(Generic[R]):
    """Filter box, sort, pager, the page as one HTML table, and a selector of the page's rows."""

    def __init__(self, owner: _Owner, table: Table[R], *, placeholder: str,
                 option: Callable[[R], Option | None] | None = None,
                 on_select: Callable[[Any], None] | None = None, sortable: bool = True,
                 css: str = "tm-view") -> None:  # fmt: skip
        self.table, self.option, self.on_select = table, option, on_select
        m = owner.make
        self.filter = m(W.Text, placeholder=placeholder, layout=W.Layout(width="22em"), css="tm-filter")
        sorts = [(f"{t} {arrow}", (t, desc))
                 for t in table.sortable() for arrow, desc in (("↑", False), ("↓", True))]  # fmt: skip
        self.sort = m(W.Dropdown, options=[("recorded order", RECORDED_ORDER), *sorts], description="sort by",
                      layout=W.Layout(width="17em"), css="tm-sort") if sortable else None  # fmt: skip
        self.prev = m(W.Button, description="◀ prev", layout=W.Layout(width="6em"), css="tm-prev")
        self.next = m(W.Button, description="next ▶", layout=W.Layout(width="6em"), css="tm-next")
        self.status = m(W.HTML, css="tm-status")
        self.body = m(W.HTML, css="tm-table")
        sort = [self.sort] if self.sort is not None else []
        controls = [self.filter, *sort, self.prev, self.next, self.status]
        children: list[W.Widget] = [m(W.HBox, controls), self.body]
        self.picker: W.Dropdown | None = None
        if option is not None:
            self.picker = m(W.Dropdown, options=[(NO_PICK, NONE)], description="inspect",
                            layout=W.Layout(width="30em"), css="tm-pick")  # fmt: skip
            self.picker.observe(self._picked, "value")
            children.append(self.picker)
        self.box = m(W.VBox, children, css=css)
        self.filter.observe(lambda ch: self._refresh(query=ch["new"]), "value")
        if self.sort is not None:
            self.sort.observe(lambda ch: self._refresh(sort=ch["new"]), "value")
        self.prev.on_click(lambda _b: self.go(self.table.page - 1))
        self.next.on_click(lambda _b: self.go(self.table.page + 1))
        self._refresh()

    def _refresh(self, query: str | None = None, sort: tuple[str | None, bool] | None = None) -> None:
        if query is not None:
            self.table.set_query(query)
        if sort is not None:
            self.table.set_sort(*sort)
        self.render()

    def go(self, page: int) -> None:
        self.table.go(page)
        self.render()

    def render(self) -> None:
        t = self.table
        self.body.value = t.html()
        self.status.value = f"<span class='tm-muted'>{h(t.status())}</span>"
        self.prev.disabled = t.page <= 0
        self.next.disabled = t.page >= t.pages - 1
        if self.picker is not None and self.option is not None:
            opts = [o for o in map(self.option, t.page_rows()) if o is not None]
            self.picker.options = [(NO_PICK, NONE), *dict.fromkeys(opts)]

    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"] and self.on_select is not None:
            self.on_select(change["new"])


class Panel(_Owner):
    """The inspector panel of one Recording; ``.widget`` is what a notebook displays."""

    def __init__(self, rec: Recording, *, page_size: int = 25) -> None:
        super().__init__()
        self.rec = rec
        m = self.make
        self.header = m(W.HTML, STYLE + header_html(rec), css="tm-header")
        self.card = m(W.HTML, EMPTY_CARD, css="tm-card-box")
        self.selected: str | None = None
        pick = self.select

        def tensor_option(r: Any) -> Option | None:
            return None if r.id is None else (f"{r.label}  ·  {r.where}  ·  {r.op}", r.id)

        def event_option(e: Any) -> Option | None:
            return (f"{e.tensor.label}  ·  {e.where}", e.tensor.id) if e.tensor.id in rec.tensors else None

        filt = "filter: name, op, module, dtype, device"
        self.tensors = TableView(self, tensors_table(rec, page_size), placeholder=filt, option=tensor_option,
                                 on_select=pick, css="tm-tensors")  # fmt: skip
        self.inplace = TableView(self, inplace_table(rec, page_size), placeholder="filter: name, op, source",
                                 option=event_option, on_select=pick, css="tm-inplace")  # fmt: skip
        self.moves = TableView(self, moves_table(rec, page_size), placeholder="filter: name, op, device",
                               option=event_option, on_select=pick, css="tm-moves")  # fmt: skip
        self.timeline = TableView(self, _timeline_table(rec), placeholder="filter: name, op, source",
                                  sortable=False, css="tm-timeline")  # fmt: skip
        self.graph = GraphView(self, rec, pick)
        inplace_box = m(W.VBox, [m(W.HTML, inplace_intro(rec, len(self.inplace.table.rows))),
                                 self.inplace.box])  # fmt: skip
        devices_box = m(W.VBox, [m(W.HTML, move_totals_html(rec)), self.moves.box])
        tensors_box = m(W.VBox, [m(W.HTML, tensors_intro(rec)), self.tensors.box])
        self.diagnostics = m(W.HTML, diagnostics_html(rec.diagnostics), css="tm-diagnostics")
        children = [tensors_box, self.graph.box, inplace_box, devices_box, self.timeline.box,
                    self.diagnostics]  # fmt: skip
        self.tabs = m(W.Tab, children=children, titles=TAB_TITLES, css="tm-tabs")
        self.widget = m(W.VBox, [self.header, self.tabs, self.card], css="tm-panel")

    def select(self, tensor_id: str) -> None:
        """Fill the detail card with a tracked tensor (statistics computed now, if it is alive)."""
        self.selected = tensor_id
        try:
            trec = self.rec.tensor(tensor_id)
            self.card.value = record_card_html(self.rec, trec)
        except Exception as e:  # noqa: BLE001 - an observer's exception would vanish into the log
            self.card.value = f"<div class='tm-card tm-warn'>could not show {h(tensor_id)}: {h(e)}</div>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return bundle(self.widget, {"text/plain": self.rec.to_text(), "text/html": self.rec.to_html()})


class GraphView:
    """The Autograd tab: which result's graph, the picture, and a selector of its tensors."""

    def __init__(self, owner: _Owner, rec: Recording, on_select: Callable[[str], None]) -> None:
        self.rec, self.on_select = rec, on_select
        m = owner.make
        tops = rec.top_results()
        others = [r for r in rec.results() if r not in tops]
        opts = [(r.label, r.id) for r in tops] + [(f"{r.label} (inside another graph)", r.id) for r in others]
        self.which = m(W.Dropdown, options=opts or [("(no autograd graph in this cell)", NONE)],
                       description="graph of", layout=W.Layout(width="24em"), css="tm-graph-of")  # fmt: skip
        self.picker = m(W.Dropdown, options=[(NO_PICK, NONE)], description="inspect",
                        layout=W.Layout(width="20em"), css="tm-graph-pick")  # fmt: skip
        self.body = m(W.HTML, css="tm-graph-box")
        self.box = m(W.VBox, [m(W.HBox, [self.which, self.picker]), self.body])
        self.which.observe(lambda ch: self.show(ch["new"]), "value")
        self.picker.observe(self._picked, "value")
        self.show(self.which.value)

    def show(self, tensor_id: str) -> None:
        if not tensor_id:
            self.body.value = ("<div class='tm-muted'>no tensor with a grad_fn was named in this cell: "
                               "create one with requires_grad=True to see its graph</div>")  # fmt: skip
            return
        trec = self.rec.tensors[tensor_id]
        g = self.rec.graphs.graph(trec.id, trec.label)
        self.body.value = graph_html(g)
        names = []
        for n in g.nodes:
            names.extend(n.tensors)
            if n.leaf is not None:
                names.append(n.leaf)
        opts = []
        for name in dict.fromkeys(names):
            try:
                opts.append((name, self.rec.tensor(name).id))
            except KeyError:
                continue  # a leaf the graph names but the block never tracked (created before it)
        self.picker.options = [(NO_PICK, NONE), *opts]

    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.on_select(change["new"])


class _TimelineTable(Table[Any]):
    """The timeline pages events grouped by line; folds follow the last page."""

    folds: tuple[Any, ...] = ()

    def html(self) -> str:
        last = self.page >= self.pages - 1 and not self.query
        return timeline_html(self.page_rows(), self.folds if last else ())


def _timeline_table(rec: Recording) -> Table[Any]:
    t = _TimelineTable(rec.events, (), lambda e: f"{e.tensor.label}\x00{e.op}\x00{e.source or ''}",
                       page_size=TIMELINE_PAGE)  # fmt: skip
    t.folds = rec.folds
    return t


def inplace_intro(rec: Recording, shown: int) -> str:
    folded = sum(f.count for f in rec.folds if f.kind == "inplace")
    more = f" (and {folded:,} repeats folded: see the Timeline's last page)" if folded else ""
    return (f"<b>{shown:,}</b> writes{h(more)}; a write through a view changes its base and every "
            "other view")  # fmt: skip


def header_html(rec: Recording) -> str:
    """Where, the counts in the shared wording, time, and a badge when there are warnings."""
    where = f"cell {rec.cell}" if rec.cell is not None else "block"
    parts = [f"<b>tensormagic</b> · {h(where)} · {h(count_words(rec))}",
             f" · {len(rec.tensors):,} tensors · {rec.duration_s * 1000:.1f} ms"]  # fmt: skip
    if rec.folded:
        parts.append(f" · {rec.folded:,} repeated events folded")
    if rec.diagnostics:
        n = len(rec.diagnostics)
        word = "warning" if n == 1 else "warnings"
        parts.append(f"<span class='tm-badge' title='see the Diagnostics tab'>⚠ {n} {word}</span>")
    if rec.failed:
        parts.append(f"<div class='tm-warn'>the cell raised: {h(rec.error)}</div>")
    if rec.internal_error:
        parts.append(f"<div class='tm-warn'>recording incomplete: {h(rec.internal_error)}</div>")
    return f"<div class='tm-head'>{''.join(parts)}</div>"


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def bundle(widget: W.Widget, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (text/plain, text/html for exports) plus the widget view a live kernel shows."""
    out = dict(data)
    if widget.model_id:
        out[WIDGET_MIME] = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
    return out


# -- %tensorinfo with no argument: the namespace's tensors -----------------------------------------


@dataclass(slots=True)
class NamespaceRow:
    name: str
    ref: weakref.ref[Any]
    shape: tuple[int, ...]
    dtype: str
    device: str
    requires_grad: bool
    grad_fn: str | None
    nbytes: int


NAMESPACE_COLUMNS: tuple[Column[NamespaceRow], ...] = (
    Column("name", lambda r: r.name, lambda r: r.name.lower()),
    Column("shape", lambda r: fmt_shape(r.shape), lambda r: (len(r.shape), r.shape)),
    Column("dtype", lambda r: r.dtype, lambda r: r.dtype),
    Column("device", lambda r: r.device, lambda r: r.device),
    Column("requires_grad", lambda r: "✓" if r.requires_grad else "", lambda r: r.requires_grad),
    Column("grad_fn", lambda r: r.grad_fn or "", lambda r: r.grad_fn),
    Column("bytes", lambda r: fmt_bytes(r.nbytes), lambda r: r.nbytes),
)  # fmt: skip


def namespace_rows(namespace: Mapping[str, Any]) -> list[NamespaceRow]:
    from ..engine.naming import named_tensors

    rows = []
    for name, t in named_tensors(namespace):
        gf = t.grad_fn
        rows.append(NamespaceRow(name, weakref.ref(t), tuple(t.shape), str(t.dtype).removeprefix("torch."),
                                 str(t.device), t.requires_grad, None if gf is None else type(gf).__name__,
                                 t.numel() * t.element_size()))  # fmt: skip
    return rows


def _namespace_search(r: NamespaceRow) -> str:
    return f"{r.name}\x00{r.dtype}\x00{r.device}\x00{r.grad_fn or ''}"


class NamespaceTable(_Owner):
    """``%tensorinfo``: every tensor in the namespace, filterable, with a detail card on pick.

    Rows hold weak references: the table keeps no tensor alive."""

    def __init__(self, namespace: Mapping[str, Any], *, page_size: int = 25) -> None:
        super().__init__()
        self.namespace = namespace
        rows = namespace_rows(namespace)
        self.by_name = {r.name: r for r in rows}
        table: Table[NamespaceRow] = Table(rows, NAMESPACE_COLUMNS, _namespace_search, page_size=page_size)
        total = sum(r.nbytes for r in rows)
        self.header = self.make(W.HTML, STYLE + f"<div class='tm-head'><b>tensors in the namespace</b> · "
                                f"{len(rows):,} tensors, {h(fmt_bytes(total))}</div>")  # fmt: skip
        self.card = self.make(W.HTML, EMPTY_CARD, css="tm-card-box")
        self.table = TableView(self, table, placeholder="filter: name, dtype, device, grad_fn",
                               option=lambda r: (r.name, r.name), on_select=self.select,
                               css="tm-namespace")  # fmt: skip
        self.widget = self.make(W.VBox, [self.header, self.table.box, self.card], css="tm-panel")

    def select(self, name: str) -> None:
        row = self.by_name.get(name)
        t = row.ref() if row is not None else None
        if t is None:
            gone = f"{h(name)} was freed or rebound since the table was made"
            self.card.value = f"<div class='tm-card tm-muted'>{gone}</div>"
            return
        try:
            self.card.value = tensor_card_html(t, name=name, namespace=self.namespace)
        except Exception as e:  # noqa: BLE001 - an observer's exception would vanish into the log
            self.card.value = f"<div class='tm-card tm-warn'>could not show {h(name)}: {h(e)}</div>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..info import namespace_info

        info = namespace_info(self.namespace)
        return bundle(self.widget, {"text/plain": info.to_text(), "text/html": info.to_html()})


from .panel_display import (  # noqa: E402 - the display layer builds on the classes above
    LogPanel,
    PanelDisplay,
    TensorCard,
    close_all,
    display_log,
    display_namespace,
    display_recording,
    display_tensor_info,
    open_panels,
    recording_bundle,
)  # fmt: skip

__all__ = [
    "TAB_TITLES",
    "GraphView",
    "LogPanel",
    "NamespaceTable",
    "Panel",
    "PanelDisplay",
    "TableView",
    "TensorCard",
    "close_all",
    "display_log",
    "display_namespace",
    "display_recording",
    "display_tensor_info",
    "header_html",
    "open_panels",
    "recording_bundle",
]
