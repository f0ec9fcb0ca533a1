"""Cell numbers are the ``In [N]`` IPython gives the cell, on every IPython release the package allows.

IPython >= 9.8 counts a cell before ``pre_run_cell`` fires, earlier releases after the cell ran,
so the expected numbers here come from IPython itself: ``result.execution_count`` and the
``Cell In[N]`` its tracebacks print.
"""

from __future__ import annotations

import re
import warnings

import pytest
from IPython.utils.capture import capture_output

import tensormagic
from tensormagic.info import tensor_info
from tensormagic.log.reader import load_log

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _traceback_cells(text: str) -> set[int]:
    """The N of every ``Cell In[N]`` in an IPython traceback (``Input In [N]`` before IPython 8.6)."""
    return {int(n) for n in re.findall(r"(?:Cell|Input) In\s*\[(\d+)\]", ANSI.sub("", text))}


@pytest.mark.parametrize("store_history", [True, False])
def test_trackgrad_cell_number_is_the_one_ipython_tracebacks_print(ip, tmp_path, store_history):
    """A raising %%trackgrad cell's report, log and traceback all carry the number IPython gives the cell."""
    path = tmp_path / "n.jsonl"
    with capture_output() as cap:
        result = ip.run_cell(f"%%trackgrad --quiet --log {path}\nt1 = torch.ones(2)\nraise ValueError('x')\n",
                             store_history=store_history)  # fmt: skip
    cells = _traceback_cells(cap.stdout)
    assert len(cells) == 1, cap.stdout  # IPython's frame of the cell and the body's frame agree
    (n,) = cells
    if store_history:
        assert n == result.execution_count
    rec = tensormagic.last_recording()
    assert rec.cell == n and [r.cell for r in load_log(path)] == [n]


@pytest.mark.parametrize("store_history", [True, False])
def test_auto_tracked_cell_number_is_the_one_ipython_tracebacks_print(ip, tmp_path, store_history):
    """Under %trackgrad on, a raising cell's report and log carry the N of IPython's ``Cell In[N]``."""
    path = tmp_path / "a.jsonl"
    ip.run_line_magic("config", f"TensorMagic.log_path = {str(path)!r}")
    try:
        ip.run_cell("%trackgrad on --quiet", store_history=True)
        with capture_output() as cap:
            result = ip.run_cell("t2 = torch.ones(2)\nraise ValueError('x')\n", store_history=store_history)
        ip.run_cell("%trackgrad off", store_history=True)
    finally:
        ip.run_line_magic("config", "TensorMagic.log_path = None")
    (n,) = _traceback_cells(cap.stdout)
    if store_history:
        assert n == result.execution_count
    rec = tensormagic.last_recording()
    assert rec.cell == n and rec.events[0].cell == n and [r.cell for r in load_log(path)] == [n]


def test_auto_tracked_report_names_the_cell(ip):
    """The one-line summary of an auto-tracked cell says ``cell N`` for ``In [N]``."""
    ip.run_cell("%trackgrad on", store_history=True)
    with capture_output() as cap:
        result = ip.run_cell("t3 = torch.zeros(2)", store_history=True)
    ip.run_cell("%trackgrad off", store_history=True)
    texts = [o.data.get("text/plain", "") for o in cap.outputs]
    assert any(t.startswith(f"tensormagic · cell {result.execution_count} ·") for t in texts), texts


@pytest.mark.parametrize("how", ["%%trackgrad --quiet\n", ""])
def test_tensorinfo_says_the_cell_a_tensor_was_created_in(ip, how):
    """``%tensorinfo`` says ``created In[N]`` with the N of the cell that made the tensor."""
    if not how:
        ip.run_cell("%trackgrad on --quiet", store_history=True)
    result = ip.run_cell(f"{how}t4 = torch.ones(3) * 2\n", store_history=True)
    if not how:
        ip.run_cell("%trackgrad off", store_history=True)
    line = 2 if how else 1
    info = tensor_info(ip.user_ns["t4"], name="t4", namespace=ip.user_ns)
    assert info.created is not None and info.created.startswith(f"In[{result.execution_count}] line {line} by ")


def test_empty_and_silent_cells_are_not_recorded_and_do_not_shift_numbers(ip):
    """Under %trackgrad on, empty and silent cells make no recording and the next cell keeps its own number."""
    ip.run_cell("%trackgrad on --quiet", store_history=True)
    before = tensormagic.last_recording()
    ip.run_cell("", store_history=True)
    ip.run_cell("   \n", store_history=True)
    ip.run_cell("t5 = torch.ones(1)", silent=True)
    assert tensormagic.last_recording() is before
    result = ip.run_cell("t6 = torch.ones(1)", store_history=True)
    ip.run_cell("%trackgrad off", store_history=True)
    rec = tensormagic.last_recording()
    assert rec is not before and rec.cell == result.execution_count and rec.events[0].tensor.label == "t6"


def test_run_cell_inside_a_tracked_cell_stays_in_its_recording(ip):
    """A cell that runs another cell (run_cell) is recorded once, whole, under its own number."""
    shown = []
    ip.run_cell("%trackgrad on --quiet", store_history=True)
    auto = tensormagic.ipython.magics.load(ip).auto
    auto.on_done = shown.append
    result = ip.run_cell("get_ipython().run_cell('t7 = torch.ones(1)')\nt8 = torch.zeros(1)\n", store_history=True)
    ip.run_cell("%trackgrad off", store_history=True)
    assert len(shown) == 1 and shown[0].cell == result.execution_count
    assert [e.tensor.label for e in shown[0].events if e.kind == "create"] == ["t7", "t8"]


def test_trackgrad_called_from_a_function_of_an_earlier_cell(ip):
    """%%trackgrad run by a function defined in an earlier cell is numbered as the calling cell."""
    ip.run_cell("def f():\n    get_ipython().run_cell_magic('trackgrad', '--quiet -o fr', 't9 = torch.ones(1)\\n')\n",
                store_history=True)  # fmt: skip
    result = ip.run_cell("f()", store_history=True)
    assert result.success and ip.user_ns["fr"].cell == result.execution_count


def test_a_line_of_an_earlier_cell_names_that_cell_in_the_report(ip):
    """A function defined in an earlier cell and called from a tracked one: its line is
    ``In[N] line 2`` (N that cell's number), never a bare ``line 2`` of the tracked cell."""
    defined = ip.run_cell("def h(t):\n    return t.sin()\n", store_history=True)
    result = ip.run_cell("%%trackgrad --quiet -o hr\nk = h(torch.ones(2))\n", store_history=True)
    rec = ip.user_ns["hr"]
    assert result.success and rec.cell == result.execution_count != defined.execution_count
    text = rec.to_text()
    here = f"In[{defined.execution_count}] line 2"
    assert f"{here}  return t.sin()" in text and "  line 2  return t.sin()" not in text
    assert f"<td>{here}</td>" in rec.to_html()
    from tensormagic.views.lines import line_rows

    assert [r.where for r in line_rows(rec)] == ["line 2", here]  # torch.ones on the cell's line 2, then sin


def test_a_diagnostic_names_the_earlier_cell_a_tensor_was_made_in(ip):
    """grad-unfilled about a tensor made in a function of an earlier cell says ``In[N] line 2``."""
    defined = ip.run_cell("def make(x):\n    return x * 2\n", store_history=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's and tensormagic's warnings about the read: not this test's point
        ip.run_cell("%%trackgrad --quiet -o dr\nx = torch.ones(2, requires_grad=True)\ny = make(x)\n"
                    "y.sum().backward()\ng = y.grad\n", store_history=True)  # fmt: skip
    (d,) = ip.user_ns["dr"].diagnostics
    assert f"made by mul(), In[{defined.execution_count}] line 2)" in d.message


def test_a_card_names_the_earlier_cell_its_tensor_was_made_in(ip):
    """The card of ``k``, made by ``t.sin()`` in a function of an earlier cell, says ``In[N] line 2``."""
    from tensormagic.views.card import record_card_html

    defined = ip.run_cell("def h2(t):\n    return t.sin()\n", store_history=True)
    ip.run_cell("%%trackgrad --quiet -o cr\nk = h2(torch.ones(2))\n", store_history=True)
    rec = ip.user_ns["cr"]
    html = record_card_html(rec, rec.tensor("k"))
    assert f"In[{defined.execution_count}] line 2 by" in html and "<td>line 2</td>" not in html
