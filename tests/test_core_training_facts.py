"""Facts a user reads about a real training loop (Adam, ``clip_grad_norm_``, a DataLoader,
``zero_grad(set_to_none=True)``, a backward hook that makes a tensor), on both engines: casts called
casts, each step's tensors named with their step, torch's own warnings at the user's line, tensors
made in a backward hook never placed on a wrong line.

Expected names, lines and counts come from this file's source text (``_line``) or by hand."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

import tensormagic
from tensormagic.engine import warnsite
from tensormagic.views.panel_tables import inplace_table, move_totals_html, moves_table, tensor_rows, timeline_html

ENGINES = ("c", "python")
_SOURCE = open(__file__, encoding="utf-8").read().splitlines()
PARAMS = ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"]


def _line(fragment: str) -> int:
    """The line of this file whose statement starts with ``fragment`` (once)."""
    (n,) = [i + 1 for i, text in enumerate(_SOURCE) if text.strip().startswith(fragment)]
    return n


def _halve(g: torch.Tensor) -> torch.Tensor:
    return g * 0.5  # a backward hook that makes a tensor


def _train(engine: str):
    torch.manual_seed(0)
    X, Y = torch.randn(48, 8), torch.randint(0, 3, (48,))
    loader = DataLoader(TensorDataset(X, Y), batch_size=16)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hook = model[0].weight.register_hook(_halve)
    with tensormagic.track(engine=engine) as rec:
        for step, (xb, yb) in enumerate(loader):  # noqa: B007 - the loop target is what is named
            opt.zero_grad(set_to_none=True)
            pred = model(xb)
            loss = F.cross_entropy(pred, yb)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # noqa: F841
            opt.step()
            acc = (pred.argmax(1) == yb).float().mean()  # noqa: F841
    hook.remove()
    return rec


@pytest.fixture(scope="module", params=ENGINES)
def loop(request):
    return _train(request.param)


def _rows_at(text: str, line: int) -> list[str]:
    """The event rows the text report lists under ``line`` of this file (its first group)."""
    lines = text.splitlines()
    head = next(i for i, s in enumerate(lines) if re.match(rf"\s*\S+:{line}\s", s))
    rows = []
    for s in lines[head + 1:]:
        if not s.startswith(" " * 10):
            break
        rows.append(s.strip())
    return rows


# -- casts -----------------------------------------------------------------------------------------
def test_text_report_calls_a_cast_a_cast(loop):
    """``(pred == yb).float()`` is a ``cast`` row in the text report, never a ``move`` row."""
    rows = _rows_at(loop.to_text(width=200), _line("acc = (pred.argmax(1) == yb).float().mean()"))
    assert [r.split()[0] for r in rows] == ["new", "new", "cast", "new"]
    assert "move " not in loop.to_text(width=200)


def test_timeline_and_devices_tab_call_casts_casts(loop):
    """The panel's Timeline and Devices tab say ``cast``; the tab's totals count 3 casts, 0 moves,
    as the header does."""
    casts = [e for e in loop.events if e.kind == "move"]
    assert "<td class='tm-k-move'>cast</td>" in timeline_html(casts)
    assert "<td class='tm-k-move'>move</td>" not in timeline_html(loop.events)
    table = moves_table(loop)
    kinds = [table.columns[1].text(e) for e in table.rows]
    assert (table.columns[1].title, kinds) == ("kind", ["cast"] * 3)
    assert "<tr><td>cast</td><td>same device</td><td>bool → float32</td><td>3</td>" in move_totals_html(loop)
    assert "0 moves, 3 casts" in loop.summary_line()


@pytest.mark.parametrize("engine", ENGINES)
def test_cli_summary_counts_casts_apart_from_moves(engine, tmp_path):
    """``python -m tensormagic summary`` has a ``cast`` column: one cast (float) and one move (to meta)."""
    from tensormagic.cli import main
    from tensormagic.log import writer

    x = torch.zeros(3)
    path = tmp_path / "run.jsonl"
    with tensormagic.track(engine=engine, log=path, cell=1, source="y = x.double()"):
        y = x.double()  # noqa: F841
        m = x.to("meta")  # noqa: F841
    writer.close_all()
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["summary", str(path)])
    head, row = out.getvalue().splitlines()[:2]
    cols = head.split()
    values = row.split()[len(row.split()) - len(cols) + 2:]  # past "#", "exec" and the first line
    counts = dict(zip(cols[3:], values))
    assert (counts["move"], counts["cast"], counts["moved"]) == ("1", "1", "12")  # 3 float32 to meta


# -- steps -----------------------------------------------------------------------------------------
def test_loop_targets_are_named_with_their_step(loop):
    """Each batch is ``xb (step N)`` / ``yb (step N)`` in the text report, steps 1 to 3."""
    text = loop.to_text(width=200)
    stacks = [r for r in text.splitlines() if "torch.stack" in r and ("xb" in r or "yb" in r)]
    names = [re.search(r"new\s+(\S+ \(step \d+\))", r).group(1) for r in stacks]
    assert names == [f"{n} (step {s})" for s in (1, 2, 3) for n in ("xb", "yb")]


def test_each_steps_gradient_is_named_with_its_step(loop):
    """Each backward's new gradients are ``model.0.weight.grad (step N)``, and the In-place tab names
    ``clip_grad_norm_``'s writes to them with the same step."""
    rows = _rows_at(loop.to_text(width=200), _line("loss.backward()"))
    made = sorted(re.search(r"^new\s+(.+? \(step 1\))", r).group(1) for r in rows if r.startswith("new"))
    assert made == sorted(f"{p}.grad (step 1)" for p in PARAMS)
    table = inplace_table(loop)
    col = next(c for c in table.columns if c.title == "tensor")
    clip = _line("norm = torch.nn.utils.clip_grad_norm_")
    labels = sorted(col.text(e) for e in table.rows if e.line == clip)
    assert labels == sorted(f"{p}.grad (step {s})" for p in PARAMS for s in (1, 2, 3))


def test_tensors_tab_and_card_show_the_step(loop):
    """The Tensors tab's row and the card of the second batch say ``xb (step 2)``."""
    from tensormagic.views.card import record_card_html

    rows = [r for r in tensor_rows(loop) if r.names and r.names[0] == "xb"]
    assert [r.label for r in rows] == ["xb (step 1)", "xb (step 2)", "xb (step 3)"]
    assert "xb (step 2)" in record_card_html(loop, rows[1].trec)


def test_a_name_made_once_keeps_no_step(loop):
    """Adam's state, made in the first step only, and a parameter keep their plain names."""
    text = loop.to_text(width=200)
    assert "opt.state[model.0.weight].exp_avg " in text and "opt.state[model.0.weight].exp_avg (step" not in text
    assert "model.0.weight (step" not in text


@pytest.mark.parametrize("engine", ENGINES)
def test_step_label_is_bounded(engine):
    """A very long name is cut before its step is added: the label stays short."""
    from tensormagic.views.lines import MAX_STEP_NAME, step_labels

    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            a_name_of_seventy_characters_that_a_person_would_rarely_ever_type_xyz = torch.zeros(2)
            b = a_name_of_seventy_characters_that_a_person_would_rarely_ever_type_xyz + 1  # noqa: F841
    long = "a_name_of_seventy_characters_that_a_person_would_rarely_ever_type_xyz"
    short = long[: MAX_STEP_NAME - 1] + "…"
    assert sorted(step_labels(rec).values()) == [f"{short} (step 1)", f"{short} (step 2)", "b (step 1)", "b (step 2)"]


def test_separate_calls_of_a_module_are_no_steps(ip):
    """A cell without a loop that calls a module of an earlier cell from three lines, binding
    ``xb`` on two of them, states no step: the module's repeated lines came back from separate
    calls, so no ``xb (step 2)`` nor ``h (step 3)``; each is named plainly."""
    from testkit import run

    from tensormagic.views.lines import step_labels

    run(ip, "from torch import nn\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            "        self.fc = nn.Linear(4, 2)\n    def forward(self, x):\n        h = self.fc(x)\n"
            "        return h.relu()\nnet = Net()")  # fmt: skip
    run(ip, "%%trackgrad --quiet -o rec\nxb = torch.randn(3, 4)\na = net(xb)\nxb = torch.randn(5, 4)\n"
            "b = net(xb)\nc = net(torch.ones(1, 4))")  # fmt: skip
    rec = ip.user_ns["rec"]
    assert step_labels(rec) == {} and "(step" not in rec.to_text(width=200)
    assert [e.tensor.label for e in rec.events if e.op == "torch.randn"] == ["xb", "xb"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_line_after_the_loop_is_in_no_step(engine):
    """The model run on a line after a 2-step loop states no step: its ``model.0 output`` is not a
    second ``model.0 output (step 2)``, and a write after the loop is not step 2's version."""
    from tensormagic.views.lines import step_history, step_labels

    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    w = torch.zeros(2)
    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            out = model(torch.ones(1, 4))
            w.add_(1)
        val = model(torch.ones(1, 4))  # noqa: F841
        w.add_(1)
    del out
    labels = step_labels(rec)
    after = [e for e in rec.events if e.line == _line("val = model(torch.ones(1, 4))")]
    assert after and not [labels[e.tensor.id] for e in after if e.tensor.id in labels]
    assert sorted(v for v in labels.values() if v.startswith("model.0 output")) == [
        "model.0 output (step 1)", "model.0 output (step 2)"]
    n, hist = step_history(rec)
    assert n == 2 and [h.versions for h in hist if h.name == "w"] == [[1, 2]]


# -- warnings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_torch_warning_points_at_the_users_line(engine):
    """Reading ``.grad`` of a non-leaf warns at this file's line on both engines, not in tensormagic."""
    w = torch.randn(3, requires_grad=True)
    with tensormagic.track(engine=engine, diagnostics=()):
        h = w * 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            h.grad  # noqa: B018 - reading .grad of a non-leaf warns
    (wn,) = [c for c in caught if "leaf" in str(c.message)]
    assert (wn.filename, wn.lineno) == (__file__, _line("h.grad  # noqa: B018"))


@pytest.mark.parametrize("engine", ENGINES)
def test_default_filter_shows_a_warning_once_per_user_line(engine):
    """Under the "default" filter a warning shows once per user line, as untracked: two lines, two
    warnings; a loop line, one."""
    w = torch.randn(3, requires_grad=True)
    ns: dict = {"w": w}
    src = "h = w * 2\nh.grad\nh.grad\nfor _ in range(3):\n    h.grad\n"
    code = compile(src, "<loop-cell>", "exec")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        with tensormagic.track(engine=engine, diagnostics=()):
            exec(code, ns)
    assert [(c.filename, c.lineno) for c in caught if "leaf" in str(c.message)] == [
        ("<loop-cell>", 2), ("<loop-cell>", 3), ("<loop-cell>", 5)]


@pytest.mark.parametrize("engine", ENGINES)
def test_nothing_of_the_warning_redirect_is_left(engine):
    """After a block, even one that raises, ``warnings`` is as it was."""
    before = warnings._showwarnmsg
    with pytest.raises(RuntimeError), tensormagic.track(engine=engine):
        torch.ones(1)
        raise RuntimeError("boom")
    assert warnings._showwarnmsg is before and not warnsite.installed()


# -- backward hooks --------------------------------------------------------------------------------
def test_tensors_made_in_a_backward_hook_are_never_on_a_wrong_line(loop):
    """Every event sits on a line of the loop or of the hook (never ``?``, never tensormagic's own)."""
    body = {_line(f) for f in ("for step, (xb, yb) in enumerate(loader)", "opt.zero_grad", "pred = model(xb)",
                                 "loss = F.cross_entropy", "loss.backward()", "norm = torch.nn.utils",
                                 "opt.step()", "acc = (pred.argmax(1) == yb)")}  # fmt: skip
    hook_line = _line("return g * 0.5")
    assert {e.line for e in loop.events} <= body | {hook_line}
    assert all(e.file == __file__ for e in loop.events)


def _double_input_grad(module: nn.Module, grad_in: tuple, grad_out: tuple) -> tuple:
    return (grad_in[0] * 2,)  # a module's full backward hook that makes a tensor


@pytest.mark.parametrize("engine", ENGINES)
def test_module_backward_hook_tensors_are_never_on_a_wrong_line(engine):
    """A full backward hook that makes a tensor: every event is on a line of the block (the hook's
    tensor is not recorded: the mode is off while backward runs), the gradients are filled by
    ``backward`` on its own line, and nothing is placed at ``?``."""
    lin = nn.Linear(3, 2)
    handle = lin.register_full_backward_hook(_double_input_grad)
    x = torch.randn(4, 3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        y = lin(x * 1.0).sum()
        y.backward()
    handle.remove()
    lines = {_line("y = lin(x * 1.0).sum()"), _line("y.backward()")}
    assert {e.line for e in rec.events} <= lines | {_line("return (grad_in[0] * 2,)")}
    (bw,) = rec.filter(kind="backward")
    assert bw.line == _line("y.backward()")
    assert sorted(g.tensor.label for g in bw.grads) == ["lin.bias", "lin.weight", "x"]
    assert "?" not in [e.where.split()[0] for e in rec.events]


def test_text_report_lists_what_existed_before_the_block(loop):
    """The data and the parameters existed before the block; no tracked cell saw them made."""
    text = loop.to_text(width=200)
    assert ("existed before this cell:\n  no tracked cell saw these made: X, Y, model.0.weight, model.0.bias, "
            "model.2.weight, model.2.bias\n") in text  # fmt: skip


def test_a_report_line_cut_to_its_width_ends_in_an_ellipsis(loop):
    """A line longer than the report's width is cut and says so with "…", keeping its statement."""
    (line,) = [ln for ln in loop.to_text(width=60).splitlines() if "no tracked cell saw" in ln]
    full = "  no tracked cell saw these made: X, Y, model.0.weight, model.0.bias, model.2.weight, model.2.bias"
    assert line == full[:59] + "…"


@pytest.mark.parametrize("engine", ENGINES)
def test_no_step_is_stated_once_events_are_folded(engine):
    """Past ``max_events`` the repeats of the loop's head are folded: no tensor is given a step
    (a count of the kept events would number later steps wrongly)."""
    from tensormagic.views.lines import step_labels

    with tensormagic.track(engine=engine, max_events=30) as rec:
        for i in range(40):
            a = torch.zeros(2)
            b = a + 1  # noqa: F841
            if i == 39:
                c = a * 3  # noqa: F841 - a line first run after the folding began
    assert rec.folds and step_labels(rec) == {}
    assert "(step" not in rec.to_text(width=200)


def _dataset_loop(engine: str):
    """A DataLoader over a TensorDataset made before the block, inside a ``ConcatDataset``: its two
    tensors are held by no name the tracker reads, and no op in the block makes them."""
    torch.manual_seed(0)
    ds = ConcatDataset([TensorDataset(torch.randn(8, 4), torch.randn(8, 1))])
    loader = DataLoader(ds, batch_size=4)
    with tensormagic.track(engine=engine) as rec:
        for xb, yb in loader:
            loss = xb.sum() - yb.sum()  # noqa: F841
    return rec


@pytest.mark.parametrize("engine", ENGINES)
def test_tensors_no_op_made_are_first_seen_not_created(engine):
    """The dataset's two tensors, made before the block, count as "first seen", not as created, in
    the summary's counts before and after the events are built, and their rows say "seen"."""
    rec = _dataset_loop(engine)
    before = rec.counts()  # from the raw records: no event built yet
    creates = [e for e in rec.events if e.kind == "create"]
    assert sorted(e.tensor.shape for e in creates if e.origin == "seen") == [(8, 1), (8, 4)]  # by hand
    assert rec.counts() == before
    assert (before["seen"], before["create"]) == (2, len(creates) - 2)
    text = rec.to_text().splitlines()
    assert f"{len(creates) - 2} created, 2 first seen, " in text[0]
    rows = [ln.split() for ln in text if "(no visible op)" in ln]
    assert [r[0] for r in rows] == ["seen", "seen"]


@pytest.mark.parametrize("engine", ENGINES)
def test_first_seen_tensors_say_only_what_is_known(engine):
    """A tensor first met with no op and no maker on its line is not said to have appeared there:
    it was made before the block, or by code the tracker cannot see."""
    rec = _dataset_loop(engine)
    notes = {e.note for e in rec.events if e.kind == "create" and e.origin == "seen"}
    assert notes == {"first seen here: made before this block, or by code the tracker cannot see"}


def test_log_counts_first_seen_tensors_apart(tmp_path):
    """A log's cell counts the two first-seen tensors apart from the created ones, in the
    summary's counting scan and in a full parse alike."""
    from tensormagic.log.reader import iter_cells
    from tensormagic.log.writer import LogWriter

    rec = _dataset_loop("c")
    log = tmp_path / "run.jsonl"
    LogWriter(log).write(rec)
    scanned = [c.all_counts() for c in iter_cells(log, keep_events=False)]
    parsed = [c.all_counts() for c in iter_cells(log, keep_events=True)]
    assert scanned == parsed and scanned[0]["seen"] == 2
    assert scanned[0]["create"] == rec.counts()["create"]
