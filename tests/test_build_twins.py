"""The compiled event builder (``csrc/build.c``) makes the objects ``build.py``'s Python loop makes.

Each scenario of ``test_engines`` runs once, on the compiled engine and without diagnostics (whose
finish reads the events: here the tests make them); its raw records are then made into events
twice, by each builder, and the two results must be equal field by field (times included) and
share TensorRef objects the same way (a log's encoding memo relies on the sharing).  Like
``test_engines``, these need the compiled extension (``scripts/test.sh`` installs gcc).
"""

from __future__ import annotations

from array import array
from typing import Any

import pytest
import torch
from test_engines import SCENARIOS

import tensormagic
from tensormagic.engine import build, snapshot
from tensormagic.engine.aliases import AliasProof
from tensormagic.model.events import Event, TensorRef
from tensormagic.model.recording import Recording


def built_both(rec: Recording) -> tuple[Recording, Recording]:
    """(compiled, Python) recordings made from ``rec``'s records, before anyone read its events."""
    pending = rec._pending
    assert isinstance(pending, build.Pending)
    out = []
    for compiled in (True, False):
        pending.compiled = compiled
        r = Recording()
        pending(r)
        out.append(r)
    return out[0], out[1]


def refs_in(e: Event) -> list[TensorRef]:
    out = [e.tensor, *e.inputs, *e.aliases, *(g.tensor for g in e.grads)]
    return out + [r for r in (e.base, e.source_tensor) if r is not None]


def sharing(events: tuple[Event, ...], final: dict[str, TensorRef]) -> list[int]:
    """Each TensorRef, in order, as the position of the first object it is (the same object)."""
    first: dict[int, int] = {}
    return [first.setdefault(id(r), len(first)) for e in events for r in refs_in(e)] + [
        first.setdefault(id(r), len(first)) for r in final.values()
    ]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_builders_make_equal_events(name: str) -> None:
    """Both builders make equal events, folds and final snapshots from one block's records."""
    c, py = built_both(SCENARIOS[name]("c", diagnostics=None))
    assert c.events == py.events and c.events
    assert [type(e) for e in c.events] == [Event] * len(c.events)
    assert c.folds == py.folds
    assert c._final_refs == py._final_refs


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_builders_share_snapshots_alike(name: str) -> None:
    """Both builders reuse one TensorRef object exactly where the other does."""
    c, py = built_both(SCENARIOS[name]("c", diagnostics=None))
    assert sharing(c.events, c._final_refs) == sharing(py.events, py._final_refs)


def test_builders_agree_on_moves_numpy_and_seen_tensors() -> None:
    """The kinds the compiled builder hands back to Python (moves, NumPy) and notes it asks for come out alike."""
    with tensormagic.track(engine="c", diagnostics=None) as rec:
        a = torch.ones(3)
        b = a.to(torch.float64)
        a.numpy()
        w = torch.ones(2, requires_grad=True)
        (w * b[:2]).sum().backward()
        c = torch.zeros(2).double()  # noqa: F841 - a move by another name
    comp, py = built_both(rec)
    kinds = {e.kind for e in comp.events}
    assert {"move", "numpy", "backward", "create", "view"} <= kinds
    assert comp.events == py.events
    assert any(e.origin == "seen" and e.note for e in comp.events)


def test_compiled_builder_is_used_by_the_compiled_engine() -> None:
    """A compiled block's recording is built by the compiled builder, a Python one's by the Python loop."""
    for engine, compiled in (("c", True), ("python", False)):
        with tensormagic.track(engine=engine, diagnostics=None) as rec:
            torch.ones(2) + 1
        assert isinstance(rec._pending, build.Pending) and rec._pending.compiled is compiled
        assert rec.events


def compiled_builder(rec: Recording) -> Any:
    pending: Any = rec._pending
    tr, snap = pending.tr, pending.snap
    state = {tid: info[1] for tid, info in tr.tensors.items()}
    proof = AliasProof(tr.raw, set(snap.final))
    return build._compiled_builder(tr, snap.names, state, snapshot.placer(None), snapshot.module_resolver({}), proof)


def test_compiled_builder_reports_bad_records_clearly() -> None:
    """A malformed raw record, or times that do not cover the records, raise a TypeError saying so."""
    with tensormagic.track(engine="c", diagnostics=None) as rec:
        torch.ones(2) + 1
    tr = rec._pending.tr  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="raw record is an 8-tuple"):
        compiled_builder(rec).events([*tr.raw, ("create", "x")], array("q", [*tr.times, 0]))
    with pytest.raises(TypeError, match="one entry per record"):
        compiled_builder(rec).events(tr.raw, array("q", tr.times[:-1]))
    assert compiled_builder(rec).events(tr.raw, tr.times)


def test_compiled_builder_ref_is_the_python_ref() -> None:
    """EventBuilder.ref and _Refs.ref make equal TensorRefs and reuse them for the same snapshot."""
    with tensormagic.track(engine="c", diagnostics=None) as rec:
        x = torch.ones(2, 3, requires_grad=True)
        y = (x * 2).sum()  # noqa: F841 - recorded
    pending: Any = rec._pending
    tr, snap = pending.tr, pending.snap
    state = {tid: info[1] for tid, info in tr.tensors.items()}
    c_refs, py_refs = compiled_builder(rec), build._Refs(tr, snap.names)
    for tid, meta in state.items():
        a, b = c_refs.ref(tid, meta), py_refs.ref(tid, meta)
        assert a == b and c_refs.ref(tid, meta) is a


def test_compiled_events_are_left_out_of_the_collector() -> None:
    """The compiled builder's events, snapshots and their tuples are untracked by the cyclic GC (they cannot form cycles)."""
    import gc

    c, py = built_both(SCENARIOS["views_and_inplace"]("c", diagnostics=None))
    objs = [x for e in c.events for x in (e, e.inputs, *refs_in(e))]
    assert objs and not any(gc.is_tracked(x) for x in objs)
    assert any(gc.is_tracked(e) for e in py.events)  # the Python loop's are ordinary objects


def test_compiled_builder_keeps_no_stray_references() -> None:
    """Naming the op of a tensor seen without one leaves None's reference count as it was (CPython 3.11 counts it)."""
    import gc
    import sys

    from tensormagic import api

    def blocks(n: int) -> None:
        for _ in range(n):
            a = torch.ones(2).numpy()
            with tensormagic.track(diagnostics=None, engine="c") as rec:
                b = torch.from_numpy(a)  # noqa: F841 - bound without an op the mode sees
            assert any(e.origin == "seen" for e in rec.events)
            api._last.clear()

    blocks(20)
    gc.collect()
    before = sys.getrefcount(None)
    blocks(100)
    gc.collect()
    assert sys.getrefcount(None) - before < 20  # one leaked reference a block read 100


def test_compiled_builder_shows_the_collector_what_it_holds() -> None:
    """gc.get_referents(EventBuilder) lists the tracker's tensor table it was given (its traverse walks its fields)."""
    import gc

    with tensormagic.track(engine="c", diagnostics=None) as rec:
        torch.ones(2) + 1
    tr = rec._pending.tr  # type: ignore[union-attr]
    assert any(r is tr.tensors for r in gc.get_referents(compiled_builder(rec)))
