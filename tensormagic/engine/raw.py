"""The raw record both engines make and ``build.py`` reads: its layout, and the small helpers
they share (an op's name as a record keeps it, a create's parts, which creates the record hooks
need not see, a call's tensor arguments)."""

from __future__ import annotations

from typing import Any

import torch

from .ops import op_name

Tensor = torch.Tensor


def _name(func: Any) -> str | None:
    """The op's name a raw record keeps (a cached lookup), not the function; None for a tensor
    that appeared without an op (the block's end names it from the source line)."""
    return None if func is None else op_name(func)


# Raw record layout: (kind, op name, tid, meta, where, module, bytecode offset in the line, extra);
# its time (ns since the block began) is ``Tracker.times[i]``, an int64 array: a time in the tuple
# took a 32-byte int object per record.  Records hold strings, numbers and tuples, never
# functions or classes, so that the garbage collector stops tracking them.  Metadata tuples are
# interned per block (``Tracker.meta``): a loop makes the same few thousand metas again and
# again, and keeps one copy of each.
KIND, FUNC, TID, META, WHERE, MODULE, LASTI, EXTRA = range(8)
# meta layout: (shape, dtype, device, requires_grad, grad_fn class name, version)
# extra, by kind: create: the input ids (made by an op) or (input ids, "seen", note), see
# ``create_parts``; view: the base's id; inplace: (version before, *input ids); move: (source id,
# source meta, in place[, version before]); backward: one (leaf id, leaf meta, accumulated, gradient
# id) per gradient (the gradient's shape and dtype are in its Tracker.tensors entry); numpy: None.
# The common records hold no tuple made with them but one of ints: the collector's first pass
# then stops tracking them (a nested fresh tuple keeps the outer one tracked into the old
# generation, and 10,000 of those set off a full collection).
# Tracker.tensors entry layout: (id() key into identity's table (None once the block ended without it),
# first meta, storage id, first raw index)

_gf_names: dict[type, str] = {}  # grad_fn class -> name: one shared string, not one per record


def _gf_name(gf: Any) -> str:
    name = _gf_names.get(type(gf))
    if name is None:
        name = _gf_names[type(gf)] = type(gf).__name__
    return name


#: Tracker.quiet_creates values: an op's creates need no record hook when made from fewer than
#: two inputs (QUIET_ONE), or from any number unless the result is float64 (QUIET_ANY)
QUIET_ONE, QUIET_ANY = 1, 2
#: the record kinds ``Tracker.record_hooks`` see
HOOKED_KINDS = frozenset({"create", "view", "move", "inplace"})
_F64 = torch.float64


def quiet(level: int | None, n_in: int, meta: tuple[Any, ...]) -> bool:
    """Whether a create from ``n_in`` inputs of an op at this quiet ``level`` skips the hooks
    (csrc/record.c decides the same)."""
    return bool(level) and (n_in < 2 or (level >= QUIET_ANY and meta[1] is not _F64))


def create_parts(extra: tuple[Any, ...]) -> tuple[tuple[int, ...], str, str | None]:
    """(input ids, origin "op" or "seen", note) of a create record's extra."""
    if extra and type(extra[0]) is tuple:
        return extra  # type: ignore[return-value]
    return extra, "op", None


def _tensors_in(args: Any, kwargs: dict[str, Any]) -> list[Tensor]:
    out: list[Tensor] = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Tensor))
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, Tensor):
                out.append(a)
    return out
