"""Tensors made while autograd's engine runs a backward call: in a tensor hook, a module's full
backward hook, a post-accumulate-grad hook, a Python ``autograd.Function.backward``, under
``torch.autograd.grad``.  Each is recorded at its own line and says it was made during backward;
results are bit-identical to untracked (gradients, versions, RNG, errors, warnings); the mode is
off the stack after, whatever happened; both engines.

Expected lines come from this file's source text (``_line``), values from torch untracked."""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any, Callable

import pytest
import torch
from torch import nn

import tensormagic
from tensormagic.engine import backward_run
from tensormagic.engine.mode import default_engine

ENGINES = ("c", "python")
_SOURCE = open(__file__, encoding="utf-8").read().splitlines()
_HERE = os.path.basename(__file__)


def _line(fragment: str) -> int:
    """The line of this file whose statement starts with ``fragment`` (once)."""
    (n,) = [i + 1 for i, text in enumerate(_SOURCE) if text.strip().startswith(fragment)]
    return n


def _during(call: str, fragment: str) -> str:
    return f"during {call} at {_HERE}:{_line(fragment)}"


def _double(g: torch.Tensor) -> torch.Tensor:
    return g * 2  # a tensor hook that makes a tensor


def _zeros_for_input(module: nn.Module, grad_in: tuple, grad_out: tuple) -> tuple:
    return (torch.zeros_like(grad_in[0]),)  # a module's full backward hook that makes a tensor


def _scale_grad(p: torch.Tensor) -> None:
    p.grad.mul_(3)  # a post-accumulate-grad hook that writes the gradient


class _Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        three = torch.full_like(x, 3.0)  # made in a Function's backward
        return g * three * x * x


def _made_at(rec: Any, fragment: str) -> list[Any]:
    return [e for e in rec.events if e.line == _line(fragment) and e.file == __file__]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tensor_hooks_tensor_is_at_the_hooks_line_made_during_backward(engine):
    """``g * 2`` in a ``register_hook`` hook: one ``mul`` at the hook's line, noted as made during
    the ``backward()`` of its line; the gradient handed to the hook is first seen there, made by
    no op the tracker can see, and not named after the hook's expression."""
    w = torch.randn(3, requires_grad=True)
    w.register_hook(_double)
    with tensormagic.track(engine=engine) as rec:
        y = (w * 3).sum()
        y.backward()
    seen, made = _made_at(rec, "return g * 2")
    assert (made.kind, made.op, made.note) == ("create", "torch.Tensor.mul", _during("backward()", "y.backward()"))
    assert made.inputs == (seen.tensor,)
    assert (seen.origin, seen.op) == ("seen", "(no visible op)")
    assert seen.note == "first seen " + _during("backward()", "y.backward()") + ": no torch op the tracker can see made it"
    assert "g * 2" not in seen.tensor.names
    (bw,) = rec.filter(kind="backward")
    assert bw.line == _line("y.backward()") and bw.note is None and [g.tensor.label for g in bw.grads] == ["w"]
    assert f"(during backward() at {_HERE}:{_line('y.backward()')})" in rec.to_text(width=300)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_modules_full_backward_hooks_tensor_is_recorded_at_its_line(engine):
    """``torch.zeros_like`` in a module's full backward hook: at the hook's line, during backward."""
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(_zeros_for_input)
    x = torch.randn(4, 3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        out = lin(x).sum()
        out.backward()
    (z,) = [e for e in _made_at(rec, "return (torch.zeros_like(grad_in[0]),)") if e.origin == "op"]
    assert (z.op, z.tensor.shape, z.note) == ("torch.zeros_like", (4, 3), _during("backward()", "out.backward()"))
    assert torch.equal(x.grad, torch.zeros(4, 3))  # the hook's tensor is the input's gradient, as untracked


@pytest.mark.parametrize("engine", ENGINES)
def test_a_post_accumulate_grad_hooks_write_is_recorded_during_backward(engine):
    """``p.grad.mul_(3)`` in a post-accumulate-grad hook: an in-place write at the hook's line."""
    w = torch.ones(2, requires_grad=True)
    w.register_post_accumulate_grad_hook(_scale_grad)
    with tensormagic.track(engine=engine) as rec:
        s = (w * 2).sum()
        s.backward()
    (write,) = [e for e in _made_at(rec, "p.grad.mul_(3)") if e.kind == "inplace"]
    assert (write.op, write.version_before, write.version_after) == ("torch.Tensor.mul_", 0, 1)
    assert write.note == _during("backward()", "s.backward()")
    assert f"(during backward() at {_HERE}:{_line('s.backward()')})" in rec.to_text(width=300)
    assert torch.equal(w.grad, torch.full((2,), 6.0))


def _step_and_clear(p: torch.Tensor) -> None:
    with torch.no_grad():
        p.sub_(p.grad)
    p.grad = None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backward_whose_hooks_clear_the_grads_does_not_say_none_was_received(engine):
    """An optimizer step in a post-accumulate-grad hook leaves ``.grad`` None: the backward row says
    no gradient is left in a ``.grad``, not that no leaf received one (each did, and the hook used it)."""
    w = torch.ones(2, requires_grad=True)
    w.register_post_accumulate_grad_hook(_step_and_clear)
    with tensormagic.track(engine=engine) as rec:
        total = (w * 2).sum()
        total.backward()
    assert w.grad is None and torch.equal(w.detach(), torch.full((2,), -1.0))  # the hook ran: 1 - 2
    text = rec.to_text(width=300)
    assert "from total  (left no gradient in any leaf's .grad)" in text and "received" not in text


@pytest.mark.parametrize("engine", ENGINES)
def test_a_python_function_backwards_tensors_are_at_its_lines(engine):
    """A custom ``autograd.Function``'s backward: ``full_like`` and its products at its lines."""
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        c = _Cube.apply(x).sum()
        c.backward()
    (three,) = _made_at(rec, "three = torch.full_like(x, 3.0)")
    assert (three.op, three.note) == ("torch.full_like", _during("backward()", "c.backward()"))
    products = [e for e in _made_at(rec, "return g * three * x * x") if e.origin == "op"]
    assert [e.op for e in products] == ["torch.Tensor.mul"] * 3
    assert torch.equal(x.grad, torch.tensor([3.0, 12.0]))


@pytest.mark.parametrize("engine", ENGINES)
def test_autograd_grad_records_its_hooks_tensors(engine):
    """Under ``torch.autograd.grad`` a hook's tensor says ``during autograd.grad()``."""
    w = torch.randn(3, requires_grad=True)
    w.register_hook(_double)
    with tensormagic.track(engine=engine) as rec:
        (gw,) = torch.autograd.grad((w * 3).sum(), w)
    (made,) = [e for e in _made_at(rec, "return g * 2") if e.origin == "op"]
    assert made.note == _during("autograd.grad()", "(gw,) = torch.autograd.grad((w * 3).sum(), w)")
    assert torch.equal(gw, torch.full((3,), 6.0)) and w.grad is None


@pytest.mark.parametrize("engine", ENGINES)
def test_a_hook_of_an_earlier_cell_is_named_with_its_cell(ip, monkeypatch, engine):
    """In a real shell, a hook defined in an earlier cell: its tensor is at ``In[N] line 2`` in the
    report of the cell whose ``backward()`` ran it, noted as during that cell's line 3."""
    monkeypatch.setenv("TENSORMAGIC_ENGINE", engine)
    defined = ip.run_cell("def hook(g):\n    return g * 2\n", store_history=True)
    ip.run_cell("w = torch.ones(2, requires_grad=True)\nh = w.register_hook(hook)\n", store_history=True)
    result = ip.run_cell("%%trackgrad --quiet -o hr\ny = (w * 5).sum()\ny.backward()\n", store_history=True)
    rec = ip.user_ns["hr"]
    assert result.success and default_engine() == engine
    made = [e for e in rec.events if e.cell == defined.execution_count and e.origin == "op"]
    assert [(e.line, e.op, e.note) for e in made] == [(2, "torch.Tensor.mul", "during backward() at line 3")]
    text = rec.to_text(width=300)
    assert f"In[{defined.execution_count}] line 2  return g * 2" in text and "(during backward() at line 3)" in text
    assert torch.equal(ip.user_ns["w"].grad, torch.full((2,), 10.0))
    ip.run_cell("h.remove()", store_history=True)


# -- results are what they are untracked ------------------------------------------------------------
def _rng_hook(g: torch.Tensor) -> torch.Tensor:
    return g + torch.rand(g.shape) * 0  # draws from the RNG in backward


def _nested_hook(g: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        a = torch.ones(2, requires_grad=True)
        (b,) = torch.autograd.grad((a * a).sum(), a)  # a backward started by a hook
    return g + b


def _raising_hook(g: torch.Tensor) -> torch.Tensor:
    raise ValueError("hook failed")


CASES: dict[str, Callable[[torch.Tensor], Any]] = {
    "hook drawing random numbers": lambda w: (w.register_hook(_rng_hook), (w * 3).sum().backward()),
    "Function.backward": lambda w: _Cube.apply(w).sum().backward(),
    "non-scalar output without gradient": lambda w: (w * 3).backward(),
    "inputs=[]": lambda w: (w * 3).sum().backward(inputs=[]),
    "output that requires no grad": lambda w: torch.ones(2).sum().backward(),
    "grad_variables": lambda w: torch.autograd.backward((w * 3).sum(), grad_variables=torch.tensor(2.0)),
    "grad_tensors and grad_variables": lambda w: torch.autograd.backward(
        (w * 3).sum(), grad_tensors=torch.tensor(1.0), grad_variables=torch.tensor(2.0)),
    "gradient and inputs as a generator": lambda w: (w * w).backward(torch.ones(2), inputs=(t for t in [w])),
    "inputs as a dict": lambda w: (w * w).sum().backward(inputs={"w": w}),
    "retain_graph twice": lambda w: [y.backward(retain_graph=True) or y.backward() for y in [(w * 2).sum()]],
    "hook raising": lambda w: (w.register_hook(_raising_hook), (w * 3).sum().backward()),
    "nested autograd.grad in a hook": lambda w: (w.register_hook(_nested_hook), (w * 3).sum().backward()),
    "autograd.grad with a hook": lambda w: (w.register_hook(_rng_hook), torch.autograd.grad((w * 3).sum(), w)),
    "autograd.grad unused": lambda w: torch.autograd.grad((w * 3).sum(), [w, torch.ones(1, requires_grad=True)]),
    "autograd.grad materialize_grads": lambda w: torch.autograd.grad(
        (w * 3).sum(), [w, torch.ones(1, requires_grad=True)], materialize_grads=True),
    "autograd.grad only_inputs=False": lambda w: torch.autograd.grad((w * 3).sum(), w, only_inputs=False),
    "autograd.grad is_grads_batched": lambda w: torch.autograd.grad(w * 3, w, torch.eye(2), is_grads_batched=True),
    "autograd.grad create_graph, then backward": lambda w: [
        g.sum().backward() for (g,) in [torch.autograd.grad((w**3).sum(), w, create_graph=True)]],
}  # fmt: skip


def _outcome(case: str, engine: str | None) -> dict[str, Any]:
    torch.manual_seed(0)
    w = torch.randn(2, requires_grad=True)
    out: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if engine is None:
                out["result"] = CASES[case](w)
            else:
                with tensormagic.track(engine=engine, diagnostics=()):
                    out["result"] = CASES[case](w)
        except Exception as e:  # noqa: BLE001 - the error is part of the outcome compared
            out["error"] = (type(e), str(e))
    out["warnings"] = [(str(c.message), c.category, c.filename, c.lineno) for c in caught]
    out["grad"], out["version"] = w.grad, w._version
    out["grad_version"] = None if w.grad is None else w.grad._version
    out["rng"] = torch.get_rng_state()
    out["stack"] = torch._C._len_torch_function_stack()
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if callable(a):  # a hook's RemovableHandle in a case's result tuple
        return type(a) is type(b)
    return bool(a == b) or type(a).__name__ == "RemovableHandle" == type(b).__name__


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_backward_gives_what_it_gives_untracked(case, engine):
    """Gradients, results, version counters, RNG state, the error raised and the warnings shown
    (message, category, file and line) are those of the same code untracked; no mode is left."""
    tracked, untracked = _outcome(case, engine), _outcome(case, None)
    assert tracked["stack"] == untracked["stack"] == 0
    for key in ("error", "warnings", "grad", "version", "grad_version", "rng", "result"):
        assert _same(tracked.get(key), untracked.get(key)), key


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backward_started_by_a_hook_runs_unrecorded(engine):
    """``autograd.grad`` called inside a hook is not a second backward event; its own hooks' and
    graph's tensors are not recorded, and the outer hook's ops are."""
    w = torch.randn(2, requires_grad=True)
    w.register_hook(_nested_hook)
    with tensormagic.track(engine=engine) as rec:
        (w * 3).sum().backward()
    assert [e.op for e in rec.filter(kind="backward")] == ["torch.Tensor.backward"]
    made = [e.op for e in _made_at(rec, "(b,) = torch.autograd.grad((a * a).sum(), a)") if e.origin == "op"]
    assert made == ["torch.Tensor.mul", "torch.Tensor.sum"]  # a * a and its sum: the hook's own ops


@pytest.mark.parametrize("engine", ENGINES)
def test_the_mode_is_off_the_stack_after_a_hook_is_interrupted(engine):
    """A KeyboardInterrupt raised in a hook leaves no mode on the stack and the block's
    recording has the ops before it."""

    def interrupt(g: torch.Tensor) -> torch.Tensor:
        raise KeyboardInterrupt

    w = torch.randn(2, requires_grad=True)
    w.register_hook(interrupt)
    with pytest.raises(KeyboardInterrupt), tensormagic.track(engine=engine) as rec:
        (w * 3).sum().backward()
    assert torch._C._len_torch_function_stack() == 0
    assert [e.op for e in rec.events] == ["torch.Tensor.mul", "torch.Tensor.sum"]


@pytest.mark.parametrize("engine", ENGINES)
def test_another_threads_calls_during_backward_are_not_recorded(engine):
    """A thread that has the mode on its stack while backward runs (as autograd's device threads
    get it, from the graph task) passes its calls through: only the hook's own op is recorded."""
    done: list[torch.Tensor] = []

    def hook(g: torch.Tensor) -> torch.Tensor:
        depth = torch._C._len_torch_function_stack()
        assert depth == 1, "the tracking mode is on the stack while hooks run"
        mode = torch._C._get_function_stack_at(depth - 1)

        def other() -> None:
            torch._C._push_on_torch_function_stack(mode)
            try:
                done.append(torch.ones(3) * 7)
            finally:
                torch._C._pop_torch_function_stack()

        t = threading.Thread(target=other)
        t.start()
        t.join()
        return g + 1

    w = torch.randn(3, requires_grad=True)
    w.register_hook(hook)
    with tensormagic.track(engine=engine) as rec:
        (w * 3).sum().backward()
    assert torch.equal(done[0], torch.full((3,), 7.0))
    assert [e.op for e in rec.events if e.origin == "op" and e.note] == ["torch.Tensor.add"]  # g + 1 alone


@pytest.mark.parametrize("engine", ENGINES)
def test_a_hook_raises_no_diagnostic(engine):
    """A training step whose hook scales the gradient: no diagnostic fires on the hook's ops."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model[0].weight.register_hook(_double)
    model[2].register_full_backward_hook(_zeros_for_input)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    with tensormagic.track(engine=engine, diagnostics="all") as rec:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert list(rec.diagnostics) == []
    assert len([e for e in _made_at(rec, "return g * 2") if e.origin == "op"]) == 3


def test_where_torch_is_not_as_expected_backward_runs_as_before(monkeypatch):
    """With torch's private names not found, backward is called as it was: the same gradients,
    the hook's tensor not recorded, nothing said about backward on any event."""
    monkeypatch.setattr(backward_run, "_spec", None)
    w = torch.randn(3, requires_grad=True)
    w.register_hook(_double)
    with tensormagic.track() as rec:
        (w * 3).sum().backward()
    assert torch.equal(w.grad, torch.full((3,), 6.0))
    assert _made_at(rec, "return g * 2") == [] and all(e.note is None or "during" not in e.note for e in rec.events)


def test_torch_is_as_this_version_expects():
    """On the torch the suite runs with, the functions ``backward_run`` needs are found as expected
    (else backward would silently record no hook)."""
    backward_run._spec = backward_run._UNSET
    assert backward_run.spec() == (torch.autograd.backward, torch.autograd.grad, torch.Tensor.backward,
                                   torch.autograd.graph._engine_run_backward)  # fmt: skip
