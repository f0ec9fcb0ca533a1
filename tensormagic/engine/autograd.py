"""The autograd graph as plain data, captured when a block ends.

Autograd nodes cannot be weakly referenced and keep saved tensors alive, so a recording never
holds them: it walks the graph once, at the end of the block, into a table of ``GradNode``
and edges that a log file can carry too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..model.fastinit import fast_constructor
from ..model.gradgraph import GradNode, GraphTable
from . import describe

Tensor = torch.Tensor

MAX_NODES = 20_000

#: GradNode(id, name, tensors, leaf), filled slot by slot: a block's end makes one per node
_grad_node = fast_constructor(GradNode)


def node_name(node: Any) -> str:
    """``AddBackward0``; ``torch::autograd::AccumulateGrad`` becomes ``AccumulateGrad``."""
    return node.name().rsplit("::", 1)[-1]


_has_variable: dict[type, bool] = {}  # node type -> whether it has .variable (AccumulateGrad)


def _variable(node: Any) -> Any:
    """The leaf tensor an AccumulateGrad node fills, or None (any other node)."""
    kind = type(node)
    has = _has_variable.get(kind)
    if has is None:  # only AccumulateGrad nodes have one: a failed getattr costs ~1 µs a node
        has = _has_variable[kind] = hasattr(node, "variable")
    return node.variable if has else None


def leaves_of(roots: Iterable[Any]) -> list[Any]:
    """Leaf tensors whose ``.grad`` a backward from ``roots`` fills, in discovery order."""
    out: list[Any] = []
    seen: set[int] = set()
    stack = [_grad_fn(r) for r in roots]
    keep: list[Any] = []  # hold nodes while walking so id() is not reused
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        keep.append(node)
        var = _variable(node)
        if var is not None:
            out.append(var)
        # a plain loop, not extend(generator): this runs on every backward (17 -> 7 µs on an MLP)
        for n, _ in node.next_functions:
            if n is not None:
                stack.append(n)
    for r in roots:  # a leaf given as root (out = x; out.backward(...)) fills its own grad
        if isinstance(r, Tensor) and _grad_fn(r) is None and describe.flag(r, "requires_grad"):
            out.append(r)
    return out


def _grad_fn(t: Any) -> Any:
    """``t.grad_fn`` read without a subclass's ``__torch_function__``; None for a non-tensor or
    when it cannot be read."""
    if not isinstance(t, Tensor):
        return None
    try:
        return describe.attr(t, "grad_fn")
    except Exception:  # noqa: BLE001
        return None


def capture_compiled(hot: Any, tensors: list[tuple[str, Any]], names: dict[int, tuple[str, ...]]) -> GraphTable:
    """``capture`` in C (``csrc/blockend.c``'s ``capture_graph``), a tensor named as
    ``snapshot._name_of`` names it: the first of its names, through identity's table."""
    from . import identity

    table = GraphTable()
    table.truncated = hot.capture_graph(tensors, names, identity._ids, _has_variable, _grad_fn, _grad_node,
                                        table.roots, table.nodes, table.edges, MAX_NODES)  # fmt: skip
    return table


def capture(tensors: Iterable[tuple[str, Any]], name_of: Callable[[Any], str | None]) -> GraphTable:
    """Walk the graphs below ``(tensor id, tensor)`` pairs; ``name_of`` names a tensor or None
    (``capture_compiled`` is the compiled twin)."""
    table = GraphTable()
    ids: dict[int, int] = {}
    keep: list[Any] = []
    produced: dict[int, list[str]] = {}
    pending: list[tuple[str, Any]] = []
    for tid, t in tensors:
        gf = _grad_fn(t)
        if gf is None:
            continue
        pending.append((tid, gf))
        name = name_of(t)
        if name is not None:
            produced.setdefault(id(gf), []).append(name)

    def nid_of(node: Any) -> int:
        key = id(node)
        n = ids.get(key)
        if n is None:
            n = ids[key] = len(ids) + 1
            keep.append(node)
        return n

    stack: list[Any] = []
    for tid, gf in pending:
        table.roots[tid] = nid_of(gf)
        stack.append(gf)
    done: set[int] = set()
    nodes, edges = table.nodes, table.edges
    while stack:
        node = stack.pop()
        n = nid_of(node)
        if n in done:
            continue
        done.add(n)
        if len(done) > MAX_NODES:
            table.truncated = True
            break
        var = _variable(node)
        leaf = (name_of(var) or "leaf") if var is not None else None
        made = produced.get(id(node))
        nodes[n] = _grad_node(n, node_name(node), tuple(dict.fromkeys(made)) if made else (), leaf)
        kids = [c for c, _ in node.next_functions if c is not None]
        edges[n] = tuple([nid_of(c) for c in kids])
        kids.reverse()
        stack.extend(kids)
    return table
