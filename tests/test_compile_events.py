"""A torch.compile'd call is recorded as one "compiled" event at the user's line.

Expected lines are counted from this file's source text; names, inputs and outputs are written
by hand from the code under the block; the op list is the model's own layers, in order.  The
eager and aot_eager backends run on both engines; inductor on the default engine, smallest model.
"""

from __future__ import annotations

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


def _run_module(engine: str, backend: str):
    model = _mlp()
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


@pytest.mark.parametrize("engine", ENGINES)
def test_backward_through_a_compiled_graph_records_its_gradients(engine):
    """A backward through the compiled graph fills each parameter's .grad, recorded as usual."""
    rec = _run_module(engine, "aot_eager")
    (bw,) = [e for e in rec.events if e.kind == "backward"]
    assert bw.line == _line("loss.backward()")
    assert sorted(g.tensor.label for g in bw.grads) == ["model.0.bias", "model.0.weight", "model.2.bias", "model.2.weight"]


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


@pytest.mark.skipif(len(ENGINES) < 2, reason="needs the compiled engine")
def test_engines_record_the_same_compiled_call():
    """Both engines give the compiled event the same op, line, module, inputs, outputs and graph."""
    got = {}
    for engine in ENGINES:
        rec = _run_module(engine, "aot_eager")
        torch._dynamo.reset()
        got[engine] = [(e.kind, e.op, e.line, e.module, _labels(e.inputs), _labels(e.outputs), e.graphs, e.graph_ops)
                       for e in rec.events]  # fmt: skip
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
    text = rec.to_text()
    assert "compiled out" in text
    assert "torch.compile'd: x → out · 1 graph: F.linear, F.relu, F.linear" in text
    assert "1 compiled call" in rec.summary_line()
    (back,) = load_log(path)
    assert [e for e in back.events if e.kind == "compiled"] == [e for e in rec.events if e.kind == "compiled"]
    assert out.shape == (3, 2)


def test_inductor_call_is_one_event():
    """inductor (default engine, smallest model): one event at the line, its input and output,
    one graph and no op list (inductor keeps no FX graph reachable: compiled.py)."""
    lin = nn.Linear(4, 2)
    compiled = torch.compile(lin, backend="inductor")
    x = torch.randn(3, 4)
    expected = compiled(x)
    with track(namespace={"lin": lin, "compiled": compiled, "x": x}) as rec:
        out = compiled(x)  # inductor call
    assert torch.equal(out, expected)
    assert [e.kind for e in rec.events] == ["compiled"]
    e = rec.events[0]
    assert (e.line, e.op) == (_line("out = compiled(x)  # inductor call"), "Linear")
    assert (_labels(e.inputs), _labels(e.outputs)) == (["x"], ["out"])
    assert (e.graphs, e.graph_ops) == (1, ())


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
