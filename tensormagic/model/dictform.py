"""How the event model's frozen dataclasses become dicts and back: fields at their default are
left out (the log stays compact; a few are always written), unknown keys are ignored on reading
(a newer writer must not break an older reader)."""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Any, Mapping


def _default(f: Any) -> Any:
    from dataclasses import MISSING

    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # pragma: no cover - no factories in this model today
        return f.default_factory()
    return MISSING


_PLAIN = (str, int, float, bool, type(None))
_ALWAYS = ("kind", "op", "tensor", "seq")
# (field name, default or MISSING, always written) per class: the log serialises millions of
# events, and looking fields and defaults up per object cost ~50 µs an event.
_PLANS: dict[type, tuple[Any, tuple[tuple[str, Any, bool], ...]]] = {}


def _plan(cls: type) -> tuple[Any, tuple[tuple[str, Any, bool], ...]]:
    plan = _PLANS.get(cls)
    if plan is None:
        fs = fields(cls)
        plan = _PLANS[cls] = (attrgetter(*(f.name for f in fs)),
                              tuple((f.name, _default(f), f.name in _ALWAYS) for f in fs))  # fmt: skip
    return plan


def _encode(v: Any) -> Any:
    if isinstance(v, _PLAIN):
        return v
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, tuple):
        return [_encode(x) for x in v]
    return v


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    get, plan = _plan(type(obj))
    for (name, default, always), v in zip(plan, get(obj)):
        if always or v != default:
            out[name] = _encode(v)
    return out


_NAMES: dict[type, frozenset[str]] = {}


def _known(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = frozenset(f.name for f in fields(cls))
    return {k: v for k, v in d.items() if k in names}
