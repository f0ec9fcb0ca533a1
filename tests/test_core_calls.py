"""The calls the mode records the long way (keywords, ``.data =``, NumPy, ``_foreach`` writes,
failing calls, watched calls, tensor subclasses), on both engines.

Each test pins what a user sees in the recording; expected values are written by hand, taken
from torch (``_version``, dtypes, results of the same code untracked) or counted in this file's
source text (``testkit.line_with``).  Found by mutation testing (``scripts/mutation.sh``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from testkit import line_with
from torch import nn

import tensormagic

ENGINES = ["c", "python"]


def _ops_by_keyword(engine: str) -> tuple[tensormagic.Recording, float]:
    start = time.perf_counter_ns()
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        x = torch.arange(6.0).reshape(2, 3)
        c = torch.empty(3)
        for _ in range(2):  # an op's second call is the compiled engine's own
            s = torch.sum(x, dim=0)
            d = x.to(torch.float64)  # noqa: F841
            torch.add(s, 1, out=c)
    return rec, (time.perf_counter_ns() - start) / 1000.0


@pytest.mark.parametrize("engine", ENGINES)
def test_event_times_lie_within_the_block_in_order(engine: str) -> None:
    """Every event's time (when its call began) is inside the block and no earlier than the one before."""
    rec, block_us = _ops_by_keyword(engine)  # the block's wall time, measured around it here
    times = [e.time_us for e in rec.events]
    assert len(times) == 9  # arange, reshape, empty, then sum, to and add(out=) twice
    assert all(0 <= t <= block_us for t in times), (times, block_us)
    assert times == sorted(times)


@pytest.mark.parametrize("engine", ENGINES)
def test_ops_with_keywords_and_moves_are_recorded_at_their_lines(engine: str) -> None:
    """``torch.sum(x, dim=0)`` and ``x.to(torch.float64)`` make their tensors at their own lines, both times."""
    rec, _ = _ops_by_keyword(engine)
    got = [(e.op, e.line) for e in rec.events if e.op in ("torch.sum", "torch.Tensor.to")]
    want = [("torch.sum", line_with("s = torch.sum(x, dim=0)", _ops_by_keyword)),
            ("torch.Tensor.to", line_with("d = x.to(torch.float64)", _ops_by_keyword))]  # fmt: skip
    assert got == want * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_code_a_library_execd_is_not_the_users_place(engine: str) -> None:
    """A function a library made with ``exec`` (bare globals, as inductor's op handlers) and called
    from its own code is the library's: its op is placed at the user's line, not ``<string>``."""
    import functools

    made: dict[str, Any] = {}
    exec("def double(t):\n    return t * 2\n", made)
    double = functools.singledispatch(made["double"])  # the stdlib's wrapper calls it
    users: dict[str, Any] = {"torch": torch}
    exec("def triple(t):\n    return t * 3\n", users)  # the user's exec'd code, called by the user
    x = torch.ones(2)
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        y = double(x)  # noqa: F841
        z = users["triple"](x)  # noqa: F841
    assert [(e.file, e.line) for e in rec.events] == [(__file__, line_with("y = double(x)")), ("<string>", 2)]


def _keyword_inputs(engine: str, form: str) -> tensormagic.Recording:
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        a = torch.ones(3)
        b = torch.full((3,), 2.0)
        c = torch.empty(3)
        for _ in range(2):
            if form == "create":
                y = torch.add(a, other=b)  # noqa: F841
            elif form == "out":
                torch.add(a, other=b, out=c)
            else:
                a.add_(other=b)
    return rec


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("form", "kind", "label", "inputs"),
                         [("create", "create", "y", ["a", "b"]), ("out", "inplace", "c", ["a", "b"]),
                          ("inplace", "inplace", "a", ["b"])])  # fmt: skip
def test_a_tensor_passed_by_keyword_is_an_input(engine: str, form: str, kind: str, label: str, inputs: list[str]) -> None:
    """``other=b`` names ``b`` among the event's inputs, for an op, an ``out=`` write and an in-place op."""
    rec = _keyword_inputs(engine, form)
    op = "torch.Tensor.add_" if form == "inplace" else "torch.add"
    got = [(e.tensor.label, [t.label for t in e.inputs]) for e in rec.filter(kind=kind) if e.op == op]
    assert got == [(label, inputs)] * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_data_assignment_of_another_dtype_is_a_move(engine: str) -> None:
    """``p.data = t`` with a float64 ``t`` is a move of ``p`` from float32 to float64, at its line."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        p = nn.Parameter(torch.ones(3))
        p.data = torch.zeros(3, dtype=torch.float64)
    (e,) = rec.filter(kind="move")
    got = (e.op, e.tensor.label, e.line, e.from_dtype, e.to_dtype)
    assert got == ("torch.Tensor.data.__set__", "p", line_with("p.data = torch.zeros(3, dtype"), "float32", "float64")
    assert p.dtype == torch.float64


@pytest.mark.parametrize("engine", ENGINES)
def test_data_assignment_of_the_same_kind_is_a_write_at_the_version_it_had(engine: str) -> None:
    """``q.data = t`` of the same dtype and device is an in-place event on ``q`` at its line, at ``q``'s own version."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        q = torch.ones(3)
        q.add_(1)
        q.add_(1)
        q.data = torch.zeros(3)
    e = rec.filter(kind="inplace")[-1]
    got = (e.op, e.tensor.label, e.line, e.version_before)
    assert got == ("torch.Tensor.data.__set__", "q", line_with("q.data = torch.zeros(3)"), 2)
    assert q._version == 2  # torch: two add_, and .data = bumps nothing


@pytest.mark.parametrize("engine", ENGINES)
def test_numpy_call_is_an_event_at_its_line(engine: str) -> None:
    """``t.numpy()`` is a ``numpy`` event of ``t`` named after the method, at its line."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        t = torch.ones(3)
        n = t.numpy()  # noqa: F841
    (e,) = rec.filter(kind="numpy")
    assert (e.op, e.tensor.label, e.line) == ("torch.Tensor.numpy", "t", line_with("n = t.numpy()"))


@pytest.mark.parametrize("engine", ENGINES)
def test_foreach_write_is_a_write_of_each_tensor_in_its_list(engine: str) -> None:
    """``_foreach_mul_`` on a list (what ``foreach`` optimizers run) writes ``a`` then ``b``, version 0 to 1."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        a = torch.ones(2)
        b = torch.ones(2)
        torch._foreach_mul_([a, b], 2.0)
    line = line_with("torch._foreach_mul_([a, b], 2.0)")
    got = [(e.op, e.tensor.label, e.line, e.version_before, e.version_after) for e in rec.filter(kind="inplace")]
    assert got == [("torch._foreach_mul_", "a", line, 0, 1), ("torch._foreach_mul_", "b", line, 0, 1)]
    assert (a._version, b._version) == (1, 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failing_call_with_a_keyword_tensor_is_explained(engine: str) -> None:
    """``mm`` with a float64 ``mat2=`` raises torch's own error; the float64 diagnostic names both tensors at that line."""
    with pytest.warns(tensormagic.diagnostics.DtypeFloat64Warning), pytest.raises(RuntimeError, match="same dtype"):
        with tensormagic.track(engine=engine) as rec:
            a = torch.ones(2, 2)
            b64 = torch.ones(2, 2, dtype=torch.float64)
            torch.mm(a, mat2=b64)
    (d,) = [d for d in rec.diagnostics if d.id == "dtype-float64"]
    assert (sorted(d.names), d.line) == (["a", "b64"], line_with("torch.mm(a, mat2=b64)"))
    assert rec.internal_error is None


def _fail(*args: Any) -> None:
    raise RuntimeError("simulated")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seam", ["record_hooks", "error_hooks", "call_watch"])
def test_a_failing_extension_stops_recording_and_says_why(engine: str, seam: str) -> None:
    """A record hook, error hook or call watch that raises stops recording, names its error, and changes no result."""
    t = tensormagic.track(engine=engine, diagnostics=None)
    x = torch.ones(3)
    with pytest.warns(tensormagic.TrackingWarning, match="RuntimeError: simulated"), t as rec:
        tr = t._tracker
        if seam == "record_hooks":
            tr.record_hooks.append(_fail)
        elif seam == "error_hooks":
            tr.error_hooks.append(_fail)
        else:
            tr.call_watch["torch.Tensor.add_"] = _fail
        if seam == "error_hooks":
            with pytest.raises(RuntimeError, match="size of tensor"):
                torch.add(x, torch.ones(2), alpha=2)
        x.add_(1, alpha=2)  # a keyword: through the mode's long path
        y = x * 2
    assert rec.internal_error == "RuntimeError: simulated"
    assert torch.equal(x, torch.full((3,), 3.0)) and torch.equal(y, torch.full((3,), 6.0))
    kept = 1 if seam == "record_hooks" else 0  # a record hook fails on a write already recorded
    assert len(rec.filter(kind="inplace")) == kept and "torch.Tensor.mul" not in [e.op for e in rec.events]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_call_watch_on_a_recorded_op_sees_it_and_it_is_still_recorded(engine: str) -> None:
    """A watch on ``add_`` (the seam diagnostics use) is called once with the call, and the write is still an event."""
    seen: list[tuple[str, torch.Tensor]] = []
    t = tensormagic.track(engine=engine, diagnostics=None)
    with t as rec:
        x = torch.ones(3)
        t._tracker.call_watch["torch.Tensor.add_"] = lambda tr, func, args, where: seen.append((func.__name__, args[0]))
        x.add_(1)
    assert len(seen) == 1 and seen[0][0] == "add_" and seen[0][1] is x
    (e,) = rec.filter(kind="inplace")
    assert (e.op, e.tensor.label, e.line, e.version_before) == ("torch.Tensor.add_", "x", line_with("x.add_(1)"), 0)


class Counted(torch.Tensor):
    """A tensor subclass that counts every call of its ``__torch_function__``."""

    calls = 0

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        Counted.calls += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def _subclass_code(w: torch.Tensor) -> torch.Tensor:
    s = torch.ones(3).as_subclass(Counted)
    s.add_(1)
    s.contiguous()  # hands back its input, unwritten
    h = (w * 2).as_subclass(Counted)
    h.grad  # a non-leaf's .grad: the grad-unfilled diagnostic's watch reads it  # noqa: B018
    return s * h


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.filterwarnings("ignore::tensormagic.diagnostics.TensorMagicWarning")
def test_tracking_runs_a_subclass_code_as_often_as_untracked(engine: str) -> None:
    """Tracking reads a subclass's versions and attributes without running its ``__torch_function__`` once more."""
    w = torch.ones(3, requires_grad=True)
    Counted.calls = 0
    _subclass_code(w)
    untracked = Counted.calls
    Counted.calls = 0
    with tensormagic.track(engine=engine, diagnostics=["grad-unfilled"]) as rec:
        _subclass_code(w)
    assert Counted.calls == untracked
    assert [d.id for d in rec.diagnostics] == ["grad-unfilled"] and rec.internal_error is None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_subclass_op_handing_back_its_input_unwritten_is_no_write(engine: str) -> None:
    """``s.contiguous()`` on a contiguous subclass tensor returns ``s`` itself, unwritten: the only write is ``add_``."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        s = torch.ones(3).as_subclass(Counted)
        r = s.contiguous()
        s.add_(1)
    assert r is s and s._version == 1  # torch: the same object; one write
    assert [(e.op, e.version_before) for e in rec.filter(kind="inplace")] == [("torch.Tensor.add_", 0)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_quiet_method_with_a_keyword_returns_what_it_returns_untracked(engine: str) -> None:
    """``x.size(dim=1)`` (a call that records nothing) gives 3 under tracking, as untracked."""
    x = torch.ones(2, 3)
    with tensormagic.track(engine=engine, diagnostics=None):
        n = x.size(dim=1)
    assert n == x.size(dim=1) == 3


@pytest.mark.parametrize("engine", ENGINES)
def test_each_output_of_a_foreach_op_comes_from_its_own_list_items(engine):
    """``torch._foreach_norm([a, b])`` makes the norm of ``a`` from ``a`` and of ``b`` from ``b``
    (torch: ``_foreach_norm(ts)[k] == ts[k].norm()``), not each from both; ``_foreach_mul([a, b],
    [c, d])``'s k-th product comes from the k-th of each list."""
    a, b, c, d = torch.ones(2), torch.full((3,), 2.0), torch.ones(2), torch.ones(3)
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        norms = torch._foreach_norm([a, b])
        prods = torch._foreach_mul([a, b], [c, d])
    assert [n.item() for n in norms] == [a.norm().item(), b.norm().item()]
    assert [[i.label for i in e.inputs] for e in rec.filter(op="torch._foreach_norm")] == [["a"], ["b"]]
    assert [[i.label for i in e.inputs] for e in rec.filter(op="torch._foreach_mul")] == [["a", "c"], ["b", "d"]]
    assert len(prods) == 2
