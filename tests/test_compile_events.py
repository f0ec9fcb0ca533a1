"""A torch.compile'd call is recorded as one "compiled" event at the user's line.

Expected lines are counted from this file's source text; names, inputs and outputs are written
by hand from the code under the block; the op list is the model's own layers, in order.  The
eager and aot_eager backends run on both engines; inductor on the default engine, smallest model.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch._dynamo
from torch import nn

from tensormagic import track
from tensormagic.engine.mode import default_engine
from tensormagic.log.reader import load_log
from tensormagic.log.writer import close_all

ENGINES = ["c", "python"] if default_engine() == "c" else ["python"]
_SOURCE = open(__file__, encoding="utf-8").read().splitlines()


def _line(fragment: str) -> int:
    """The line of this file whose statement starts with ``fragment`` (once)."""
    (n,) = [i + 1 for i, text in enumerate(_SOURCE) if text.strip().startswith(fragment)]
    return n


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _labels(refs) -> list[str]:
    return [r.label for r in refs]


def _run_module(engine: str, backend: str, model: nn.Module | None = None):
    model = _mlp() if model is None else model
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(3, 4)
    compiled(x)  # compiled before the block
    with track(engine=engine, namespace={"model": model, "compiled": compiled, "x": x}) as rec:
        out = compiled(x)  # the compiled call
        loss = out.sum()
        loss.backward()
    del out, loss
    return rec


@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_module_call_is_one_event_with_its_graph(engine):
    """torch.compile(module), eager backend: one "compiled" event at the call's line, naming the
    module, with its input, its output named by the line, one graph and the model's ops."""
    rec = _run_module(engine, "eager")
    calls = [e for e in rec.events if e.kind == "compiled"]
    assert len(calls) == 1
    e = calls[0]
    assert (e.file, e.line) == (__file__, _line("out = compiled(x)  # the compiled call"))
    assert e.op == "Sequential"
    assert _labels(e.inputs) == ["x"]
    assert _labels(e.outputs) == ["out"]
    assert e.tensor.label == "out" and e.tensor.shape == (3, 2)
    assert e.graphs == 1
    assert e.graph_ops == ("torch.nn.functional.linear", "torch.nn.functional.relu", "torch.nn.functional.linear")


@pytest.mark.parametrize("engine", ENGINES)
def test_graph_ops_are_not_events_of_their_own(engine):
    """aot_eager: the graph's aten ops leave no event; every event is at a line of this file."""
    rec = _run_module(engine, "aot_eager")
    assert [e.kind for e in rec.events if e.line == _line("out = compiled(x)  # the compiled call")] == ["compiled"]
    assert {e.file for e in rec.events} == {__file__}
    e = next(e for e in rec.events if e.kind == "compiled")
    assert (e.op, _labels(e.inputs), _labels(e.outputs), e.graphs) == ("Sequential", ["x"], ["out"], 1)
    # AOTAutograd's forward graph, as ATen ops: a Linear is a transpose and an addmm
    assert e.graph_ops == ("aten.t.default", "aten.addmm.default", "aten.relu.default", "aten.t.default",
                           "aten.addmm.default")  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_backward_through_a_compiled_graph_records_its_gradients(engine):
    """aot_eager: a backward through the compiled graph fills each parameter's .grad, recorded as usual."""
    rec = _run_module(engine, "aot_eager")
    (bw,) = [e for e in rec.events if e.kind == "backward"]
    assert bw.line == _line("loss.backward()")
    assert sorted(g.tensor.label for g in bw.grads) == ["model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]


def tanh_layer(x, w):
    return (x @ w).tanh()


@pytest.mark.parametrize("engine", ENGINES)
def test_backward_through_an_inductor_graph_records_its_gradients(engine):
    """inductor (smallest graph): the call, the loss, then what any backward records: the .grad it
    fills and the backward event.  The output is saved for backward, so AOTAutograd's runtime
    detaches it outside the graph: part of the call, not an event.  With inductor's caches off the
    backward graph is lowered inside ``backward()``, as on a machine that never compiled it; the
    lowering's own torch calls (``torch.empty([1])`` from code inductor ``exec``s) are no events."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fx_graph_cache=False), functorch_config.patch(enable_autograd_cache=False):
        f = torch.compile(tanh_layer, backend="inductor")
        x, w = torch.randn(3, 4), torch.randn(4, 2, requires_grad=True)
        f(x, w)
        with track(engine=engine, namespace={"x": x, "w": w}) as rec:
            out = f(x, w)  # inductor call with grad
            total = out.sum()
            total.backward()
    bw_line = _line("total.backward()")
    assert {e.file for e in rec.events} == {__file__}
    # AOTAutograd's backward prologue (the incoming gradient made contiguous) runs while backward's
    # engine runs with the mode on the stack: recorded at the backward line, said to be during it
    during = [e for e in rec.events if e.note and e.note.startswith(("during backward()", "first seen during"))]
    assert [e.line for e in during] == [bw_line] * 3
    got = [(e.kind, e.tensor.label, e.line) for e in rec.events if e not in during]
    assert got == [("compiled", "out", _line("out = f(x, w)  # inductor call with grad")),
                   ("create", "total", _line("total = out.sum()")), ("create", "w.grad", bw_line),
                   ("backward", "total", bw_line)]  # fmt: skip
    assert _labels(rec.events[0].inputs) == ["x", "w"]
    assert [(g.tensor.label, g.shape) for g in rec.events[-1].grads] == [("w", (4, 2))]


def scale_and_clip(a, b):
    return (a * b).clamp(min=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_function_call_names_the_function_and_its_tensors(engine):
    """A compiled function: the event names it, its two inputs and its output."""
    f = torch.compile(scale_and_clip, backend="eager")
    a, b = torch.randn(5), torch.randn(5)
    with track(engine=engine, namespace={"a": a, "b": b}) as rec:
        y = f(a, b)  # compiled function
        z = y + 1
    (e,) = [e for e in rec.events if e.kind == "compiled"]
    assert (e.line, e.op) == (_line("y = f(a, b)  # compiled function"), "scale_and_clip")
    assert (_labels(e.inputs), _labels(e.outputs)) == (["a", "b"], ["y"])
    assert e.graph_ops == ("torch.Tensor.mul", "torch.Tensor.clamp")  # ``a * b`` is torch's operator.mul
    (add,) = [x for x in rec.events if x.line == _line("z = y + 1")]
    assert _labels(add.inputs) == ["y"]  # the compiled call's output, known to the next op
    assert torch.equal(z, (a * b).clamp(min=0) + 1)


def _renumbered(labels: list[str], ids: dict[str, str]) -> list[str]:
    return [ids.setdefault(x, f"t#{len(ids)}") if re.fullmatch(r"t[0-9]+", x) else x for x in labels]


@pytest.mark.skipif(len(ENGINES) < 2, reason="needs the compiled engine")
def test_engines_record_the_same_compiled_call():
    """Both engines give the compiled event the same op, line, module, inputs, outputs and graph."""
    got = {}
    for engine in ENGINES:
        rec = _run_module(engine, "aot_eager")
        torch._dynamo.reset()
        ids: dict[str, str] = {}  # an unnamed tensor's label is its id, a process-wide count: renumbered
        got[engine] = [(e.kind, e.op, e.line, e.module, _renumbered(_labels(e.inputs), ids),
                        _renumbered(_labels(e.outputs), ids), e.graphs, e.graph_ops) for e in rec.events]  # fmt: skip
    assert got["c"] == got["python"]


def test_text_report_and_log_show_the_compiled_call(tmp_path):
    """The text report words the call; a log written and read back keeps the event whole."""
    path = tmp_path / "log.jsonl"
    model = _mlp()
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(3, 4)
    with track(log=str(path), namespace={"model": model, "compiled": compiled, "x": x}) as rec:
        out = compiled(x)  # logged compiled call
    close_all()
    text = rec.to_text(width=200)  # one row, unwrapped
    assert "compiled out" in text
    assert "torch.compile'd: x → out · 1 graph: F.linear, F.relu, F.linear" in text
    assert "1 compiled call" in rec.summary_line()
    (back,) = load_log(path)
    assert [e for e in back.events if e.kind == "compiled"] == [e for e in rec.events if e.kind == "compiled"]
    assert out.shape == (3, 2)


def shift_and_clip(a):
    return (a * 2 + 1).relu()


def test_fully_fused_inductor_call_is_one_event():
    """inductor fuses the whole function into one C++ kernel (under no_grad no torch call reaches
    the mode): still one event at the line, its input, its output named, no output "seen" later,
    the untracked numbers, and the ATen ops of the graph inductor lowered (default engine)."""
    f = torch.compile(shift_and_clip, backend="inductor")
    x = torch.randn(8)
    with torch.no_grad():
        expected = f(x)
    with track(namespace={"x": x}) as rec:
        with torch.no_grad():
            y = f(x)  # fused inductor call
        after = y + 1
    assert torch.equal(y, expected)
    assert [(e.kind, e.line) for e in rec.events] == [("compiled", _line("y = f(x)  # fused inductor call")),
                                                      ("create", _line("after = y + 1"))]  # fmt: skip
    e = rec.events[0]
    assert (e.op, _labels(e.inputs), _labels(e.outputs)) == ("shift_and_clip", ["x"], ["y"])
    assert (e.graphs, e.graph_ops) == (1, ("aten.mul.Tensor", "aten.add.Tensor", "aten.relu.default"))
    assert _labels(rec.events[1].inputs) == ["y"]
    assert torch.equal(after, expected + 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_recording_holds_no_tensor_of_a_compiled_call(engine):
    """A call whose result nothing looks at: the frame read for it is dropped by the block's end."""
    import weakref

    f = torch.compile(scale_and_clip, backend="eager")
    a = torch.randn(5)
    with track(engine=engine, namespace={}) as rec:
        f(a, a)
    # ``a`` is first seen by the call (the namespace given is empty): a "seen" creation, then the call
    assert [(e.kind, len(e.inputs), len(e.outputs)) for e in rec.events] == [("create", 0, 0), ("compiled", 2, 1)]
    gone = weakref.ref(a)
    del a
    assert gone() is None


def _hidden(gm: torch.fx.GraphModule, example_inputs):
    """A backend whose graph makes no torch call a function mode sees, as inductor's fused kernels do."""

    def run(*args):
        with torch._C.DisableTorchFunction():
            return gm(*args)

    return run


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("when", ["before", "inside"])
def test_call_of_a_graph_no_mode_sees_is_one_event(engine, when):
    """A graph the mode cannot see into, compiled before the block or first compiled inside it:
    the call that compiles for the block (Dynamo's end-of-compile callback) and the next one, run
    from Dynamo's cache (its guard-complete hook), are one event each, with the input, the output
    named, and the one graph with Dynamo's ops."""
    f = torch.compile(shift_and_clip, backend=_hidden)
    x = torch.randn(6)
    if when == "before":
        f(x)
    with track(engine=engine, namespace={"x": x}) as rec:
        y = f(x)  # hidden graph, compiled
        y2 = f(x)  # hidden graph, cached
    assert [(e.kind, e.line) for e in rec.events] == [("compiled", _line("y = f(x)  # hidden graph, compiled")),
                                                      ("compiled", _line("y2 = f(x)  # hidden graph, cached"))]  # fmt: skip
    ops = ("torch.Tensor.mul", "torch.Tensor.add", "torch.Tensor.relu")
    assert [(e.op, _labels(e.inputs), _labels(e.outputs), e.graphs, e.graph_ops) for e in rec.events] == [
        ("shift_and_clip", ["x"], ["y"], 1, ops), ("shift_and_clip", ["x"], ["y2"], 1, ops)]  # fmt: skip
    assert torch.equal(y, (x * 2 + 1).relu()) and torch.equal(y2, y)


def two_graphs(a):
    b = a.sin()
    torch._dynamo.graph_break()
    return b.cos()


def test_graphs_after_a_graph_break_are_counted():
    """A graph break splits the function in two graphs: the event counts both and lists both's ops."""
    f = torch.compile(two_graphs, backend="eager")
    x = torch.randn(4)
    f(x)
    with track(namespace={"x": x}) as rec:
        y = f(x)  # two graphs
    (e,) = [e for e in rec.events if e.kind == "compiled"]
    assert (e.line, e.graphs) == (_line("y = f(x)  # two graphs"), 2)
    assert e.graph_ops == ("torch.Tensor.sin", "torch.Tensor.cos")
    assert _labels(e.outputs) == ["y"]


def test_a_compiled_call_in_another_thread_is_not_this_blocks():
    """Dynamo's hooks serve every thread: a compiled call another thread makes while a block runs
    is not in that block's recording."""
    import threading

    f = torch.compile(shift_and_clip, backend=_hidden)
    x = torch.randn(6)
    f(x)
    with track(namespace={"x": x}) as rec:
        t = threading.Thread(target=f, args=(x,))
        t.start()
        t.join()
    assert [e.kind for e in rec.events] == []
