"""Every in-place form a person writes is recorded as a write, on both engines.

Expected lines are counted in this file's source text (``testkit.line_with``), versions are
torch's own ``_version``, read outside the recording.
"""

from __future__ import annotations

import pytest
import torch
from testkit import line_with

import tensormagic

ENGINES = ["c", "python"]


def _forms(engine: str) -> tuple[tensormagic.Recording, torch.Tensor, torch.Tensor]:
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        x = torch.ones(3)
        i = torch.arange(4)
        x **= 2
        i |= 2
        i <<= 1
        i ^= 3
        x += 1
        x[1] = 5.0
        torch.mul(x, 2, out=x)
    return rec, x, i


# (op, tensor, source text of its line, version before) -- each write bumps torch's counter by one
EXPECTED = [
    ("torch.Tensor.__ipow__", "x", "x **= 2", 0),
    ("torch.Tensor.__ior__", "i", "i |= 2", 0),
    ("torch.Tensor.__ilshift__", "i", "i <<= 1", 1),
    ("torch.Tensor.__ixor__", "i", "i ^= 3", 2),
    ("torch.Tensor.add_", "x", "x += 1", 1),
    ("torch.Tensor.__setitem__", "x", "x[1] = 5.0", 2),
    ("torch.mul", "x", "torch.mul(x, 2, out=x)", 3),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_inplace_form_is_recorded_at_its_line(engine: str) -> None:
    """+=, **=, |=, <<=, ^=, x[i] = v and out= each give one in-place event at the line written."""
    rec, x, i = _forms(engine)
    got = [(e.op, e.tensor.label, e.line, e.version_before, e.version_after) for e in rec.filter(kind="inplace")]
    want = [(op, name, line_with(text, _forms), v, v + 1) for op, name, text, v in EXPECTED]
    assert got == want
    assert (x._version, i._version) == (4, 3)  # torch's counters agree with the last events


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("form", ["x **= 2", "i |= 2", "i <<= 1", "i ^= 3"])
def test_operator_that_hands_back_its_input_is_a_write(engine: str, form: str) -> None:
    """An augmented operator that returns its own input (``__ipow__``, ``__ior__``, ...) is an in-place write."""
    ns = {"torch": torch, "tensormagic": tensormagic}
    src = f"with tensormagic.track(engine={engine!r}, diagnostics=None) as rec:\n"
    src += "    x = torch.ones(3)\n    i = torch.arange(4)\n" + f"    {form}\n"
    exec(compile(src, "<inplace-form>", "exec"), ns)
    (e,) = ns["rec"].filter(kind="inplace")
    assert (e.tensor.label, e.line, e.version_before, e.version_after) == (form[0], 4, 0, 1)
    assert ns[form[0]]._version == 1


def _out_forms(engine: str) -> tuple[tensormagic.Recording, dict[str, torch.Tensor]]:
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        a = torch.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])
        c = torch.empty(2, 3)
        v = torch.empty(3)
        i = torch.empty(3, dtype=torch.long)
        torch.add(a, 1, out=c)
        torch.max(a, 0, out=(v, i))
    return rec, {"a": a, "c": c, "v": v, "i": i}


@pytest.mark.parametrize("engine", ENGINES)
def test_out_into_another_tensor_is_a_write_of_that_tensor(engine: str) -> None:
    """``torch.add(a, 1, out=c)`` is one in-place event on ``c`` at its line, reading ``a``."""
    rec, t = _out_forms(engine)
    (e,) = [e for e in rec.filter(kind="inplace") if e.op == "torch.add"]
    got = (e.tensor.label, e.line, e.version_before, e.version_after, [x.label for x in e.inputs])
    assert got == ("c", line_with("torch.add(a, 1, out=c)", _out_forms), 0, 1, ["a"])
    assert (t["a"]._version, t["c"]._version) == (0, 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_out_tuple_is_a_write_of_each_tensor_in_it(engine: str) -> None:
    """``torch.max(a, 0, out=(v, i))`` writes ``v`` and ``i``: one in-place event each, in that order."""
    rec, t = _out_forms(engine)
    got = [(e.tensor.label, e.line, e.version_before, e.version_after, [x.label for x in e.inputs])
           for e in rec.filter(kind="inplace") if e.op == "torch.max"]  # fmt: skip
    line = line_with("torch.max(a, 0, out=(v, i))", _out_forms)
    assert got == [("v", line, 0, 1, ["a"]), ("i", line, 0, 1, ["a"])]
    assert (t["v"].tolist(), t["i"].tolist()) == ([4.0, 5.0, 3.0], [1, 0, 1])  # the values torch wrote
    assert (t["v"]._version, t["i"]._version) == (1, 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_out_tuple_with_the_input_by_keyword_reads_it(engine: str) -> None:
    """``torch.max(input=a, dim=0, out=(v, i))`` writes ``v`` and ``i``, each reading ``a``."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        a = torch.tensor([[1.0, 5.0], [4.0, 0.0]])
        v = torch.empty(2)
        i = torch.empty(2, dtype=torch.long)
        torch.max(input=a, dim=0, out=(v, i))
    got = [(e.tensor.label, [x.label for x in e.inputs]) for e in rec.filter(kind="inplace")]
    assert got == [("v", ["a"]), ("i", ["a"])]
    assert (v.tolist(), i.tolist()) == ([4.0, 5.0], [1, 0])  # the values torch wrote
