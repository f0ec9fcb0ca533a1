"""The inspector panel at widget level (no browser): tabs, tables, filtering, paging, the card."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
from dataclasses import dataclass

import ipywidgets as W
import pytest
import torch
from IPython.utils.capture import capture_output
from testkit import autograd_example

import tensormagic
from tensormagic.views import panel_display
from tensormagic.views.panel import (
    TAB_TITLES,
    LogPanel,
    NamespaceTable,
    Panel,
    PanelDisplay,
    TensorCard,
    close_all,
    display_namespace,
    display_recording,
    display_tensor_info,
    open_panels,
    recording_bundle,
)  # fmt: skip

HOSTILE = "<img src=x onerror=alert(1)>"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def registry() -> dict:
    """The live-widget registry (its name moved between ipywidgets versions)."""
    from ipywidgets.widgets import widget

    inst = getattr(widget, "_instances", None)
    return inst if inst is not None else W.Widget.widgets


def rows_in(html: str) -> int:
    return len(re.findall(r"<tr[ >]", html)) - 1  # minus the header row


def html_values(panel: Panel) -> str:
    return "\n".join(w.value for w in panel._widgets if isinstance(w, W.HTML))


@dataclass
class Finding:
    """The fields the panel reads from each of ``Recording.diagnostics`` (``events.Diagnostic``)."""

    id: str
    severity: str
    where: str
    message: str
    fix: str
    names: tuple[str, ...] = ()
    source: str | None = None
    count: int = 1


@pytest.fixture
def example():
    """The autograd example; returns the recording and keeps y alive for live-card tests."""
    ex = autograd_example()
    return ex.rec, ex.y


@pytest.fixture
def panel(example):
    p = Panel(example[0])
    yield p
    p.close()


def test_tab_titles_hide_empty_tabs(panel):
    """A cell without loops, writes, moves or findings shows only the tabs it fills, Tensors first."""
    assert tuple(panel.tabs.titles) == ("Tensors", "Lines", "Autograd", "Timeline")
    assert set(panel.tabs.titles) <= set(TAB_TITLES)


def test_lines_tab_comes_first_in_a_loop():
    """A cell with a loop opens on the Lines tab, and shows the Steps and In-place tabs it fills."""
    w = torch.zeros(3, requires_grad=True)
    with tensormagic.track() as rec:
        for _ in range(4):
            loss = (w * 2).sum()
            loss.backward()
            with torch.no_grad():
                w.sub_(0.1 * w.grad)
            w.grad = None
    p = Panel(rec)
    try:
        assert p.tabs.titles[:3] == ("Lines", "Tensors", "Steps") and "In-place" in p.tabs.titles
        assert p.tabs.selected_index == 0 and p.tabs.children[0].children  # made when the panel opened
        assert not p.tabs.children[1].children  # the others wait until they are opened
    finally:
        p.close()


def test_header_counts(panel):
    """The header states the cell's counts in the shared wording."""
    assert "6 created, 0 views, 0 in-place, 0 moves, 0 casts, 1 backward" in panel.header.value
    assert "6 tensors" in panel.header.value
    assert "class='tm-badge'" not in panel.header.value


def test_tensors_table_has_a_row_per_tensor(example, panel):
    """Every tracked tensor (the unnamed y * y and x.grad included) is a row."""
    rec = example[0]
    assert rows_in(panel.tensors.body.value) == len(rec.tensors) == 6
    for name in ("x", "y", "z", "out", "x.grad"):
        assert f">{name}<" in panel.tensors.body.value
    assert "rows 1–6 of 6" in panel.tensors.status.value


def test_filter_narrows_rows_and_selector(panel):
    """Typing in the filter box keeps only matching rows, and the selector offers only them."""
    panel.tensors.filter.value = "mean"
    assert rows_in(panel.tensors.body.value) == 1
    assert ">out<" in panel.tensors.body.value
    assert [label.split()[0] for label, v in panel.tensors.picker.options if v] == ["out"]
    panel.tensors.filter.value = "nosuchthing"
    assert rows_in(panel.tensors.body.value) == 0
    assert "no rows match" in panel.tensors.status.value


def test_sort_by_name_descending(panel):
    """Sorting by a column reorders the page."""
    panel.tensors.sort.value = ("name", True)
    names = re.findall(r"<tr><td[^>]*>\d+</td><td[^>]*>([^<]*)</td>", panel.tensors.body.value)
    assert names == sorted(names, key=str.lower, reverse=True)


def test_paging_shows_one_page_of_html_and_moves_between_pages():
    """Rows beyond a page are reached with next/prev; the page is one HTML widget, not a widget per row."""
    with tensormagic.track() as rec:
        x = torch.zeros(3)
        for i in range(60):
            x = x + i
    small = Panel(rec, page_size=25)
    try:
        t = small.tensors
        small.timeline  # noqa: B018 - open the same tabs in both panels before counting widgets
        assert rows_in(t.body.value) == 25 and t.prev.disabled and not t.next.disabled
        t.next.click()
        assert "rows 26–50 of 61" in t.status.value and rows_in(t.body.value) == 25
        t.next.click()
        assert rows_in(t.body.value) == 11 and t.next.disabled
        t.prev.click()
        assert "page 2/3" in t.status.value
        with tensormagic.track() as tiny:
            y = torch.zeros(1)
            for i in range(2):
                y = y + i
        other = Panel(tiny)
        other.tensors, other.timeline  # noqa: B018
        assert other.tabs.titles == small.tabs.titles
        assert len(other._widgets) == len(small._widgets)  # widget count does not grow with rows
        other.close()
    finally:
        small.close()


def test_selecting_a_tensor_fills_the_card(example, panel):
    """Picking y shows its metadata, grad_fn chain, history and statistics computed now."""
    rec = example[0]
    panel.tensors.picker.value = rec.tensor("y").id
    card = panel.card.value
    assert "<h4>y " in card and "alive" in card
    assert "AddBackward0 → AccumulateGrad(x)" in card
    assert "all 3" in card  # statistics of the live tensor, computed when the card opened
    assert "<svg" not in card  # a constant tensor gets no one-bar histogram
    assert "y = x + 2" in card and "history" in card
    assert panel.selected == rec.tensor("y").id


def test_card_of_a_live_tensor_has_a_histogram():
    """A live tensor with varied values gets a small histogram of them in its card."""
    with tensormagic.track() as rec:
        w = torch.linspace(-1, 1, 100)
    p = Panel(rec)
    try:
        p.select(rec.tensor("w").id)
        assert p.card.value.count("<rect") == 24 and "-1 … 1" in p.card.value
    finally:
        p.close()
    del w


def test_card_of_a_freed_tensor_shows_recorded_metadata():
    """Once a tensor is gone the card says so and shows the metadata recorded at the end of the block."""
    with tensormagic.track() as rec:
        a = torch.ones(2, 2, requires_grad=True)
        b = a * 3
    del a, b
    gc.collect()
    p = Panel(rec)
    try:
        assert not rec.tensor("b").alive
        p.select(rec.tensor("b").id)
        card = p.card.value
        assert "freed" in card and "2×2" in card and "MulBackward0" in card and "--stats" in card
    finally:
        p.close()


def test_graph_tab_lists_results_and_node_tensors(example, panel):
    """The Autograd tab shows `out`'s graph first and offers its tensors; picking one fills the card."""
    rec = example[0]
    assert panel.graph.which.options[0][0] == "out"
    names = [label for label, v in panel.graph.picker.options if v]
    assert names[:4] == ["out", "z", "y", "x"]
    assert "MeanBackward0" in panel.graph.body.value
    panel.graph.picker.value = rec.tensor("x").id
    assert "<h4>x " in panel.card.value


def test_inplace_tab_shows_versions_and_shared_memory():
    """A write through a view lists version before → after and the base that sees it."""
    with tensormagic.track() as rec:
        a = torch.zeros(4)
        v = a.view(2, 2)
        v.add_(1)
    p = Panel(rec)
    try:
        body = p.inplace.body.value
        assert rows_in(body) == 1
        assert "0 → 1" in body and ">v<" in body and "a" in re.findall(r"<td[^>]*>([^<]*)</td>", body)[-1]
    finally:
        p.close()
    del a, v


def test_devices_tab_totals_moves_per_direction():
    """Moves are listed with direction, dtype change and bytes, with totals per direction."""
    with tensormagic.track() as rec:
        a = torch.ones(8)
        b = a.to("meta")
        c = a.double()
    p = Panel(rec)
    try:
        devices = p._view("Devices & dtypes")
        totals = devices.children[0].value
        assert "cpu → meta" in totals and "float32 → float64" in totals
        assert rows_in(p.moves.body.value) == 2
        assert "32 B" in p.moves.body.value
    finally:
        p.close()
    del a, b, c


def test_timeline_groups_events_under_their_line(panel):
    """Each source line appears once with its events under it."""
    body = panel.timeline.body.value
    assert body.count(">z = y * y * 3<") == 1
    assert body.count("tm-src") == 5


def test_diagnostics_tab_and_badge(example):
    """Findings appear in the Diagnostics tab with where, message and fix, and the header shows a badge."""
    rec = example[0]
    fix = "call z.retain_grad() before backward"
    rec.diagnostics = [Finding("grad-not-kept", "warning", "line 4", "z.grad will stay None", fix, ("z",),
                               "z = y * y * 3", 2)]  # fmt: skip
    p = Panel(rec)
    try:
        assert "⚠ 1 warning" in p.header.value and "tm-sev-warning" in p.header.value
        assert "Diagnostics" in p.tabs.titles
        text = p.diagnostics.value
        assert "line 4" in text and "z.grad will stay None" in text and "retain_grad" in text
        assert "z = y * y * 3" in text and "×2" in text
    finally:
        p.close()
        rec.diagnostics = []


def test_hostile_name_is_escaped_everywhere():
    """A tensor named like an HTML tag appears only escaped in every HTML widget of the panel."""
    d = {}
    with tensormagic.track() as rec:
        d[HOSTILE] = torch.ones(3, requires_grad=True)
        s = (d[HOSTILE] * 2).sum()
    rec.diagnostics = [Finding("x", "warning", HOSTILE, HOSTILE, HOSTILE, (HOSTILE,))]
    p = Panel(rec)
    try:
        tid = next(t.id for t in rec.tensors.values() if any(HOSTILE in n for n in t.names))
        p.select(tid)
        for view in (p.tensors, p.timeline):
            view.filter.value = "img"
        text = html_values(p)
        assert "&lt;img src=x onerror=alert(1)&gt;" in text
        assert "<img" not in text
    finally:
        p.close()
    del s


def test_close_frees_every_widget(example):
    """Building and closing the same cell's panel 200 times leaves the widget registry as it was."""
    rec = example[0]
    before = len(registry())
    for _ in range(200):
        Panel(rec).close()
    assert len(registry()) == before


def test_rerun_cell_closes_its_previous_panel(example):
    """Displaying a panel for the same cell id again closes the old one: no growth over 200 runs."""
    rec = example[0]
    rec.cell_id = "cell-abc"
    close_all()
    before = len(registry())
    try:
        with capture_output():
            for i in range(200):
                display_recording(rec, summary=i % 2 == 1)
        assert open_panels() == 1
        assert len(registry()) - before < 200  # one panel's widgets, layouts and styles
    finally:
        close_all()
    assert len(registry()) == before


def test_display_is_a_live_output_then_a_static_one(example, _ipython):
    """The panel is an output of its own (widget view, empty text/plain); the report follows as
    another (text/plain, escaped text/html) that names the panel it stands in for."""
    rec = example[0]
    close_all()
    try:
        with capture_output() as out:
            d = display_recording(rec, key=None)
        live, static = (o.data for o in out.outputs)
        assert live == {"text/plain": "", WIDGET_MIME: {"version_major": 2, "version_minor": 0,
                                                        "model_id": d.widget.model_id}}  # fmt: skip
        assert WIDGET_MIME not in static and static["text/plain"].startswith("tensormagic")
        html = static["text/html"]
        assert f"data-tm-live='{d.widget.model_id}'" in html and f"tm-live-{d.widget.model_id}" in d.widget._dom_classes
        assert html.count("<script>") == 1 and "out = z.mean()" in html
    finally:
        close_all()


def test_summary_expands_into_the_panel(example):
    """`%trackgrad on` shows a one-line summary; the panel is built when it is expanded."""
    d = PanelDisplay(example[0], summary=True)
    try:
        assert d.panel is None and d.widget.titles[0].startswith("tensormagic")
        d.widget.selected_index = 0
        assert d.panel is not None and d.widget.children[0].children == (d.panel.widget,)
    finally:
        d.close()


def test_namespace_table_filters_and_shows_a_card():
    """`%tensorinfo` with no argument: a filterable table of the namespace; picking a row shows its card."""
    ns = {"w": torch.randn(3, 4, requires_grad=True), "b": torch.zeros(4, dtype=torch.float64), "n": 3}
    t = NamespaceTable(ns)
    try:
        assert rows_in(t.table.body.value) == 2
        t.table.filter.value = "float64"
        assert rows_in(t.table.body.value) == 1 and ">b<" in t.table.body.value
        t.table.picker.value = "b"
        assert "<h4>b" in t.card.value and "all 0" in t.card.value
    finally:
        t.close()


def test_tensor_card_for_tensorinfo_is_self_contained_html():
    """`%tensorinfo x`'s card is escaped HTML with a histogram and keeps no reference to the tensor."""
    from tensormagic.info import tensor_info

    t = torch.arange(10.0)
    card = TensorCard(tensor_info(t, name=HOSTILE), t)
    html = card._repr_mimebundle_()["text/html"]
    assert "<svg" in html and "<img" not in html and "&lt;img" in html
    assert not any(v is t for v in vars(card).values())


def test_static_views_do_not_import_ipywidgets():
    """The text/HTML path (terminal IPython, nbconvert) never imports ipywidgets."""
    code = (
        "import sys, torch, tensormagic\n"
        "from tensormagic.views import card, graph, panel_tables\n"
        "with tensormagic.track() as r:\n"
        "    x = torch.ones(2, requires_grad=True); y = (x * 2).sum()\n"
        "r.to_text(); r.to_html(); graph.graph_html(r.grad_graph('y'))\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_display_functions_show_and_register(example, _ipython):
    """In a real shell the magic layer's entry points display their object and keep panels closable."""
    from tensormagic.info import tensor_info

    close_all()
    t = torch.arange(4.0)
    with capture_output() as out:
        card = display_tensor_info(tensor_info(t, name="t"), t)
        table = display_namespace({"t": t})
        b = recording_bundle(example[0])
    assert [WIDGET_MIME in o.data for o in out.outputs] == [False, True, False, True] and isinstance(card, TensorCard)
    assert open_panels() == 2 and WIDGET_MIME not in b and "text/html" in b
    close_all()
    assert open_panels() == 0 and table.closed


def test_trackgrad_cell_in_widget_mode_displays_the_panel(ip):
    """`%%trackgrad` with display='widget' shows the panel with text/plain and text/html beside it."""
    ip.run_line_magic("config", "TensorMagic.display = 'widget'")
    try:
        with capture_output() as out:
            r = ip.run_cell("%%trackgrad\nx = torch.ones(2, requires_grad=True)\ny = (x * 2).sum()\n",
                            store_history=True)  # fmt: skip
        r.raise_error()
        live, data = out.outputs[-2].data, out.outputs[-1].data
        assert WIDGET_MIME in live and data["text/plain"].startswith("tensormagic") and "text/html" in data
        assert open_panels() >= 1
    finally:
        ip.run_line_magic("config", "TensorMagic.display = 'auto'")
        close_all()


def _widget_mode_outputs(ip, cells: list[str]) -> list[dict]:
    ip.run_line_magic("config", "TensorMagic.display = 'widget'")
    try:
        with capture_output() as out:
            for cell in cells:
                ip.run_cell(cell, store_history=True).raise_error()
        return [o.data for o in out.outputs]
    finally:
        ip.run_line_magic("config", "TensorMagic.display = 'auto'")


def test_tensorinfo_in_widget_mode_shows_the_detail_card(ip):
    """`%tensorinfo x` in a kernel shows the panel's detail card, histogram included."""
    (data,) = _widget_mode_outputs(ip, ["w = torch.arange(10.0)", "%tensorinfo w"])
    assert WIDGET_MIME not in data and "tm-card" in data["text/html"] and "<svg" in data["text/html"]
    assert data["text/plain"].startswith("w")


def test_tensorinfo_alone_in_widget_mode_shows_the_namespace_table(ip):
    """`%tensorinfo` with no argument in a kernel shows the filterable namespace table widget."""
    try:
        live, data = _widget_mode_outputs(ip, ["w = torch.arange(10.0)", "%tensorinfo"])
        assert WIDGET_MIME in live and "w" in data["text/plain"]
    finally:
        close_all()


def test_log_panel_selects_a_cell(example):
    """The log panel lists the cells and shows the chosen one's panel, closing the previous."""
    rec = example[0]
    lp = LogPanel([rec, rec], ["cell #1", "cell #2"])
    first = lp.panel
    lp.select.value = 1
    assert [o[0] for o in lp.select.options] == ["cell #1", "cell #2"]
    assert first.closed and lp.panel is not first and lp._holder.children == (lp.panel.widget,)
    lp.close()
    assert lp.panel is None


def test_tensorlog_in_widget_mode_has_a_cell_selector(ip, tmp_path):
    """`%tensorlog` in a kernel shows one panel behind a selector of the logged cells."""
    log = tmp_path / "run.jsonl"
    try:
        outs = _widget_mode_outputs(ip, [f"%%trackgrad --quiet --log {log}\na = torch.ones(2)",
                                         f"%%trackgrad --quiet --log {log}\nb = torch.zeros(3)",
                                         f"%tensorlog {log}"])  # fmt: skip
        live, data = outs
        assert WIDGET_MIME in live and data["text/plain"].startswith("tensormagic")
        (lp,) = [p for p in panel_display._unkeyed if isinstance(p, LogPanel)]
        assert len(lp.select.options) == 2 and "cell #2" in lp.select.options[1][0]
    finally:
        close_all()


def test_an_inference_tensors_version_reads_none_in_the_panels_tables():
    """An inference tensor keeps no version counter: the Tensors table's version reads "none"
    (not the recorder's -1), and its write's version cell says it wrote in place."""
    from tensormagic.views.panel_tables import INPLACE_COLUMNS, TENSOR_COLUMNS, tensor_rows

    with tensormagic.track() as rec, torch.inference_mode():
        a = torch.zeros(3)
        a.add_(1)
    (vcol,) = [c for c in TENSOR_COLUMNS if c.title == "version"]
    assert [vcol.text(r) for r in tensor_rows(rec)] == ["none"]
    (wcol,) = [c for c in INPLACE_COLUMNS if c.title == "version"]
    assert [wcol.text(e) for e in rec.filter(kind="inplace")] == ["in place (an inference tensor: no version counter)"]
