"""A faster constructor for the frozen, slotted dataclasses of the event model."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Callable

try:
    from ..engine._hotpath import SlotDict, SlotMaker
except ImportError:  # built without a C compiler: the Python code below
    SlotDict = SlotMaker = None

_REQUIRED = object()  # SlotMaker's and SlotDict's marker for a field without a default
#: how fast_to_dict writes a field: as is; refs(value); [refs(x) ...]; [x.to_dict(refs=refs) ...];
#: value.to_dict()
PLAIN, REF, REFS, DICTS, DICT = range(5)


def fast_constructor(cls: type, *, compiled: bool | None = None) -> Callable[..., Any]:
    """A callable with ``cls``'s constructor signature that fills the slots directly.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``: an Event
    has 26 fields, and a log or a report builds one per event.  The compiled ``SlotMaker``
    (``csrc/slots.c``) stores them all in one call; without it (or with ``compiled=False``), a
    generated function calls each slot's member descriptor, about half ``__init__``'s cost.
    The result is the same object either way (equal, hashable, frozen)."""
    flds = fields(cls)
    if any(f.default_factory is not MISSING for f in flds):  # pragma: no cover - the model has none
        raise TypeError(f"{cls.__name__}: default factories are not supported")
    if compiled is None:
        compiled = SlotMaker is not None
    if compiled:
        if SlotMaker is None:
            raise ValueError("the compiled SlotMaker was not built (no C compiler at install)")
        defaults = tuple(_REQUIRED if f.default is MISSING else f.default for f in flds)
        return SlotMaker(cls, tuple(f.name for f in flds), defaults, _REQUIRED)  # type: ignore[no-any-return]
    return _python_constructor(cls)


def _python_constructor(cls: type) -> Callable[..., Any]:
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    params: list[str] = []
    body: list[str] = []
    for f in fields(cls):
        if f.default is MISSING:
            params.append(f.name)
        else:
            ns[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        ns[f"_s_{f.name}"] = cls.__dict__[f.name].__set__  # the slot's member descriptor
        body.append(f"    _s_{f.name}(self, {f.name})")
    src = f"def make({', '.join(params)}):\n    self = _new(_cls)\n" + "\n".join(body) + "\n    return self\n"
    exec(src, ns)  # noqa: S102 - generated from the dataclass's own field names, nothing else
    make = ns["make"]
    make.__qualname__ = make.__name__ = f"{cls.__name__}._make"
    return make  # type: ignore[no-any-return]


def fast_to_dict(cls: type, kinds: dict[str, int], *, compiled: bool | None = None) -> Callable[[Any, Any], dict[str, Any]]:
    """``(obj, refs) -> obj.to_dict(refs=refs)`` for a class whose ``to_dict`` writes its fields in
    order, leaves out those at their default and converts them as ``kinds`` says (others: PLAIN).
    Compiled (``SlotDict``) where built; else the class's own method."""
    if compiled is None:
        compiled = SlotDict is not None
    if not compiled:
        return lambda obj, refs: obj.to_dict(refs=refs)  # type: ignore[no-any-return]
    if SlotDict is None:
        raise ValueError("the compiled SlotDict was not built (no C compiler at install)")
    return SlotDict(*dict_spec(cls, kinds))  # type: ignore[no-any-return]


def dict_spec(cls: type, kinds: dict[str, int]) -> tuple[Any, ...]:
    """What the compiled ``SlotDict`` and ``LineEncoder`` know of a class written like
    ``fast_to_dict`` says: (cls, field names, defaults, the no-default marker, kinds)."""
    flds = fields(cls)
    unknown = set(kinds) - {f.name for f in flds}
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    defaults = tuple(_REQUIRED if f.default is MISSING else f.default for f in flds)
    return cls, tuple(f.name for f in flds), defaults, _REQUIRED, tuple(kinds.get(f.name, PLAIN) for f in flds)
