"""The panel on training loops (Lines, Steps, clicks, find, page box), the words it counts in,
and diagnostics shown once: by the display, not again on stderr, with `warnings` filters intact."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch
from IPython.utils.capture import capture_output

import tensormagic
from tensormagic.views.panel import Panel, close_all, header_html
from tensormagic.views.panel_lines import lines_table


@dataclass
class Finding:
    """The fields the views read from a diagnostic (``events.Diagnostic``)."""

    id: str
    severity: str
    where: str
    message: str
    fix: str = ""


def _loop(steps: int = 3, stats: bool = False) -> tuple[tensormagic.Recording, torch.Tensor]:
    w = torch.zeros(4)
    x = torch.ones(2, 3)
    with tensormagic.track(stats=stats) as rec:
        for _ in range(steps):
            y = x * 2
            w.add_(1)
    return rec, w


@pytest.fixture
def loop():
    rec, w = _loop()
    p = Panel(rec)
    yield rec, p
    p.close()


def _row(table, op: str):
    return next(r for r in table.rows if r.op.endswith(op))


def test_lines_sum_each_op_per_line(loop):
    """Three steps of `y = x * 2` and `w.add_(1)`: two rows, 3 events each, 3 tensors of 2×3 float32
    made (72 bytes) on one, 3 writes on the other."""
    rec, p = loop
    t = p.lines.table
    assert len(t.rows) == 2
    mul, add = _row(t, "mul"), _row(t, "add_")
    assert (mul.count, mul.made, mul.shapes, mul.dtypes, mul.allocated) == (3, 3, {(2, 3): 3}, {"float32": 3}, 72)
    assert (add.count, add.made, add.writes) == (3, 0, 3)
    assert "72 B" in p.lines.body.value and "y = x * 2" in p.lines.body.value


def test_lines_count_calls_not_events():
    """Ten steps of a 2-linear model: counts by hand per line × op (a split or max is one call with
    two outputs, backward one call that fills four gradients, SGD one add_ per parameter)."""
    from tensormagic.views.lines import line_rows

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 4)
    with tensormagic.track() as rec:
        for _step in range(10):
            opt.zero_grad()
            out = model(x)
            a, b = out.split(1, dim=1)
            _m, _i = out.max(dim=1)
            loss = (a - b).pow(2).mean()
            loss.backward()
            opt.step()
    rows = {r.op.rsplit(".", 1)[-1]: r for r in line_rows(rec)}
    got = {op: (r.calls, r.made, dict(r.shapes), r.dtypes, r.allocated, r.writes) for op, r in rows.items()}
    f4 = {"float32": 10}
    assert got["linear"] == (20, 20, {(5, 8): 10, (5, 2): 10}, {"float32": 20}, 10 * 5 * 8 * 4 + 10 * 5 * 2 * 4, 0)
    assert got["split"] == (10, 20, {(5, 1): 20}, {"float32": 20}, 0, 0)  # views allocate nothing
    assert got["max"] == (10, 20, {(5,): 20}, {**f4, "int64": 10}, 10 * 5 * 4 + 10 * 5 * 8, 0)
    assert got["backward"] == (10, 40, {(8, 4): 10, (8,): 10, (2, 8): 10, (2,): 10}, {"float32": 40},
                               10 * (32 + 8 + 16 + 2) * 4, 0)  # fmt: skip
    assert got["add_"] == (40, 0, {}, {}, 0, 40)
    assert rows["split"].count == 20 and rows["backward"].count == 50  # the events behind the calls


def test_a_casts_lines_row_says_its_bytes():
    """Five steps of ``X = X.double().float()`` on 8×4 floats: the ``.double`` row reads "5 casts ·
    1.2 KB" (5 × 32 float64 = 1,280 B) and the ``.float`` row "5 casts · 640 B" (5 × 32 float32),
    in the Lines table's moves-and-casts column (by hand)."""
    from tensormagic.views.table import render_table

    X = torch.ones(8, 4)
    with tensormagic.track() as rec:
        for _ in range(5):
            X = X.double().float()
    t = lines_table(rec)
    (col,) = [c for c in t.columns if c.title == "moves & casts"]
    got = {r.op.rsplit(".", 1)[-1]: col.text(r) for r in t.rows}
    assert got == {"double": "5 casts · 1.2 KB", "float": "5 casts · 640 B"}
    assert "5 casts · 1.2 KB" in render_table(t.columns, t.rows)


def test_lines_do_not_count_first_sights_as_made():
    """`lin = Linear(3, 2)` makes two tensors with torch.empty and wraps them in Parameters no op
    makes; with `torch.ones` and the linear output, ops made 4 tensors, and 2 were first seen."""
    from tensormagic.views.lines import line_rows

    with tensormagic.track() as rec:
        lin = torch.nn.Linear(3, 2)
        lin(torch.ones(1, 3))
    rows = line_rows(rec)
    assert sum(r.made for r in rows) == 4 and sum(r.seen for r in rows) == 2
    assert sum(r.allocated for r in rows) == (6 + 2 + 3 + 2) * 4  # weight, bias, ones, output: float32


def test_summary_counts_before_the_events_are_made_equal_those_after():
    """Counts, moves, casts and bytes moved read from the raw records (a summary line makes no
    event) equal those read from the events: views, writes, backward, moves, casts and folds."""
    x = torch.ones(4, 3, requires_grad=True)
    with tensormagic.track(max_events=40, diagnostics=[]) as rec:
        for _ in range(12):
            y = (x * 2).sum()
            y.backward()
            v = x.detach()[0]
            v.add_(0)
            x.to("meta")
            x.double()
    before = (rec.counts(), rec.move_counts(), rec.bytes_moved(), rec.summary_line())
    assert rec.__dict__.get("_pending") is not None  # nothing above made the events
    assert len(rec.events) == 40 and rec.folds
    after = (rec.counts(), rec.move_counts(), rec.bytes_moved(), rec.summary_line())
    assert before == after
    assert after[1][:2] != (0, 0) and after[2] > 0 and after[1][2] > 0  # moves, casts, folded moves


def test_inspect_selector_lists_matches_from_every_page():
    """61 products (`x * i`, then `target = x * 100`): filtered by op the matches span three pages
    and the selector lists all 61, so `target` on the last page is picked and its card opens."""
    x = torch.ones(2)
    with tensormagic.track() as rec:
        for i in range(60):
            x * i
        target = x * 100  # noqa: F841 - named by the block's end
    p = Panel(rec)
    try:
        v = p.tensors
        v.filter.value = "mul"
        assert v.table.total == 61 and v.table.pages == 3
        picks = [(label, tid) for label, tid in v.picker.options if tid]
        assert len(picks) == 61
        (tid,) = [tid for label, tid in picks if label.startswith("target ")]
        v.picker.value = tid
        assert "<h4>target " in p.card.value
    finally:
        p.close()


def test_lines_tab_is_first_in_a_loop(loop):
    """A cell with a loop opens on Lines; the page rows carry the click key of their row."""
    _rec, p = loop
    assert p.tabs.titles[0] == "Lines" and p.tabs.children[0].children
    assert 'data-tm="l:0"' in p.lines.body.value and 'data-tm="l:1"' in p.lines.body.value


def test_clicking_a_lines_row_shows_its_events(loop):
    """A click on a row (its key through the hidden box) fills the card with that row's events."""
    _rec, p = loop
    i = _row(p.lines.table, "add_").index
    p.click.value = f"l:{i} 1700000000000"
    assert "3 events" in p.card.value and p.card.value.count(">version ") == 3


def test_clicking_a_tensor_opens_its_card(loop):
    """A click on a tensor's key opens its card, as picking it in a selector does."""
    rec, p = loop
    p.click.value = f"t:{rec.tensor('w').id} 1"
    assert "<h4>w " in p.card.value and p.selected == rec.tensor("w").id


def test_lines_leave_out_empty_columns(loop):
    """A cell without moves or findings has no moves or diagnostics column; writes stay (add_)."""
    rec, _p = loop
    titles = [c.title for c in lines_table(rec).columns]
    assert "writes" in titles and "moves & casts" not in titles and "diagnostics" not in titles


def test_steps_give_each_written_tensor_its_version_per_step(loop):
    """`w.add_(1)` in each of 3 steps: w's version is 1, 2, 3 at the end of the steps."""
    from tensormagic.views.lines import step_history

    rec, p = loop
    n, hist = step_history(rec)
    (w,) = [s for s in hist if s.name == "w"]
    assert n == 3 and w.versions == [1, 2, 3] and w.means == [None, None, None]
    assert "Steps" in p.tabs.titles and "track with --stats" in p.steps.value


def test_steps_with_stats_give_mean_and_norm_per_step():
    """With stats, w = zeros(4) after k adds of 1 has mean k and norm sqrt(4·k²) = 2k."""
    from tensormagic.views.lines import step_history

    rec, _w = _loop(stats=True)
    (w,) = [s for s in step_history(rec)[1] if s.name == "w"]
    assert w.means == [1.0, 2.0, 3.0]
    assert [round(v, 6) for v in w.norms] == [2.0, 4.0, 6.0]


def test_steps_list_the_gradients_each_step_received():
    """Two backward calls in a loop: the leaf's gradient is listed as received in both steps."""
    from tensormagic.views.lines import step_history

    a = torch.ones(3, requires_grad=True)
    with tensormagic.track() as rec:
        for _ in range(2):
            loss = (a * 3).sum()
            loss.backward()
    (g,) = [s for s in step_history(rec)[1] if s.grad]
    assert g.name == "a.grad" and g.versions == [0, 1]  # new, then accumulated


def test_find_searches_every_page():
    """Finding a name opens its card though its row is on the last page; a partial name lists links."""
    with tensormagic.track() as rec:
        x = torch.zeros(1)
        for i in range(60):
            x = x + i
        target = x * 2
    p = Panel(rec, page_size=25)
    try:
        p.find.value = "target"
        assert "<h4>target " in p.card.value
        p.find.value = "targ"
        assert "1 found" in p.found.value and f"data-tm='t:{rec.tensor('target').id}'" in p.found.value
        p.find.value = "nothing-like-it"
        assert "no tensor named like" in p.found.value
    finally:
        p.close()


def test_page_box_jumps_to_a_page():
    """Typing 3 in the page box shows page 3 of 3 (rows 51–61)."""
    with tensormagic.track() as rec:
        x = torch.zeros(1)
        for i in range(60):
            x = x + i
    p = Panel(rec, page_size=25)
    try:
        t = p.tensors
        t.page.value = 3
        assert "rows 51–61 of 61" in t.status.value and t.next.disabled
        t.prev.click()
        assert t.page.value == 2
    finally:
        p.close()


def test_counts_use_thousands_separators():
    """1,200 tensors made: the header says "1,200 created", as it says "1,200 tensors"."""
    with tensormagic.track(max_events=5000) as rec:
        for _ in range(1200):
            torch.zeros(1)
    head = header_html(rec)
    assert "1,200 created" in head and "1,200 tensors" in head


def test_badge_and_summary_name_the_severity_the_entries_state():
    """An error-level finding: the badge and the summary line say "1 error", as the entry does."""
    rec, _w = _loop()
    rec.diagnostics = [Finding("inplace-saved", "error", "line 3", "a will fail")]
    p = Panel(rec)
    try:
        assert "⚠ 1 error" in p.header.value and "tm-sev-error" in p.header.value
        assert "1 error" in rec.summary_line() and "warning" not in rec.summary_line()
        assert ">error</span>" in p.diagnostics.value
    finally:
        p.close()
        rec.diagnostics = []


def test_trackgrad_on_prints_nothing_for_a_cell_without_tensors(ip):
    """Under `%trackgrad on`, a cell that touches no tensor displays nothing; one that does, a line."""
    ip.run_line_magic("config", "TensorMagic.display = 'html'")
    try:
        ip.run_line_magic("trackgrad", "on --quiet")
        ip.run_line_magic("trackgrad", "off")
        ip.run_line_magic("trackgrad", "on")
        with capture_output() as quiet:
            ip.run_cell("n = 1 + 1", store_history=True).raise_error()
        with capture_output() as loud:
            ip.run_cell("t = torch.ones(2)", store_history=True).raise_error()
    finally:
        ip.run_line_magic("trackgrad", "off")
        ip.run_line_magic("config", "TensorMagic.display = 'auto'")
        close_all()
    assert quiet.outputs == [] and quiet.stdout == ""
    assert len(loud.outputs) == 1 and "1 created" in loud.outputs[0].data["text/plain"]


def test_text_display_never_renders_html(ip, monkeypatch):
    """In text mode (a terminal) the HTML report is never built: only text reaches the screen."""
    calls = []
    original = tensormagic.Recording.to_html
    monkeypatch.setattr(tensormagic.Recording, "to_html", lambda self: calls.append(1) or original(self))
    ip.run_line_magic("config", "TensorMagic.display = 'text'")
    try:
        with capture_output() as out:
            ip.run_cell("%%trackgrad\nt = torch.ones(2)", store_history=True).raise_error()
            ip.run_line_magic("trackgrad", "on")
            ip.run_cell("u = torch.zeros(2)", store_history=True).raise_error()
            ip.run_line_magic("trackgrad", "off")
    finally:
        ip.run_line_magic("config", "TensorMagic.display = 'auto'")
    assert calls == [] and [list(o.data) for o in out.outputs] == [["text/plain"], ["text/plain"]]


# -- diagnostics shown once: a real shell in a fresh process (pytest itself records warnings) -----

SCRIPT = textwrap.dedent('''
    import contextlib, io, json, sys, warnings
    from IPython.testing.globalipapp import start_ipython
    from tensormagic.diagnostics import InplaceSavedWarning
    ip = start_ipython()
    ip.run_line_magic("load_ext", "tensormagic")
    ip.run_cell("import torch")
    CELL = ("%%trackgrad\\nx = torch.randn(3, requires_grad=True)\\na = x.exp()\\na.add_(1)\\n"
            "import warnings; warnings.warn('mine')")
    def run(cell, display="html"):
        ip.run_line_magic("config", f"TensorMagic.display = '{display}'")
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            r = ip.run_cell(cell)
        return err.getvalue(), out.getvalue(), r
    res = {}
    err, out, r = run(CELL)
    res["shown"] = {"stderr": err, "stdout": out}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=InplaceSavedWarning)
        err, out, r = run(CELL)
    res["error"] = type(r.error_in_exec).__name__
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        run(CELL)
    res["recorded"] = [w.category.__name__ for w in log]
    ip.run_line_magic("config", "TensorMagic.display = 'text'")
    ip.run_line_magic("trackgrad", "on")
    err, out, r = run(CELL.split("\\n", 1)[1], display="text")
    ip.run_line_magic("trackgrad", "off")
    res["terminal_summary"] = err
    print("RESULT" + json.dumps(res))
''')


@pytest.fixture(scope="module")
def warned() -> dict:
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, p.stdout + p.stderr
    return json.loads(line[len("RESULT"):])


def test_a_shown_diagnostic_is_not_printed_again(warned):
    """The report states the finding; stderr does not repeat it, and the cell's own warning still prints."""
    assert "inplace-saved" in warned["shown"]["stdout"]
    assert "InplaceSavedWarning" not in warned["shown"]["stderr"] and "mine" in warned["shown"]["stderr"]


def test_error_filter_still_raises_the_diagnostic(warned):
    """`filterwarnings("error", category=InplaceSavedWarning)` still turns the finding into an exception."""
    assert warned["error"] == "InplaceSavedWarning"


def test_catch_warnings_still_records_the_diagnostic(warned):
    """`catch_warnings(record=True)` around the cell still receives the finding."""
    assert "InplaceSavedWarning" in warned["recorded"]


def test_terminal_summary_keeps_the_printed_diagnostic(warned):
    """`%trackgrad on` in a terminal shows one line per cell: there the warning still prints."""
    assert "InplaceSavedWarning" in warned["terminal_summary"]


# -- colours: WCAG AA in light and dark themes -------------------------------------------------------


def _contrast(fg: str, bg: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""

    def lum(c: str) -> float:
        r, g, b = (int(c[i : i + 2], 16) / 255 for i in (1, 3, 5))
        f = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in (r, g, b)]
        return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2]

    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _text_colours(css: str) -> tuple[list[str], list[str]]:
    """(light, dark) text colours of the panel's kind and status classes."""
    import re

    light, dark = [], []
    for rule in re.findall(r"([^{}]+)\{color:(#[0-9a-f]{6})\}", css):
        (dark if "data-jp-theme-light" in rule[0] else light).append(rule[1])
    return light, dark


@pytest.mark.parametrize("module", ["tensormagic.views.table", "tensormagic.views.html"])
def test_text_colours_reach_aa_contrast_in_both_themes(module):
    """Every coloured text reaches 4.5:1 on JupyterLab's light (#ffffff, striped rows ≈ #ebebeb) and
    dark (#111111, #2b2b2b) backgrounds."""
    import importlib

    light, dark = _text_colours(importlib.import_module(module).STYLE)
    assert len(light) >= 5 and len(dark) >= 5
    assert min(_contrast(c, bg) for c in light for bg in ("#ffffff", "#ebebeb")) >= 4.5
    assert min(_contrast(c, bg) for c in dark for bg in ("#111111", "#2b2b2b")) >= 4.5


def test_graph_colours_come_from_the_theme():
    """The autograd picture's nodes, text and edges are painted from JupyterLab's theme variables."""
    from tensormagic.views.table import STYLE

    for part in ("svg text{fill:var(--jp-content-font-color1", ".node polygon{\n fill:var(--jp-layout-color2",
                 ".edge path{stroke:var(--jp-content-font-color2"):  # fmt: skip
        assert part in STYLE


def test_a_lines_rows_events_name_an_earlier_steps_input_with_its_step():
    """Clicking ``out = lin(X)``'s row lists step 2's call as reading ``X (step 1)``, as the
    Timeline and the text report say, not the last step's bare ``X``."""
    from tensormagic.views.lines import step_labels
    from tensormagic.views.panel_lines import row_events_html

    lin, X = torch.nn.Linear(2, 1), torch.ones(3, 2)
    with tensormagic.track() as rec:
        for _ in range(3):
            out = lin(X)  # noqa: F841
            X = X * 2
    (row,) = [r for r in lines_table(rec).rows if r.op.endswith("linear")]
    assert "← X (step 1), lin.weight, lin.bias" in row_events_html(row, step_labels(rec))
