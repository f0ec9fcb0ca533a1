"""The real-code suite's harness (tests/test_real_code*.py): a scenario run untracked and tracked
on each engine must give bit-identical results, record its whole block, and leave every tensor
it made describable by ``tensor_info``.

A scenario is a function of no arguments that seeds nothing itself (the harness seeds before
each run) and returns a dict of what it computed: tensors, tuples/lists/dicts of them, modules
(their parameters, buffers and gradients are compared), optimizers' state.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

import torch

import tensormagic
from tensormagic.api import TrackingWarning
from tensormagic.info import tensor_info
from tensormagic.views.card import info_card_html

ENGINES = ("c", "python")
Scenario = Callable[[], dict[str, Any]]


def plain(t: torch.Tensor) -> list[torch.Tensor]:
    """``t`` as plain strided tensors that hold all its values (sparse, nested, subclasses)."""
    with torch._C.DisableTorchFunctionSubclass():
        if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            inner = getattr(t, "elem", None)  # a wrapper subclass keeps its data inside
            if isinstance(inner, torch.Tensor):
                return plain(inner)
            if t.is_nested:
                return [x.detach().clone() for x in t.unbind()]
            return plain(t.as_subclass(torch.Tensor))
        t = t.detach()
        if t.is_nested:
            return [x.clone() for x in t.unbind()]
        if t.layout != torch.strided:
            return [t.to_dense()]
        return [t]


def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor a scenario's result holds, by path, as plain tensors; a module gives its
    parameters, buffers and gradients; an optimizer its state."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        for i, p in enumerate(plain(obj)):
            out[f"{prefix}#{i}"] = p
        with torch._C.DisableTorchFunctionSubclass():  # a strict subclass refuses these reads
            grad = obj.grad if obj.is_leaf else None
        if grad is not None:
            out.update(flatten(grad, f"{prefix}.grad"))
    elif isinstance(obj, torch.nn.Module):
        for n, p in obj.named_parameters():
            out.update(flatten(p, f"{prefix}.{n}"))
        for n, b in obj.named_buffers():
            out.update(flatten(b, f"{prefix}.{n}(buffer)"))
    elif isinstance(obj, torch.optim.Optimizer):
        for i, st in enumerate(obj.state.values()):
            out.update(flatten(dict(st), f"{prefix}.state{i}"))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif hasattr(obj, "_fields"):  # a named tuple: PackedSequence
        out.update(flatten(tuple(obj), prefix))
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: different results {sorted(a.keys() ^ b.keys())}"
    for k in a:
        x, y = a[k], b[k]
        assert (x.dtype, x.shape, x.requires_grad) == (y.dtype, y.shape, y.requires_grad), f"{what}: {k}"
        # bit for bit: exact equality, NaN where NaN
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=f"{what}: {k} differs")


def untracked(scenario: Scenario) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    result = scenario()
    return result, flatten(result), torch.get_rng_state()


def tracked(scenario: Scenario, engine: str) -> tuple[Any, dict[str, Any], int]:
    """Runs the scenario inside one block; returns (recording, result, the block's last line)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)  # an internal failure would warn
        with tensormagic.track(engine=engine) as rec:
            result = scenario()
            # the block's last line: recording must still be on here
            end = torch.ones(1) + 1; last_line = sys._getframe().f_lineno  # noqa: E702
    del end
    return rec, result, last_line


def check(scenario: Scenario, engine: str, *, info: bool = True) -> Any:
    """The suite's promise for one scenario on one engine; returns the recording."""
    _, want, rng_want = untracked(scenario)
    rng_after_untracked = torch.get_rng_state()
    rec, result, last_line = tracked(scenario, engine)
    rng_got = torch.get_rng_state()
    assert_same(want, flatten(result), f"{scenario.__name__} ({engine})")
    assert torch.equal(rng_want, rng_got) and torch.equal(rng_after_untracked, rng_want), "RNG state changed"
    assert rec.internal_error is None, rec.internal_error
    events = rec.events
    assert events, "nothing recorded"
    # (after it come only "seen" tensors the block's end found bound to names, without a line)
    placed = [e for e in events if e.line is not None]
    assert placed[-1].line == last_line and placed[-1].op.endswith("add"), "the block's last line has no event"
    code = scenario.__code__
    lines = set(range(code.co_firstlineno, code.co_firstlineno + 400))
    assert any(e.file == code.co_filename and e.line in lines for e in events), "the scenario's lines have no events"
    rec.to_text()  # every view of the recording renders
    rec.to_html()
    if info:
        describe_all(result)
    return rec


def describe_all(result: dict[str, Any]) -> None:
    """``tensor_info`` (its text, HTML and panel card) works on every tensor the scenario made."""
    ns: dict[str, Any] = {}

    def walk(obj: Any, name: str) -> None:
        if isinstance(obj, torch.Tensor):
            ns[name] = obj
        elif isinstance(obj, torch.nn.Module):
            ns[name] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{name}_{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{name}_{i}")

    walk(result, "r")
    for name, obj in ns.items():
        tensors = [obj] if isinstance(obj, torch.Tensor) else [p for _, p in obj.named_parameters()][:3]
        for t in tensors:
            info = tensor_info(t, name=name, namespace=ns)
            info.to_text()
            info.to_html()
            info_card_html(info, t)
