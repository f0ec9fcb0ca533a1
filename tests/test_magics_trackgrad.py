"""``%%trackgrad`` and ``%trackgrad on|off`` in a real InteractiveShell."""

from __future__ import annotations

import sys

import pytest
import torch
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from testkit import run
from torch.overrides import _len_torch_function_stack

import tensormagic

EXAMPLE = """%%trackgrad -o rec
x = torch.ones(2, 2, requires_grad=True)
y = x + 2
z = y * y * 3
out = z.mean()
out.backward()
"""


def test_cell_magic_records_with_magic_line_as_line_one(ip):
    """Events carry the cell's execution count and lines counted from the %%trackgrad line."""
    result = run(ip, EXAMPLE)
    assert result.success
    rec = ip.user_ns["rec"]
    assert [(e.kind, e.tensor.label, e.line) for e in rec.events if e.kind != "create" or e.origin == "op"] == [
        ("create", "x", 2), ("create", "y", 3),
        ("create", "y * y" if sys.version_info >= (3, 11) else rec.events[2].tensor.id, 4),
        ("create", "z", 4), ("create", "out", 5), ("backward", "out", 6)]
    assert rec.cell == result.execution_count and rec.events[1].source == "y = x + 2"
    assert rec.source.startswith("%%trackgrad -o rec\n")


def test_cell_magic_shows_report_and_keeps_out_clean(ip):
    """The report is displayed, the cell's value is the user's last expression, not the report."""
    with capture_output() as cap:
        result = run(ip, "%%trackgrad\nw = torch.ones(3)\nw * 2\n")
    assert "tensormagic · cell" in cap.stdout or any("tensormagic · cell" in o.data.get("text/plain", "")
                                                     for o in cap.outputs)
    assert isinstance(result.result, torch.Tensor) and torch.equal(result.result, torch.full((3,), 2.0))


def test_last_recording_is_the_latest(ip):
    """``tensormagic.last_recording()`` returns the recording of the latest tracked cell."""
    run(ip, "%%trackgrad --quiet\nq = torch.zeros(2)\n")
    assert tensormagic.last_recording().events[0].tensor.label == "q"


def test_print_output_behaves_as_without_the_magic(ip):
    """``print`` inside a tracked cell prints as usual."""
    with capture_output() as cap:
        run(ip, "%%trackgrad --quiet\nprint('hello from the cell')\n")
    assert "hello from the cell" in cap.stdout


def test_raising_cell_reraises_and_keeps_recording(ip):
    """The user's exception reaches IPython unchanged; the recording is kept, failed, and no mode remains."""
    with capture_output():
        result = run(ip, "%%trackgrad -o bad\na = torch.ones(3)\nraise ValueError('mine')\n")
    assert isinstance(result.error_in_exec, ValueError) and str(result.error_in_exec) == "mine"
    rec = ip.user_ns["bad"]
    assert rec.failed and rec.error == "ValueError: mine" and rec.events[0].line == 2
    assert _len_torch_function_stack() == 0


def test_traceback_points_at_the_users_line(ip):
    """The traceback shows the user's own line in the cell."""
    with capture_output() as cap:
        run(ip, "%%trackgrad --quiet\na = 1\nraise ValueError('here')\n")
    text = cap.stdout + cap.stderr
    assert "raise ValueError('here')" in text and "ValueError: here" in text


def test_a_failing_backward_traceback_shows_no_tensormagic_frame(ip):
    """A backward that torch refuses (a saved tensor written in place) fails with torch's own
    error, and the traceback shows the user's line and torch's frames, none of tensormagic's."""
    import os

    import tensormagic

    with capture_output() as cap:
        result = run(ip, "%%trackgrad --quiet\nx = torch.ones(2, requires_grad=True)\ny = (x * 2).sigmoid()\n"
                         "y.mul_(2)\ny.sum().backward()\n")  # fmt: skip
    text = cap.stdout + cap.stderr
    assert isinstance(result.error_in_exec, RuntimeError) and "modified by an inplace operation" in text
    assert "y.sum().backward()" in text and "_engine_run_backward" in text
    assert os.path.dirname(tensormagic.__file__) not in text


def test_keyboard_interrupt_leaves_nothing(ip):
    """A KeyboardInterrupt in a tracked cell propagates; the recording is failed and no mode remains."""
    with capture_output():
        result = run(ip, "%%trackgrad -o intr\nk = torch.ones(1)\nraise KeyboardInterrupt\n")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert ip.user_ns["intr"].failed and _len_torch_function_stack() == 0


def test_stats_flag_records_statistics(ip):
    """``--stats`` computes statistics during the cell."""
    run(ip, "%%trackgrad --stats --quiet -o srec\ns = torch.tensor([1.0, 5.0])\n")
    assert ip.user_ns["srec"].events[0].stats.max == 5.0


def test_auto_tracking_records_every_cell(ip):
    """``%trackgrad on`` records each following cell with its own line numbers until ``off``."""
    run(ip, "%trackgrad on --quiet")
    r1 = run(ip, "b = torch.zeros(3)\nb.add_(1)")
    rec1 = tensormagic.last_recording()
    run(ip, "c = b * 2")
    rec2 = tensormagic.last_recording()
    run(ip, "%trackgrad off")
    run(ip, "d = torch.ones(1)")
    assert rec1.cell == r1.execution_count and [(e.kind, e.line) for e in rec1.events] == [("create", 1), ("inplace", 2)]
    assert rec2.events[0].tensor.label == "c" and tensormagic.last_recording() is rec2
    assert _len_torch_function_stack() == 0


def test_auto_tracking_shows_a_summary_line(ip):
    """Each auto-tracked cell shows a one-line summary with its counts."""
    run(ip, "%trackgrad on")
    with capture_output() as cap:
        run(ip, "e = torch.zeros(2)")
    run(ip, "%trackgrad off")
    texts = [o.data.get("text/plain", "") for o in cap.outputs]
    assert any(t.startswith("tensormagic · cell") and "1 created" in t for t in texts)


def test_tensormagics_own_statistics_are_not_the_cells_tensors(ip):
    """Under ``%trackgrad on``, ``%tensorinfo x`` and ``rec.to_text()`` compute statistics of
    ``x`` and ``x.grad`` (detach, min, max, …): those are tensormagic's ops, not the cell's, so
    such cells touch no tensor, record none and print no summary."""
    run(ip, "import tensormagic\nx = torch.ones(3, requires_grad=True)\n(x * 2).sum().backward()")
    run(ip, "%trackgrad on")
    with capture_output() as cap:
        run(ip, "%tensorinfo x")
        info_rec = ip.user_ns["tensormagic"].last_recording()
        run(ip, "text = tensormagic.last_recording().to_text()")
        text_rec = ip.user_ns["tensormagic"].last_recording()
    run(ip, "%trackgrad off")
    assert "all 1" in cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)  # %tensorinfo ran
    assert len(info_rec.events) == 0 and len(text_rec.events) == 0
    assert not any(o.data.get("text/plain", "").startswith("tensormagic · cell") for o in cap.outputs)


def test_a_refused_log_path_warns_at_the_cell_not_in_tensormagic(ip, tmp_path):
    """``%%trackgrad --log notes.txt`` on a file that is not a tensormagic log leaves it as it was
    and warns once, placed at the cell's magic line (``<cell N>``, line 1), as diagnostics are,
    not at a line of tensormagic's own code."""
    from tensormagic.log.writer import LogWarning

    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    n = ip.execution_count
    with pytest.warns(LogWarning, match="is not a tensormagic log") as caught:
        run(ip, f"%%trackgrad --quiet --log {notes}\nx = torch.ones(2)")
    assert notes.read_text() == "precious\n"
    (w,) = [w for w in caught if issubclass(w.category, LogWarning)]
    assert (w.filename, w.lineno) == (f"<cell {n}>", 1)


def test_trackgrad_cell_while_on_records_once(ip):
    """A %%trackgrad cell while auto-tracking is on is recorded once, with its own options."""
    run(ip, "%trackgrad on --quiet")
    before = tensormagic.last_recording()
    run(ip, "%%trackgrad --quiet --stats -o once\nf = torch.ones(2)\n")
    run(ip, "%trackgrad off")
    rec = ip.user_ns["once"]
    assert rec is tensormagic.last_recording() and rec is not before
    assert rec.stats_enabled and len(rec.filter(kind="create")) == 1


def test_auto_tracking_raising_cell_is_balanced(ip):
    """A raising cell under ``%trackgrad on`` still ends its recording, failed, with no mode left."""
    run(ip, "%trackgrad on --quiet")
    with capture_output():
        run(ip, "g = torch.ones(2)\nraise RuntimeError('x')")
    run(ip, "%trackgrad off")
    rec = tensormagic.last_recording()
    assert rec.failed and rec.error == "RuntimeError: x" and _len_torch_function_stack() == 0


def test_internal_failure_switches_tracking_off_once(ip):
    """A callback that fails internally warns once, switches tracking off and never raises into IPython."""
    from tensormagic.api import TrackingWarning
    from tensormagic.ipython.session import AutoTracker, Options

    def broken(*a, **k):
        raise RuntimeError("internal")

    auto = AutoTracker(ip, Options(quiet=True), lambda rec: None, make_track=broken)
    auto.start()
    with pytest.warns(TrackingWarning, match="switched off"):
        result = run(ip, "h = 1")
    assert result.success and not auto.active
    assert auto.pre_run_cell not in ip.events.callbacks["pre_run_cell"]


@pytest.mark.parametrize("line, message", [
    ("sideways", "unknown mode 'sideways'"),
    ("--bogus", "unrecognized arguments"),
])  # fmt: skip
def test_bad_trackgrad_input_is_a_usage_error(ip, line, message):
    """Bad ``%trackgrad`` input is a one-line UsageError saying what to do."""
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("trackgrad", line)


def test_line_magic_with_output_is_a_usage_error(ip):
    """``%trackgrad on -o rec`` binds nothing (``-o`` is the cell magic's): refused, tracking stays off."""
    with pytest.raises(UsageError, match="-o"):
        ip.run_line_magic("trackgrad", "on -o rec")
    auto = ip.magics_manager.registry["TensorMagic"].auto
    assert auto is None or not auto.active


def test_cell_magic_output_that_is_a_keyword_is_a_usage_error(ip):
    """``%%trackgrad -o for`` would bind a name no code can read: refused before the cell runs."""
    ip.user_ns.pop("ran", None)
    with pytest.raises(UsageError, match="-o needs a variable name"):
        ip.run_cell_magic("trackgrad", "-o for", "ran = 1\n")
    assert "ran" not in ip.user_ns and "for" not in ip.user_ns


def test_cell_magic_with_mode_is_a_usage_error(ip):
    """``%%trackgrad on`` is refused with a hint."""
    with pytest.raises(UsageError, match="takes no mode"):
        ip.run_cell_magic("trackgrad", "on", "x = 1\n")


def test_help_comes_from_docstring_and_arguments(ip):
    """``%trackgrad?`` shows the docstring and the generated usage."""
    doc = ip.find_line_magic("trackgrad").__doc__
    assert "Track what the torch code" in doc and "--stats" in doc and "-o NAME" in doc


def test_internal_recording_failure_switches_auto_tracking_off(ip):
    """A recording that fails inside auto-tracking warns once and turns tracking off."""
    from tensormagic.api import TrackingWarning
    from tensormagic.ipython.session import AutoTracker, Options, _make_track

    def failing_track(*a, **k):
        t = _make_track(*a, **k)
        t.block = ("<no such file>", 1, None)
        original = t.__exit__

        def exit_then_break(*exc):
            out = original(*exc)
            t.recording.internal_error = "RuntimeError: simulated"
            return out

        t.__exit__ = exit_then_break
        return t

    auto = AutoTracker(ip, Options(quiet=True), lambda rec: None, make_track=failing_track)
    auto.start()
    with pytest.warns(TrackingWarning, match="switched off.*simulated"):
        result = run(ip, "k = torch.ones(1)")
    assert result.success and not auto.active and _len_torch_function_stack() == 0


# A shell of its own, in a fresh process: IPython drives a top-level ``await`` with an event loop
# of this thread, and in the full suite the browser tests' session-long ``sync_playwright()``
# keeps one running in pytest's main thread (then even the untracked cell cannot run).
AWAIT_SCRIPT = r"""
import json, sys
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

ip = InteractiveShell.instance()
ip.run_cell("%load_ext tensormagic")
ip.run_cell("import asyncio, torch\nasync def made(n):\n    await asyncio.sleep(0)\n    return torch.ones(n)")
plain = ip.run_cell("a = await made(3)\na * 2", store_history=True)
with capture_output():
    tracked = ip.run_cell("%%trackgrad -o rec\nb = await made(3)\nc = b * 2\nawait made(2)", store_history=True)
rec = ip.user_ns.get("rec")
json.dump({
    "plain": plain.success and plain.result.tolist(),
    "tracked": tracked.success and tracked.result.tolist(),
    "error": repr(tracked.error_in_exec),
    "c": ip.user_ns["c"].tolist() if "c" in ip.user_ns else None,
    "made": [[e.op.rsplit(".", 1)[-1], e.tensor.label] for e in rec.events if e.kind == "create"] if rec else None,
}, sys.stdout)
print()
"""


def test_cell_magic_runs_top_level_await_as_the_untracked_cell_does():
    """A %%trackgrad cell with top-level ``await`` (IPython's autoawait) runs, returns the awaited
    last expression and records the ops of the awaited code, as the same cell untracked runs."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", AWAIT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])  # a failing cell prints its traceback first
    assert got["plain"] == [2.0, 2.0, 2.0]
    assert got["tracked"] == [1.0, 1.0], got["error"]
    assert got["c"] == got["plain"]
    made = got["made"]
    assert made[:2] == [["ones", "b"], ["mul", "c"]] and made[2][0] == "ones" and len(made) == 3
