"""Every torch.compile backend x engine x way of compiling: results bit-identical tracked vs
untracked, and each compiled call one event.

Slow (inductor compiles cost seconds each), so it runs only where asked:
``TENSORMAGIC_COMPILE_MATRIX=1 python -m pytest -q -p no:cacheprovider tests/test_compile_matrix.py``
(``scripts/compat.sh`` runs it on the oldest and newest torch).  The default suite has the fast
part (``test_compile.py``, ``test_compile_events.py``).
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch
import torch._dynamo
from test_compile import ENGINES, _fresh_dynamo, _mlp, _step  # noqa: F401 - _fresh_dynamo is an autouse fixture
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from tensormagic import track

pytestmark = pytest.mark.skipif(
    os.environ.get("TENSORMAGIC_COMPILE_MATRIX") != "1", reason="the compile matrix: TENSORMAGIC_COMPILE_MATRIX=1"
)

BACKENDS = ["eager", "aot_eager", "inductor"]


def _compiled(way: str, model: nn.Module, backend: object) -> Callable[[torch.Tensor], torch.Tensor]:
    if way == "torch.compile(module)":
        return torch.compile(model, backend=backend, fullgraph=True)
    if way == "module.compile()":
        # fullgraph=True finds no frame to compile here even untracked (torch 2.13: the module's
        # _call_impl is in Dynamo's skip list when it is reached from module.compile())
        model.compile(backend=backend)
        return model
    return torch.compile(lambda x: model(x).tanh(), backend=backend, fullgraph=True)


@pytest.mark.parametrize("way", ["torch.compile(module)", "module.compile()", "@torch.compile function"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_before_the_block(engine, backend, way):
    """Compiled before the block: the untracked output and gradients, one extra graph, no break."""
    model = _mlp()
    cnt = CompileCounterWithBackend(backend)
    call = _compiled(way, model, cnt)
    x = torch.randn(3, 4)
    expected = _step(model, call, x)
    untracked = cnt.frame_count  # 0 for module.compile() of torch's own modules: Dynamo skips them
    graphs = []
    for _ in range(3):
        with track(engine=engine):
            got = _step(model, call, x)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        graphs.append(cnt.frame_count)
    assert graphs[0] <= 2 * untracked and graphs[-1] == graphs[0]  # one more per graph, once
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.parametrize("way", ["torch.compile(module)", "module.compile()", "@torch.compile function"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_inside_the_block(engine, backend, way):
    """Compiled and first called inside the block: the output and gradients of the same code untracked."""
    model = _mlp()
    x = torch.randn(3, 4)
    with track(engine=engine):
        got = _step(model, _compiled(way, model, backend), x)
    torch._dynamo.reset()
    fresh = _mlp()
    expected = _step(fresh, _compiled(way, fresh, backend), x)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert sum(counters["graph_break"].values()) == 0


class _Net(nn.Module):
    """The user's own module: ``module.compile()`` compiles its forward (torch's own modules' it skips)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.lin(x) * 2).relu()


_SOURCE = open(__file__, encoding="utf-8").read().splitlines()


def _line(fragment: str) -> int:
    (n,) = [i + 1 for i, text in enumerate(_SOURCE) if text.strip().startswith(fragment)]
    return n


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("when", ["before", "inside"])
@pytest.mark.parametrize("way", ["torch.compile(module)", "module.compile()", "@torch.compile function"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_each_compiled_call_is_one_event(engine, backend, way, when, grad):
    """Every backend, way and moment of compiling, with and without grad: each call is one event at
    its line, naming what was compiled, its input and its output, one graph, no other event there."""
    x = torch.randn(2, 4)
    if when == "before":
        net = _Net()
        call = _compiled(way, net, backend)
        with torch.set_grad_enabled(grad):
            expected = call(x)
    with track(engine=engine, namespace={"x": x}) as rec:
        if when == "inside":
            net = _Net()
            call = _compiled(way, net, backend)
        with torch.set_grad_enabled(grad):
            first = call(x)  # first tracked call
            second = call(x)  # second tracked call
    lines = [_line("first = call(x)"), _line("second = call(x)")]
    name = "<lambda>" if way == "@torch.compile function" else "_Net"
    got = [(e.kind, e.line, e.op, [r.label for r in e.inputs], [r.label for r in e.outputs], e.graphs)
           for e in rec.events if e.line in lines]  # fmt: skip
    assert got == [("compiled", lines[0], name, ["x"], ["first"], 1), ("compiled", lines[1], name, ["x"], ["second"], 1)]
    assert all(e.graph_ops for e in rec.events if e.kind == "compiled")
    if when == "before":
        assert torch.equal(first, expected) and torch.equal(second, expected)
