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
# ``create_parts`` (note: "grad" for a gradient backward filled in, "direct" for a tensor the
# user's line handed to the op that first met it, else None); view: the base's id; inplace:
# (version before, *input ids); move: (source id, source meta, in place[, version before]);
# backward: one (leaf id, leaf meta, accumulated, gradient id) per gradient (the gradient's shape
# and dtype are in its Tracker.tensors entry); numpy: None.
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
#: two inputs (QUIET_ONE), or from any number unless the result is float64 (QUIET_ANY), or from
#: any number unless the result is float64 or has more elements than every input (QUIET_FIT: an
#: elementwise op, whose broadcast check looks only at a result bigger than all its inputs)
QUIET_ONE, QUIET_ANY, QUIET_FIT = 1, 2, 3
#: the record kinds ``Tracker.record_hooks`` see
HOOKED_KINDS = frozenset({"create", "view", "move", "inplace"})
_F64 = torch.float64


def quiet(level: int | None, in_ids: Any, meta: tuple[Any, ...], tensors: dict[int, Any]) -> bool:
    """Whether a create from the inputs ``in_ids`` of an op at this quiet ``level`` skips the
    hooks (csrc/record.c decides the same); ``tensors`` is ``Tracker.tensors``."""
    if not level:
        return False
    if len(in_ids) < 2:
        return True
    if meta[1] is _F64 or level == QUIET_ONE:
        return False
    if level != QUIET_FIT:
        return True
    # QUIET_FIT: x * a + b on same-sized tensors (W1b) would otherwise call the hooks on every op
    n_out = numel(meta[0])
    if n_out is None:
        return False
    for i in in_ids:
        info = tensors.get(i)
        n = None if info is None else numel(info[1][0])
        if n is not None and n >= n_out:
            return True
    return False


def numel(shape: Any) -> int | None:
    """The elements of a recorded shape as the diagnostics count them (0 when a dimension is None:
    a nested tensor's irregular one); None when it is not a tuple of ints and Nones (csrc/record.c's
    shape_numel: the same)."""
    if not isinstance(shape, tuple):
        return None
    n = 1
    for s in shape:
        if s is None:
            return 0
        if type(s) is not int:
            return None
        n *= s
    return n


def create_parts(extra: tuple[Any, ...]) -> tuple[tuple[int, ...], str, str | None]:
    """(input ids, origin "op" or "seen", note) of a create record's extra."""
    if extra and type(extra[0]) is tuple:
        return extra  # type: ignore[return-value]
    return extra, "op", None


def per_item_inputs(func: Any, args: Any, kwargs: dict[str, Any], n: int) -> list[list[Tensor]] | None:
    """For a ``torch._foreach_*`` op that returned ``n`` tensors: output k's inputs, the k-th
    tensor of each list argument of length ``n`` and every tensor passed alone, in argument
    order (``_foreach_norm(grads)``'s k-th norm is of ``grads[k]`` alone).  None for any other op,
    whose every output is said to come from all its inputs."""
    if not getattr(func, "__name__", "").startswith("_foreach_"):
        return None
    values = [*args, *(kwargs or {}).values()]
    if not any(isinstance(a, (list, tuple)) and len(a) == n for a in values):
        return None
    out: list[list[Tensor]] = [[] for _ in range(n)]
    for a in values:
        if isinstance(a, Tensor):
            for ins in out:
                ins.append(a)
        elif isinstance(a, (list, tuple)) and len(a) == n:
            for ins, x in zip(out, a):
                if isinstance(x, Tensor):
                    ins.append(x)
    return out


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
