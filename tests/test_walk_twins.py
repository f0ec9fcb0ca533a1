"""The namespace walk's module pass in C (``csrc/walk.c``) adds what its Python twin adds.

``naming._walk_py`` is the twin (the Python engine's build and an install without a compiler run
it); ``naming._walk`` calls the compiled one where it was built.  Each test runs both over one
module tree, for parameters and for buffers, and compares the (name, object) pairs in order.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from tensormagic.engine import naming

_hotpath = pytest.importorskip("tensormagic.engine._hotpath")

TABLES = ("_parameters", "_buffers")


def _c(prefix: str, root: Any, table: str) -> tuple[bool, list[tuple[str, int]]]:
    out: list[tuple[str, Any]] = []
    done = _hotpath.walk_modules(out, prefix, root, table, table == "_parameters", naming._PLAIN,
                                 naming._LEAF_DESCR, naming._GRAD_DESCR, naming._TORCH_WALK[3],
                                 naming._add_tensor, naming._expand_into)  # fmt: skip
    return done, [(n, id(v)) for n, v in out]


def _py(prefix: str, root: Any, table: str) -> tuple[bool, list[tuple[str, int]]]:
    out: list[tuple[str, Any]] = []
    try:
        naming._walk_py(out, prefix, root, table)
    except naming._NotPlain:
        return False, [(n, id(v)) for n, v in out]
    return True, [(n, id(v)) for n, v in out]


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        lin = nn.Linear(2, 2)
        self.p = nn.Parameter(torch.ones(1))
        self.q = self.p  # one parameter under two names
        self.a = nn.Sequential(lin, nn.ReLU(), lin, nn.BatchNorm1d(2))  # one module twice
        self.b = lin
        self.register_buffer("none", None)
        self.register_parameter("nothing", None)
        self.c = nn.ModuleList([nn.Linear(1, 1), self.a])


class _Tagged(nn.Parameter):
    """A Parameter subclass: not one of describe.PLAIN, so ``_add_tensor`` reads it."""


@pytest.mark.parametrize("table", TABLES)
def test_shared_modules_parameters_buffers_and_gradients(table: str) -> None:
    """Shared parameters and modules, None entries, buffers and a gradient: the same pairs in the same order."""
    m = _Shared()
    m.a[0].weight.grad = torch.ones(2, 2)
    m.p.grad = torch.zeros(1)
    got = _c("m.", m, table)
    assert got == _py("m.", m, table)
    assert got[0] and len(got[1]) == (9 if table == "_parameters" else 3)  # counted by hand


def test_odd_entries_of_a_parameter_table() -> None:
    """A subclass parameter, a non-leaf tensor, a module and an int written into ``_parameters``: as the Python walk."""
    m = nn.Linear(2, 2)
    m._parameters["tagged"] = _Tagged(torch.ones(2))
    m._parameters["tagged"].grad = torch.ones(2)
    leaf = torch.ones(2, requires_grad=True)
    m._parameters["made"] = leaf * 2  # not a leaf: no .grad is read
    m._parameters["inner"] = nn.Linear(1, 1)  # type: ignore[assignment]
    m._parameters["count"] = 3  # type: ignore[assignment]
    got = _c("m.", m, "_parameters")
    assert got == _py("m.", m, "_parameters")
    assert [n for n, _ in got[1]] == ["m.weight", "m.bias", "m.tagged", "m.tagged.grad", "m.made", "m.inner.weight",
                                      "m.inner.bias"]  # fmt: skip


class _OwnWalk(nn.Sequential):
    def named_modules(self, *a: Any, **k: Any) -> Any:
        yield "", self


@pytest.mark.parametrize("table", TABLES)
def test_a_module_walking_its_own_way_stops_the_walk(table: str) -> None:
    """A child with its own named_modules: the C walk says False where the Python one raises _NotPlain."""
    m = nn.Sequential(nn.BatchNorm1d(2), _OwnWalk(nn.Linear(3, 3)))
    assert _c("m.", m, table) == _py("m.", m, table)
    assert _c("m.", m, table)[0] is False


def test_keys_that_are_not_str() -> None:
    """A child under an int key is named by f-string; a parameter under one fails as ``prefix + k`` does."""
    m = nn.Module()
    m._modules[7] = nn.Linear(1, 1)  # type: ignore[index]
    assert _c("m.", m, "_parameters") == _py("m.", m, "_parameters") == (True, _c("m.", m, "_parameters")[1])
    assert [n for n, _ in _c("m.", m, "_parameters")[1]] == ["m.7.weight", "m.7.bias"]
    m._parameters[1] = nn.Parameter(torch.ones(1))  # type: ignore[index]
    for walk in (_c, _py):
        with pytest.raises(TypeError):
            walk("m.", m, "_parameters")


class _Triples(dict):  # type: ignore[type-arg]
    def items(self) -> Any:  # type: ignore[override]
        return [("w", torch.ones(1), "extra")]


@pytest.mark.parametrize("where", ["_parameters", "_modules"])
def test_a_table_whose_items_are_not_pairs(where: str) -> None:
    """items() that yield triples: both walks raise ValueError."""
    m = nn.Linear(1, 1)
    object.__setattr__(m, where, _Triples())
    for walk in (_c, _py):
        with pytest.raises(ValueError):
            walk("m.", m, "_parameters")


def test_a_missing_table_raises_in_both() -> None:
    """A module without ``_buffers``: both walks raise AttributeError (``_add_module`` then names none)."""
    m = nn.Linear(1, 1)
    object.__delattr__(m, "_buffers")
    for walk in (_c, _py):
        with pytest.raises(AttributeError):
            walk("m.", m, "_buffers")


def test_wrong_arguments_are_a_type_error() -> None:
    """The compiled pass checks what it is handed."""
    with pytest.raises(TypeError):
        _hotpath.walk_modules([], "m.", nn.Linear(1, 1), "_parameters")
