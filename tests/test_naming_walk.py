"""The namespace walk's module fast path names exactly what torch's named_parameters/named_buffers name."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from tensormagic.engine import naming


def _torch_names(name: str, m: nn.Module) -> list[str]:
    """What the walk adds for ``m``, from torch's own generators (leaves' ``.grad`` included)."""
    out: list[str] = []
    for pn, p in m.named_parameters():
        out.append(f"{name}.{pn}")
        if p.grad is not None:
            out.append(f"{name}.{pn}.grad")
    out.extend(f"{name}.{bn}" for bn, _ in m.named_buffers())
    return out


@pytest.fixture(params=["compiled", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test walks with the compiled module pass (where built) and with its Python twin."""
    if request.param == "python":
        monkeypatch.setattr(naming, "_hotpath", None)
    elif naming._hotpath is None:
        pytest.skip("the compiled extension was not built")
    return str(request.param)


def _walked(ns: dict[str, Any]) -> list[str]:
    return [n for n, _ in naming.named_tensors(ns)]


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        lin = nn.Linear(2, 2)
        self.p = nn.Parameter(torch.ones(1))
        self.q = self.p  # one parameter under two names: torch names it once
        self.a = nn.Sequential(lin, nn.ReLU(), lin, nn.BatchNorm1d(2))  # one module twice
        self.b = lin
        self.register_buffer("none", None)
        self.register_parameter("nothing", None)
        self.c = nn.ModuleList([nn.Linear(1, 1), self.a])


def test_shared_parameters_and_modules_are_named_as_torch_names_them(engine: str) -> None:
    """Shared parameters and modules, None entries, buffers and a gradient: the same names, in torch's order."""
    m = _Shared()
    m.a[0].weight.grad = torch.ones(2, 2)
    assert _walked({"m": m}) == _torch_names("m", m)


class _OwnWalk(nn.Sequential):
    def named_modules(self, *a: Any, **k: Any) -> Any:  # a child that hides its own children
        yield "", self


def test_a_module_with_its_own_named_modules_is_walked_by_torch(engine: str) -> None:
    """A child that overrides named_modules keeps torch's walk (its children stay unnamed)."""
    m = nn.Sequential(nn.Linear(2, 2), _OwnWalk(nn.Linear(3, 3)))
    assert _walked({"m": m}) == _torch_names("m", m) == ["m.0.weight", "m.0.bias"]
