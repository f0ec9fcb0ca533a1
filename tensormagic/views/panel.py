"""The inspector panel: an ipywidgets view of a Recording (header, tabs, a find box, a detail card).

Only the widget path imports this module (terminal IPython never does).  Tables are one HTML
widget per page, never a widget per row.  Only the tabs a recording fills are shown, and a tab's
widgets are made when it is first opened: a panel opens fast and an executed notebook saves the
state of a few widgets per cell, not of every tab.  A click on a row, a graph node or a found
name opens the one detail card through a Python observer (a real kernel round-trip).
"""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W

from ..model.recording import Recording
from .card import EMPTY_CARD, record_card_html
from .common import count_words, diagnostic_words, plural
from .graph import graph_html
from .lines import has_loops, has_steps, step_labels
from .panel_lines import lines_table, row_events_html, steps_html
from .panel_namespace import NamespaceTable
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
from .panel_widgets import NO_PICK, NONE, Option, TableView, _Owner, click_key, clickable, close_widget
from .table import STYLE, Table, h

#: Every tab a panel can have, in reading order; a panel shows the ones its recording fills.
TAB_TITLES = ("Lines", "Tensors", "Steps", "Autograd", "In-place", "Devices & dtypes", "Timeline", "Diagnostics")
MAX_FOUND = 20


def tab_titles(rec: Recording, counts: dict[str, int] | None = None) -> tuple[str, ...]:
    """The tabs worth opening for ``rec``: Lines first when the cell has loops, no empty tab."""
    loops = has_loops(rec)
    titles = ["Lines", "Tensors"] if loops else ["Tensors", "Lines"]
    if loops and has_steps(rec):
        titles.append("Steps")
    tensors = rec.tensors
    if any(tid in tensors and tensors[tid].names for tid in rec.graphs.roots):  # rec.results(), stopping early
        titles.append("Autograd")
    counts = rec.counts() if counts is None else counts
    if counts.get("inplace") or (counts.get("move") and any(e.kind == "move" and e.inplace for e in rec.events)):
        titles.append("In-place")
    if counts.get("move"):
        titles.append("Devices & dtypes")
    titles.append("Timeline")
    if rec.diagnostics:
        titles.append("Diagnostics")
    return tuple(titles)


class Panel(_Owner):
    """The inspector panel of one Recording; ``.widget`` is what a notebook displays."""

    def __init__(self, rec: Recording, *, page_size: int = 25) -> None:
        super().__init__()
        self.rec, self.page_size = rec, page_size
        m = self.make
        self.counts = rec.counts()  # one pass over the events, shared by the header, tabs and Lines
        self.header = m(W.HTML, STYLE + header_html(rec, self.counts), css="tm-header")
        self.card = m(W.HTML, EMPTY_CARD, css="tm-card-box")
        self.selected: str | None = None
        self.click = m(W.Text, layout=W.Layout(display="none"), css="tm-click")
        self.click.observe(lambda ch: self.open_key(click_key(ch["new"])), "value")
        self.find = m(W.Text, placeholder="find a tensor by name or id (every page)", continuous_update=False,
                      layout=W.Layout(width="24em"), css="tm-find")  # fmt: skip
        self.found = m(W.HTML, css="tm-found")
        self.find.observe(lambda ch: self.search(ch["new"]), "value")
        self.titles = tab_titles(rec, self.counts)
        self._built: dict[str, Any] = {}
        self._holders = [m(W.VBox, [], css=f"tm-tab-{t.split()[0].lower()}") for t in self.titles]
        self.tabs = m(W.Tab, children=self._holders, titles=self.titles, selected_index=0, css="tm-tabs")
        self.tabs.observe(lambda ch: self._fill(ch["new"]), "selected_index")
        self._fill(0)
        self.widget = m(W.VBox, [self.header, m(W.HBox, [self.find, self.found]), self.tabs, self.card,
                                 self.click], css="tm-panel")  # fmt: skip

    # -- tabs, made on first view ------------------------------------------------------------
    def _fill(self, index: int | None) -> None:
        if index is None or not 0 <= index < len(self.titles):
            return
        holder = self._holders[index]
        if not holder.children:
            holder.children = (self._view(self.titles[index]),)

    def _view(self, title: str) -> W.Widget:
        """The box of one tab, made once (also for a tab the panel does not show, when asked)."""
        built = self._built.get(title)
        if built is None:
            built = self._built[title] = self._make(title)
        return built[0]

    def _make(self, title: str) -> tuple[W.Widget, Any]:
        rec, m, pick, n = self.rec, self.make, self.select, self.page_size

        def event_option(e: Any) -> Option | None:
            return (f"{e.tensor.label}  ·  {e.where_in(rec.cell)}", e.tensor.id) if e.tensor.id in rec.tensors else None

        def event_key(e: Any) -> str:
            return f"t:{e.tensor.id}" if e.tensor.id in rec.tensors else ""

        if title == "Lines":
            v = TableView(self, lines_table(rec, n, self.counts), placeholder="filter: line, source, op, dtype",
                          css="tm-lines")
            intro = m(W.HTML, "<div class='tm-muted'>one row per source line × op, summed over the cell; "
                              "click a row for its events</div>")  # fmt: skip
            return m(W.VBox, [intro, v.box]), v
        if title == "Tensors":
            tt = tensors_table(rec, n)
            tt.key = lambda r: f"t:{r.id}" if r.id is not None else ""
            v = TableView(self, tt, placeholder="filter: name, op, module, dtype, device",
                          option=tensor_option, on_select=pick, css="tm-tensors")  # fmt: skip
            return m(W.VBox, [m(W.HTML, tensors_intro(rec)), v.box]), v
        if title == "Steps":
            box = m(W.HTML, clickable(steps_html(rec)), css="tm-steps")
            return box, box
        if title == "Autograd":
            g = GraphView(self, rec, pick)
            return g.box, g
        if title == "In-place":
            t = inplace_table(rec, n)
            t.key = event_key
            v = TableView(self, t, placeholder="filter: name, op, source", option=event_option, on_select=pick,
                          css="tm-inplace")  # fmt: skip
            return m(W.VBox, [m(W.HTML, inplace_intro(rec, len(t.rows))), v.box]), v
        if title == "Devices & dtypes":
            t = moves_table(rec, n)
            t.key = event_key
            v = TableView(self, t, placeholder="filter: name, op, device", option=event_option, on_select=pick,
                          css="tm-moves")  # fmt: skip
            return m(W.VBox, [m(W.HTML, move_totals_html(rec)), v.box]), v
        if title == "Timeline":
            v = TableView(self, _timeline_table(rec), placeholder="filter: name, op, source", sortable=False,
                          css="tm-timeline")  # fmt: skip
            return v.box, v
        if title == "Diagnostics":
            box = m(W.HTML, diagnostics_html(rec.diagnostics), css="tm-diagnostics")
            return box, box
        raise KeyError(title)

    def _part(self, title: str) -> Any:
        self._view(title)
        return self._built[title][1]

    lines = property(lambda self: self._part("Lines"))
    tensors = property(lambda self: self._part("Tensors"))
    steps = property(lambda self: self._part("Steps"))
    graph = property(lambda self: self._part("Autograd"))
    inplace = property(lambda self: self._part("In-place"))
    moves = property(lambda self: self._part("Devices & dtypes"))
    timeline = property(lambda self: self._part("Timeline"))
    diagnostics = property(lambda self: self._part("Diagnostics"))

    # -- the card ----------------------------------------------------------------------------
    def select(self, tensor_id: str) -> None:
        """Fill the detail card with a tracked tensor (statistics computed now, if it is alive)."""
        self.selected = tensor_id
        try:
            trec = self.rec.tensor(tensor_id)
            self.card.value = clickable(record_card_html(self.rec, trec))
        except Exception as e:  # noqa: BLE001 - an observer's exception would vanish into the log
            self.card.value = f"<div class='tm-card tm-warn'>could not show {h(tensor_id)}: {h(e)}</div>"

    def open_key(self, key: str) -> None:
        """Open what a clicked element names: ``t:ID`` a tensor's card, ``l:N`` a Lines row's events."""
        kind, _, value = key.partition(":")
        if kind == "t" and value:
            self.select(value)
        elif kind == "l" and value.isdigit():
            rows = self.lines.table.rows
            i = int(value)
            if 0 <= i < len(rows):
                self.card.value = clickable(row_events_html(rows[i], step_labels(self.rec)))

    def search(self, text: str) -> None:
        """Find tensors by name or id across the whole recording: one exact match opens its card."""
        q = text.strip()
        if not q:
            self.found.value = ""
            return
        exact = [t for t in self.rec.tensors.values() if q == t.id or q in t.names]
        if len(exact) == 1:
            self.found.value = ""
            self.select(exact[0].id)
            return
        ql = q.lower()
        hits = exact or [t for t in self.rec.tensors.values() if any(ql in n.lower() for n in t.names)]
        if not hits:
            self.found.value = f"<span class='tm-muted'>no tensor named like “{h(q)}”</span>"
            return
        links = " · ".join(f"<span class='tm-link' data-tm='t:{h(t.id)}' title='{h(', '.join(t.names))}'>"
                           f"{h(t.label)}</span>" for t in hits[:MAX_FOUND])  # fmt: skip
        more = f" <span class='tm-muted'>(+{len(hits) - MAX_FOUND:,} more)</span>" if len(hits) > MAX_FOUND else ""
        self.found.value = clickable(f"{len(hits):,} found: {links}{more}")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .panel_display import live_bundle

        return live_bundle(self.widget, {"text/plain": self.rec.to_text(), "text/html": self.rec.to_html()})


def tensor_option(r: Any) -> Option | None:
    return None if r.id is None else (f"{r.label}  ·  {r.where}  ·  {r.op}", r.id)


class GraphView:
    """The Autograd tab: which result's graph, the picture (click a node for its card), and a
    selector of its tensors."""

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
        opts: dict[str, str] = {}
        keys: dict[int, str] = {}
        for n in g.nodes:
            for name in (*n.tensors, *(() if n.leaf is None else (n.leaf,))):
                try:
                    tid = opts.setdefault(name, self.rec.tensor(name).id)
                except KeyError:
                    continue  # a leaf the graph names but the block never tracked (created before it)
                keys.setdefault(n.id, tid)
        self.body.value = clickable(graph_html(g, keys=keys))
        self.picker.options = [(NO_PICK, NONE), *opts.items()]

    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.on_select(change["new"])


class _TimelineTable(Table[Any]):
    """The timeline pages events grouped by line; folds follow the last page."""

    folds: tuple[Any, ...] = ()
    tracked: Any = ()
    labels: Any = None
    home: int | None = None

    def html(self) -> str:
        last = self.page >= self.pages - 1 and not self.query
        return clickable(timeline_html(self.page_rows(), self.folds if last else (), self.tracked, self.labels,
                                       self.home))


def _timeline_table(rec: Recording) -> Table[Any]:
    t = _TimelineTable(rec.events, (), lambda e: f"{e.tensor.label}\x00{e.op}\x00{e.source or ''}",
                       page_size=TIMELINE_PAGE)  # fmt: skip
    t.folds = rec.folds
    t.tracked = rec.tensors
    t.home = rec.cell
    t.labels = step_labels(rec)
    return t


def inplace_intro(rec: Recording, shown: int) -> str:
    folded = sum(f.count for f in rec.folds if f.kind == "inplace")
    more = f" (and {plural(folded, 'repeat')} folded: the Lines tab counts them per line)" if folded else ""
    writes = "write" if shown == 1 else "writes"
    return (f"<b>{shown:,}</b> {writes}{h(more)}; a write through a view changes its base and every "
            "other view")  # fmt: skip


def header_html(rec: Recording, counts: dict[str, int] | None = None) -> str:
    """Where, the counts in the shared wording, time, and a badge naming the findings' severities."""
    where = f"cell {rec.cell}" if rec.cell is not None else "block"
    parts = [f"<b>tensormagic</b> · {h(where)} · {h(count_words(rec, counts))}",
             f" · {plural(len(rec.tensors), 'tensor')} · {rec.duration_s * 1000:,.1f} ms"]  # fmt: skip
    if rec.folded:
        parts.append(f" · {plural(rec.folded, 'repeated event')} folded")
    if rec.diagnostics:
        sevs = {str(getattr(d, "severity", "warning") or "warning") for d in rec.diagnostics}
        worst = next((s for s in ("error", "warning", "info") if s in sevs), "warning")
        parts.append(f"<span class='tm-badge tm-sev-{h(worst)}' title='see the Diagnostics tab'>"
                     f"⚠ {h(diagnostic_words(rec.diagnostics))}</span>")  # fmt: skip
    if rec.failed:
        parts.append(f"<div class='tm-warn'>the cell raised: {h(rec.error)}</div>")
    if rec.internal_error:
        parts.append(f"<div class='tm-warn'>recording incomplete: {h(rec.internal_error)}</div>")
    return f"<div class='tm-head'>{''.join(parts)}</div>"


from .panel_display import (  # noqa: E402 - the display layer builds on the classes above
    WIDGET_MIME,
    LogPanel,
    PanelDisplay,
    TensorCard,
    bundle,
    close_all,
    display_log,
    display_namespace,
    display_recording,
    display_tensor_info,
    live_bundle,
    open_panels,
    recording_bundle,
)  # fmt: skip

__all__ = [
    "TAB_TITLES",
    "WIDGET_MIME",
    "GraphView",
    "LogPanel",
    "NamespaceTable",
    "Panel",
    "PanelDisplay",
    "TableView",
    "TensorCard",
    "bundle",
    "close_all",
    "close_widget",
    "display_log",
    "display_namespace",
    "display_recording",
    "display_tensor_info",
    "header_html",
    "live_bundle",
    "open_panels",
    "recording_bundle",
    "tab_titles",
]
