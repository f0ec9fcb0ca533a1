"""An in-place write's "also changes" lists only tensors it changed: on both engines.

Which tensors share elements is worked out by hand from the indexing, and checked with torch
(each listed tensor's values moved; each tensor left out kept its values)."""

from __future__ import annotations

import pytest
import torch

import tensormagic

ENGINES = ("c", "python")


def _changes(rec: tensormagic.Recording, op: str) -> list[list[str]]:
    return [[a.label for a in e.aliases] for e in rec.filter(kind="inplace") if e.op.endswith(op)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_write_into_one_row_does_not_change_another_row(engine):
    """``second.add_(1)`` on ``x[1]`` changes ``x``, not ``first = x[0]`` (rows share no element)."""
    x = torch.zeros(2, 3)
    with tensormagic.track(engine=engine) as rec:
        first = x[0]
        second = x[1]
        second.add_(1)
    assert first.tolist() == [0.0, 0.0, 0.0] and x[1].tolist() == [1.0, 1.0, 1.0]
    assert _changes(rec, "add_") == [["x"]]


@pytest.mark.parametrize("engine", ENGINES)
def test_views_gone_before_the_write_are_not_said_changed(engine):
    """In ``for i: row = x[i]; row.add_(1)`` each write changes ``x`` only: the earlier steps'
    rows were dropped when ``row`` was rebound, and never listed twice."""
    x = torch.zeros(3, 2)
    with tensormagic.track(engine=engine) as rec:
        for i in range(3):
            row = x[i]
            row.add_(1)
    assert _changes(rec, "add_") == [["x"], ["x"], ["x"]]
    assert row.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_write_to_a_whole_view_changes_every_view_of_its_base(engine):
    """``y = x.detach(); y.add_(100)`` writes all of ``x``: ``x`` and its live views ``col`` and
    ``t`` change (each checked below)."""
    x = torch.zeros(2, 2)
    with tensormagic.track(engine=engine) as rec:
        col = x[:, 0]
        t = x.t()
        y = x.detach()
        y.add_(100)
    assert col.tolist() == [100.0, 100.0] and t[1, 1].item() == 100.0
    assert _changes(rec, "add_") == [["x", "col", "t"]]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_partial_write_does_not_say_it_changed_the_targets_views(engine):
    """``x[0, 0] = -1`` writes one element of ``x``: ``row1 = x[1]`` is not changed, and the
    records cannot prove any view of ``x`` was: none is listed."""
    x = torch.zeros(2, 2)
    with tensormagic.track(engine=engine) as rec:
        row1 = x[1]
        x[0, 0] = -1
    assert row1.tolist() == [0.0, 0.0]
    assert _changes(rec, "__setitem__") == [[]]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_whole_write_to_a_base_changes_its_live_views(engine):
    """``x.zero_()`` writes every element of ``x``: its view ``row = x[0]`` changes."""
    x = torch.ones(2, 2)
    with tensormagic.track(engine=engine) as rec:
        row = x[0]
        x.zero_()
    assert row.tolist() == [0.0, 0.0]
    assert _changes(rec, "zero_") == [["row"]]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_view_dropped_before_the_write_is_not_said_changed(engine):
    """In ``for: flat = x.view(2); x.add_(1)`` the second write changes only the second ``flat``
    (the first was dropped when ``flat`` was rebound); the first write's view, gone by the
    block's end, cannot be proven alive at it and is left out."""
    x = torch.zeros(2)
    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            flat = x.view(2)
            x.add_(1)
    assert flat.tolist() == [2.0, 2.0]
    assert _changes(rec, "add_") == [[], ["flat"]]
