"""Reading a user tensor's metadata without ever raising and without running the user's code.

The hot path reads six attributes of every tensor it records.  On a plain ``torch.Tensor`` or
``nn.Parameter`` a read is a C getter that cannot fail for ordinary tensors, and both engines
read them directly.  Everything else comes here:

- a subclass with its own ``__torch_function__`` would see each attribute read as a call
  (``Tensor.shape.__get__``) and may refuse it: the getters are called as ``torch._C.TensorBase``
  descriptors with subclass dispatch switched off, so a user's subclass never runs;
- some tensors cannot answer a read at all: an inference tensor has no version counter, a
  nested tensor of the strided layout has no single size.  What can be read is kept, the rest
  is marked (a version of ``NO_VERSION``, an irregular dimension as ``None``, ``"?"`` for a
  dtype or device that could not be read) and the reason is kept in ``failures``.

``csrc/lookup.c`` calls ``attr`` and ``meta`` for the same tensors (its twin of ``PLAIN``), so
both engines record the same snapshot.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..model.events import NO_VERSION
from .raw import _gf_name

Tensor = torch.Tensor
#: The types whose attribute reads are plain C getters (no ``__torch_function__`` of their own).
PLAIN = (torch.Tensor, torch.nn.Parameter)

_TB = torch._C.TensorBase
_no_subclass = torch._C.DisableTorchFunctionSubclass
_GETTERS: dict[str, Callable[[Any], Any]] = {
    name: _TB.__dict__[name].__get__
    for name in ("shape", "dtype", "device", "requires_grad", "grad_fn", "_version", "_base", "is_leaf",
                 "retains_grad", "grad", "layout", "is_nested")  # fmt: skip
}


def attr(t: Any, name: str) -> Any:
    """``t.<name>`` read through ``TensorBase``'s own getter, no subclass's ``__torch_function__``
    running; raises what the getter raises (the callers decide what a failure means)."""
    get = _GETTERS[name]
    if type(t) in PLAIN:
        return get(t)
    with _no_subclass():
        return get(t)


def getter(name: str) -> Callable[[Any], Any]:
    """``TensorBase``'s own getter of ``name``: what ``attr`` calls for a plain tensor."""
    return _GETTERS[name]


def call_unwrapped(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with every subclass's ``__torch_function__`` off: a record hook, watch or write
    gate (diagnostics) reading a subclass's attributes the plain way."""
    with _no_subclass():
        return fn(*args)


def version(t: Any) -> int:
    """``t._version``, or ``NO_VERSION`` for a tensor that keeps none (an inference tensor)."""
    try:
        return int(attr(t, "_version"))
    except Exception:  # noqa: BLE001 - "no version counter" is an answer, not an error
        return NO_VERSION


def is_view(t: Any) -> bool:
    """Whether ``t`` is a view (``t._base is not None``), False when that cannot be read."""
    try:
        return attr(t, "_base") is not None
    except Exception:  # noqa: BLE001 - an unreadable base: not known to be a view
        return False


def flag(t: Any, name: str) -> bool:
    """A boolean attribute (``is_leaf``, ``retains_grad``, ``requires_grad``), False when unreadable."""
    try:
        return bool(attr(t, name))
    except Exception:  # noqa: BLE001
        return False


#: tensor type -> why a snapshot of one could not be complete, the last reason seen (bounded:
#: one entry per type and failure kind); read by ``failure_of``
failures: dict[tuple[type, str], str] = {}


def meta(t: Any) -> tuple[Any, ...]:
    """The snapshot tuple ``Tracker.meta`` makes, (shape, dtype, device, requires_grad, grad_fn
    name, version), for any tensor: never raises, never runs a subclass's code."""
    with _no_subclass():
        shape = _shape(t)
        dtype = _read(t, "dtype", "?")
        device = _read(t, "device", "?")
        rg = _read(t, "requires_grad", False) is True
        try:
            gf = _GETTERS["grad_fn"](t)
            gfname = None if gf is None else _gf_name(gf)
        except Exception as e:  # noqa: BLE001
            _failed(t, "grad_fn", e)
            gfname = "?"
        try:
            v = int(_GETTERS["_version"](t))
        except Exception:  # noqa: BLE001 - an inference tensor keeps no version counter
            v = NO_VERSION
    return (shape, dtype, device, rg, gfname, v)


def _read(t: Any, name: str, default: Any) -> Any:
    try:
        return _GETTERS[name](t)
    except Exception as e:  # noqa: BLE001
        _failed(t, name, e)
        return default


def _shape(t: Any) -> tuple[Any, ...]:
    try:
        return _GETTERS["shape"](t)  # type: ignore[no-any-return]
    except Exception as e:  # noqa: BLE001 - a nested tensor (strided layout): its regular sizes
        _failed(t, "shape", e)
    try:
        dims = []
        for i in range(_TB.dim(t)):
            try:
                dims.append(_TB.size(t, i))
            except Exception:  # noqa: BLE001 - an irregular dimension has no one size
                dims.append(None)
        return tuple(dims)
    except Exception:  # noqa: BLE001 - not even its number of dimensions
        return ()


def _failed(t: Any, what: str, e: BaseException) -> None:
    if len(failures) < 64:
        failures[(type(t), what)] = f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def partial(m: tuple[Any, ...]) -> bool:
    """Whether a snapshot tuple (``meta``) holds a mark of something that could not be read."""
    return m[5] == NO_VERSION or "?" in (m[1], m[2], m[4]) or None in m[0]


def explain(m: tuple[Any, ...], t: Any = None) -> str:
    """What a partial snapshot could not say, and why; with the tensor (if it is still alive) what
    sort of tensor it is (``kind``)."""
    parts: list[str] = []
    if None in m[0]:
        dims = ", ".join(str(i) for i, s in enumerate(m[0]) if s is None)
        parts.append(f"no single size in dimension {dims} (shown as ?)")
    if m[5] == NO_VERSION:
        parts.append("no version counter: in-place writes are not counted")
    for i, what in ((1, "dtype"), (2, "device"), (4, "grad_fn")):
        if m[i] == "?":
            why = failures.get((type(t), what), "") if t is not None else ""
            parts.append(f"its {what} could not be read" + (f" ({why})" if why else ""))
    text = "; ".join(parts)
    if t is None:
        return text
    k = kind(t)
    return f"{'an' if k[0] in 'aeiou' else 'a'} {k} tensor: {text}"


def kind(t: Any) -> str:
    """A few words on what sort of tensor ``t`` is: its type when not a plain tensor, its layout
    when not strided, nested, inference.  Never raises."""
    parts: list[str] = []
    if type(t) not in PLAIN:
        parts.append(type(t).__name__)
    with _no_subclass():
        try:
            if _GETTERS["is_nested"](t):
                parts.append("nested")
            layout = _GETTERS["layout"](t)
            if layout != torch.strided:
                parts.append(str(layout).removeprefix("torch."))
        except Exception:  # noqa: BLE001
            parts.append("layout unknown")
        try:
            if _TB.is_inference(t):
                parts.append("inference")
        except Exception:  # noqa: BLE001
            pass
    return " ".join(parts) or "tensor"
