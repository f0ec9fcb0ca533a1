"""inplace-saved's index (``diagnostics/saved_index.py``) and its compiled twin agree on every write.

A block's records are replayed into both twins, write by write: each answers the write gate
alike and leaves the same index behind (filed storages, own counters, freed roots, nodes spent).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import _get_current_function_mode

import tensormagic
from tensormagic.diagnostics import saved_index
from tensormagic.engine.tracker import Tracker


@pytest.fixture(autouse=True)
def compiled() -> None:
    if saved_index._hotpath is None:
        pytest.fail("tensormagic.engine._hotpath was not built: is a C compiler installed?")


def recorded() -> tuple[Tracker, list[Any]]:
    """A block whose writes cover what the index files and settles, and the tensors it keeps."""
    keep: list[Any] = []
    with tensormagic.track(engine="python", diagnostics=None):
        tr = _get_current_function_mode().tracker
        model = nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(2, 4)
        for _ in range(2):  # parameters written after backward freed the graphs that used them
            out = model(x)
            out.sum().backward()
            opt.step()
            opt.zero_grad()
            keep.append(out)
        w = torch.randn(3, requires_grad=True)
        y = w * w  # still held: backward retained the graph
        y.sum().backward(retain_graph=True)
        with torch.no_grad():
            w.add_(1)
        a = torch.randn(3, requires_grad=True) * 1  # a write to a tensor with a grad_fn of its own
        b = a.exp()
        a.mul_(2)
        v = a[:2]  # a view: filed, written
        v.add_(1)
        d = w.data  # .data: a counter of its own
        d.add_(1)
        h = torch.randn(2, requires_grad=True).double()  # a move with a grad_fn, then a write to it
        h.add_(1)
        keep += [y, a, b, v, d, h]
    return tr, keep


def state(ix: Any) -> tuple[Any, ...]:
    return ({k: list(v) for k, v in ix.by_storage.items()}, sorted(ix.own_counter), dict(ix.freed), ix.spent, ix.filed)


def writes(tr: Tracker) -> list[tuple[int, int, Any]]:
    return [(i, r[2], tr.alive(r[2])) for i, r in enumerate(tr.raw) if r[0] == "inplace"]


def test_the_twins_answer_the_gate_alike_and_keep_the_same_index():
    """needs() gives the same answer at every write, and both indexes are equal after each one."""
    tr, keep = recorded()
    py, c = saved_index.make_index(tr, compiled=False), saved_index.make_index(tr, compiled=True)
    assert type(c) is not type(py)
    answers = []
    for idx, tid, t in writes(tr):
        answers.append(py.needs(idx, tid, t))
        assert c.needs(idx, tid, t) == answers[-1] and state(c) == state(py)
    py.catch_up(len(tr.raw)), c.catch_up(len(tr.raw))
    assert state(c) == state(py)
    # not vacuous: writes settled and passed on, roots marked freed, a .data counter filed
    assert True in answers and False in answers and py.freed and py.own_counter and py.spent > 0
    del keep


def test_the_twins_name_the_same_roots():
    """roots() lists the same (tid, tensor) pairs, newest first, at every write."""
    tr, keep = recorded()
    py, c = saved_index.make_index(tr, compiled=False), saved_index.make_index(tr, compiled=True)
    listed = 0
    for idx, tid, t in writes(tr):
        rp, rc = py.roots(idx, tid, t), c.roots(idx, tid, t)
        assert (rc is None) == (rp is None)
        if rp is not None:
            assert [(k, id(o)) for k, o in rc] == [(k, id(o)) for k, o in rp]
            listed += 1
    assert listed >= 3 and state(c) == state(py)
    del keep


def test_a_settled_write_marks_its_roots_freed_at_their_version():
    """The gate settles a step's first parameter write itself: the output's node is marked freed, once."""
    tr, keep = recorded()
    ix = saved_index.make_index(tr, compiled=True)
    backward = next(i for i, r in enumerate(tr.raw) if r[0] == "backward")
    first = next(w for w in writes(tr) if w[0] > backward)
    assert ix.needs(*first) is False
    out_tid = next(t for t, o in ((t, tr.alive(t)) for t in tr.tensors) if o is keep[0])
    assert ix.freed == {out_tid: keep[0]._version} and ix.spent == 1
    del keep


def test_the_twins_trim_a_much_read_storage_alike():
    """A storage read by more than 4 x KEEP ops is trimmed to its newest live readers by both twins alike."""
    keep: list[Any] = []
    with tensormagic.track(engine="python", diagnostics=None):
        tr = _get_current_function_mode().tracker
        w = torch.randn(3, requires_grad=True)
        for i in range(4 * saved_index.KEEP + 20):
            y = w * 2
            if i % 3 == 0:
                keep.append(y)  # two in three readers die: the trim keeps the live ones
        with torch.no_grad():
            w.add_(1)
    py, c = saved_index.make_index(tr, compiled=False), saved_index.make_index(tr, compiled=True)
    py.catch_up(len(tr.raw)), c.catch_up(len(tr.raw))
    assert state(c) == state(py)
    sid = tr.tensors[tr.see(w, None)][2]
    assert len(py.by_storage[sid]) < 4 * saved_index.KEEP  # trimmed, not vacuous
    del keep
