"""torch.compile under tracking: compiled code stays compiled and gives the same numbers.

Dynamo's own counters are the oracle: ``CompileCounterWithBackend`` counts the graphs it compiles,
``torch._dynamo.utils.counters["graph_break"]`` its graph breaks, and a code object it compiled
holds cache entries.  Expected values come from torch run without tracking.  These run on both
engines with the eager and aot_eager backends (fast); one inductor test runs on the default
engine.  The full backend x engine matrix is in ``test_compile_matrix.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import warnings
from typing import Any, Callable

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from tensormagic import track
from tensormagic.engine.mode import default_engine

ENGINES = ["c", "python"] if default_engine() == "c" else ["python"]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch and sees only its own counters."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _step(model: nn.Module, call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """One forward and backward; the output and every gradient, copied."""
    for p in model.parameters():
        p.grad = None
    out = call(x)
    out.square().mean().backward()
    return [out.detach().clone()] + [p.grad.clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _tensormagic_code() -> list[Any]:
    """Every function's code object in tensormagic's modules (methods included)."""
    codes = []
    for name, mod in list(sys.modules.items()):
        if not (name == "tensormagic" or name.startswith("tensormagic.")):
            continue
        for obj in vars(mod).values():
            members = [obj] + (list(vars(obj).values()) if inspect.isclass(obj) else [])
            for m in members:
                fn = getattr(m, "__func__", m)
                code = getattr(fn, "__code__", None)
                if code is not None and fn.__module__ and fn.__module__.startswith("tensormagic"):
                    codes.append(code)
    return codes


@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_function_compiles_once_more_for_tracking_and_never_breaks(engine):
    """A function compiled before the block gets one extra graph for tracking, however many blocks, and no break."""
    cnt = CompileCounterWithBackend("eager")
    f = torch.compile(lambda x, w: (x @ w).relu().sum(), backend=cnt)
    x, w = torch.randn(3, 4), torch.randn(4, 5)
    expected = f(x, w)
    for _ in range(3):
        with track(engine=engine):
            got = f(x, w)
        assert torch.equal(got, expected)
    assert torch.equal(f(x, w), expected)
    assert cnt.frame_count == 2  # untracked, tracked: torch guards on the mode stack
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_compiled_module_forward_backward_bit_identical(engine):
    """torch.compile(module) with aot_eager: the untracked output and gradients, one extra graph for tracking."""
    model = _mlp()
    cnt = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=cnt)
    x = torch.randn(3, 4)
    expected = _step(model, compiled, x)
    for _ in range(2):
        with track(engine=engine):
            got = _step(model, compiled, x)
        assert _same(got, expected)
    assert cnt.frame_count == 2
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_module_compile_method_bit_identical(engine):
    """module.compile() gives the untracked output and gradients under tracking, without a graph break."""
    model = _mlp()
    model.compile(backend="aot_eager")
    x = torch.randn(3, 4)
    expected = _step(model, model, x)
    with track(engine=engine):
        got = _step(model, model, x)
    assert _same(got, expected)
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_fullgraph_compiled_inside_the_block(engine):
    """A fullgraph=True function compiled and first called inside the block runs and matches the untracked result."""
    x, w = torch.randn(3, 4), torch.randn(4, 5, requires_grad=True)
    expected = (x @ w).relu().sum()
    with track(engine=engine):
        f = torch.compile(lambda x, w: (x @ w).relu().sum(), backend="aot_eager", fullgraph=True)
        got = f(x, w)
        got.backward()
    assert torch.equal(got, expected)
    assert torch.equal(w.grad, torch.autograd.grad(expected, w)[0])


@pytest.mark.parametrize("engine", ENGINES)
def test_explain_finds_one_graph_under_tracking(engine):
    """torch._dynamo.explain of a module's step under tracking sees one graph and no break."""
    model = _mlp()
    x = torch.randn(3, 4)
    with track(engine=engine):
        report = torch._dynamo.explain(model)(x)
    assert report.graph_count == 1
    assert report.graph_break_count == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_dynamo_compiles_no_tensormagic_frame_and_warns_nothing(engine, caplog):
    """Compiled code run under tracking: no tensormagic function compiled, and no Python or Dynamo
    log warning beyond what the same code warns untracked (torch 2.15 on Python 3.13.0 warns about
    slow guards whatever runs), none of them naming tensormagic."""
    model, other = _mlp(), _mlp()
    compiled = torch.compile(model, backend="eager")
    other.compile(backend="eager")  # Dynamo skips torch's modules: it meets the frames they call
    f = torch.compile(lambda x: (x * 2 + 1).relu().sum(), backend="eager")
    x = torch.randn(3, 4)
    caplog.set_level(logging.WARNING, logger="torch")

    def warned(tracked: bool) -> set[str]:
        caplog.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                with track(engine=engine) if tracked else contextlib.nullcontext():
                    _step(model, compiled, x)
                    _step(other, other, x)
                    f(x)
        logged = {r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING}
        return {str(w.message) for w in caught} | logged

    untracked = warned(False)
    tracked = warned(True)
    assert tracked - untracked == set()
    assert [m for m in tracked if "tensormagic" in m] == []
    compiled_here = [c.co_qualname for c in _tensormagic_code() if _debug_get_cache_entry_list(c)]
    assert compiled_here == []


def test_no_global_hook_left_after_a_block():
    """After a block (even one that raises) no global module hook and no warnings filter of ours is left."""
    filters = list(warnings.filters)
    with pytest.raises(ValueError):
        with track():
            _mlp()(torch.randn(1, 4))
            raise ValueError("user error")
    assert not torch.nn.modules.module._has_any_global_hook()
    assert warnings.filters == filters


def test_dynamo_hooks_are_chained_and_set_back():
    """A guard-complete hook set before the block still runs for every cached call inside it and
    is Dynamo's hook again after it (even a block that raises); no end-of-compile callback stays."""
    from torch._C._dynamo.eval_frame import set_guard_complete_hook

    hits: list[bool] = []

    def theirs(cache_hit: bool) -> bool:
        hits.append(cache_hit)
        return True

    f = torch.compile(lambda x: x.sin(), backend="eager")
    x = torch.randn(3)
    callbacks = list(torch._dynamo.callback_handler.end_callbacks)
    before = set_guard_complete_hook(theirs)
    try:
        with pytest.raises(ValueError):
            with track():
                f(x)  # compiled for the block
                f(x)  # from the cache
                raise ValueError("user error")
        assert hits == [True]
        assert set_guard_complete_hook(before) is theirs
    finally:
        set_guard_complete_hook(before)
    assert torch._dynamo.callback_handler.end_callbacks == callbacks


def test_inductor_forward_backward_bit_identical():
    """The inductor backend gives the untracked output and gradients under tracking (default engine, smallest model)."""
    lin = nn.Linear(4, 2)
    compiled = torch.compile(lin, backend="inductor")
    x = torch.randn(3, 4)
    expected = _step(lin, compiled, x)
    with track():
        got = _step(lin, compiled, x)
    assert _same(got, expected)
    assert sum(counters["graph_break"].values()) == 0


@pytest.mark.skipif(len(ENGINES) < 2, reason="needs the compiled engine")
def test_engines_record_the_same_compiled_block():
    """A block that compiles a module and runs it forward and backward gets the same events from both engines."""
    events = {}
    for engine in ENGINES:
        torch._dynamo.reset()
        model, x = _mlp(), torch.randn(3, 4)
        with track(engine=engine, namespace={"model": model, "x": x}) as rec:
            compiled = torch.compile(model, backend="aot_eager")
            compiled(x).sum().backward()
        events[engine] = [(e.kind, e.op, e.module, e.line) for e in rec.events]
    assert events["c"] == events["python"]
    assert len(events["c"]) > 5


def _double_grad(g: torch.Tensor) -> torch.Tensor:
    return g * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_compiled_backward_graphs_ops_are_not_recorded(engine):
    """aot_eager compiles a backward graph, which runs while backward's engine runs with the mode
    on the stack: none of its aten ops is an event (they belong to the backward call), the user's
    hook on a parameter still is, and the gradients are the untracked ones."""
    model = _mlp()
    model[0].weight.register_hook(_double_grad)
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(3, 4)
    expected = _step(model, compiled, x)
    with track(engine=engine) as rec:
        got = _step(model, compiled, x)
    assert _same(got, expected)
    assert not [e for e in rec.events if e.op.startswith("aten.") or (e.file or "").startswith("<eval_with_key>")]
    hook_line = _double_grad.__code__.co_firstlineno + 1
    assert [e.op for e in rec.events if e.line == hook_line and e.origin == "op"] == ["torch.Tensor.mul"]


@contextlib.contextmanager
def _torch_compiling() -> Any:
    """The state Dynamo holds while it compiles (and a non-strict ``torch.export`` while it traces):
    ``torch.compiler.is_compiling()`` is True in code that runs eagerly."""
    before = torch.compiler._is_compiling_flag
    torch.compiler._is_compiling_flag = True
    try:
        assert torch.compiler.is_compiling()  # torch's own answer, the oracle
        yield
    finally:
        torch.compiler._is_compiling_flag = before


@pytest.mark.parametrize("engine", ENGINES)
def test_mode_passes_calls_through_while_torch_compiles(engine):
    """While ``torch.compiler.is_compiling()`` is True, the mode's Python entry (the one
    ``F.relu``'s ``handle_torch_function`` calls, and Dynamo inlines) records nothing."""
    x = torch.randn(3, 4)
    with track(engine=engine) as rec:
        with _torch_compiling():
            torch.nn.functional.relu(x)  # not recorded
        torch.nn.functional.relu(x)  # recorded
    assert [e.op for e in rec.events if e.kind == "create"] == ["torch.nn.functional.relu"]


@pytest.mark.parametrize("engine", ENGINES)
def test_mode_passes_calls_from_c_through_while_torch_compiles(engine):
    """While ``torch.compiler.is_compiling()`` is True, calls torch dispatches from C (``x * 2``,
    ``x.sum()``) are passed through too, on the compiled engine's C entry as on the Python one."""
    x = torch.randn(3, 4)
    with track(engine=engine) as rec:
        with _torch_compiling():
            (x * 2).sum()  # not recorded
        y = x * 3  # noqa: F841 - recorded
    assert [e.op for e in rec.events if e.kind == "create"] == ["torch.Tensor.mul"]


@pytest.mark.parametrize("engine", ENGINES)
def test_non_strict_export_records_only_what_runs_on_real_tensors(engine):
    """``torch.export.export(…, strict=False)`` traces the model with fake tensors while the compile
    flag is set: neither engine records its ``F.linear`` on them; the exported module's run is
    recorded, on both engines alike."""
    m = _mlp()
    x = torch.randn(2, 4)
    with track(engine=engine) as rec:
        ep = torch.export.export(m, (x,), strict=False)
        out = ep.module()(x)
    assert torch.equal(out, m(x))
    assert not [e for e in rec.events if e.op == "torch.nn.functional.linear"]
    assert [e.op for e in rec.events if e.kind == "create" and e.tensor.device == "cpu"] == [
        "aten.linear.default", "aten.relu.default", "aten.linear.default"]  # fmt: skip


def test_module_hooks_keep_no_path_while_torch_compiles():
    """While ``torch.compiler.is_compiling()`` is True, the global module hooks put no module on the stack."""
    from tensormagic.engine.modules import ModuleStack

    net = _mlp()
    st = ModuleStack()
    st.__enter__()
    try:
        with _torch_compiling():
            net(torch.randn(1, 4))
        assert st.roots == [] and st.current is None
        net(torch.randn(1, 4))
        assert [r() for r in st.roots] == [net]  # the hooks themselves are on
    finally:
        st.__exit__()
