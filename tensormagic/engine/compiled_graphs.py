"""How many graphs a compiled call ran, and their ops: read from what Dynamo keeps, without a recompile.

Dynamo keeps, per code object it compiled, a list of cache entries (most recently used first:
a lookup moves the entry it runs to the front), each with the transformed code it runs.  That
code calls each graph through a global ``__compiled_fn_<n>`` of the function's module, and
continues after a graph break in a global ``__resume_at_<n>`` function, itself compiled (its own
entries).  So a call's graphs are the ``__compiled_fn`` names of its entry's code and of its
resume functions' most recent entries.

The op list is read from the callable a graph global holds, where it is reachable:
- ``eager``: the global is Dynamo's FX ``GraphModule``'s ``forward``: its torch-level ops
  (``torch.nn.functional.linear``).
- ``aot_eager``: AOTAutograd's runtime wrappers hold the forward graph it traced (a
  ``GraphModule`` in their closures): its ATen ops (``aten.addmm.default``), as they run.
- ``inductor``: the compiled graph keeps the text of the post-grad FX graph it lowered
  (``CompiledFxGraph.inductor_post_grad_graph_str``, written at every compile and kept in
  inductor's cache): its ATen ops, before inductor fused them into kernels.
- any other backend: no op list (the number of graphs only).
A graph whose ops cannot be found makes the whole list empty rather than partial.
"""

from __future__ import annotations

import functools
import re
import sys
import types
from typing import Any

import torch

#: the op list an event keeps, at most
MAX_OPS = 200
#: objects visited looking for a backend's graph (AOTAutograd's wrappers: ~25-50)
_MAX_VISIT = 160
#: graph breaks followed (``__resume_at`` functions, nested)
_MAX_RESUMES = 16
#: attributes and closure names that lead to the backward graph, not the forward one
_BACKWARD = re.compile(r"backward|bw_|_bw")
_ATEN_CALL = re.compile(r"torch\.ops\.([A-Za-z_][\w]*\.[A-Za-z_]\w*\.[A-Za-z_]\w*)\(")


#: Dynamo's reader of a code object's cache entries (in torch's C extension: no import of Dynamo)
_entries_of = getattr(getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None), "_debug_get_cache_entry_list", None)


def _cache_entries(code: types.CodeType) -> list[Any]:
    """Dynamo's cache entries of ``code``, most recently used first ([] where none or no Dynamo)."""
    if _entries_of is None:
        return []
    try:
        return list(_entries_of(code))
    except Exception:  # noqa: BLE001 - a torch whose entries read otherwise: no count then
        return []


def _candidates(fn: Any) -> list[tuple[types.CodeType, dict[str, Any]]]:
    """(code, globals) of the functions a compiled callable can have Dynamo run as its first frame:
    the function itself, what ``functools.wraps`` wrapped, and a module's ``forward`` (Dynamo
    skips ``Module.__call__`` and compiles ``forward``)."""
    out: list[tuple[types.CodeType, dict[str, Any]]] = []
    for _ in range(8):
        if isinstance(fn, torch.nn.Module):
            fn = getattr(type(fn), "forward", None)
            continue
        if isinstance(fn, types.MethodType):
            owner, fn = fn.__self__, fn.__func__
            _add_code(fn, out)
            if isinstance(owner, torch.nn.Module):
                fn = owner
            continue
        _add_code(fn, out)
        nxt = getattr(fn, "__wrapped__", None)
        if nxt is None:
            break
        fn = nxt
    return out


def _add_code(fn: Any, out: list[tuple[types.CodeType, dict[str, Any]]]) -> None:
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType) and isinstance(getattr(fn, "__globals__", None), dict):
        out.append((code, fn.__globals__))


def first_frame(fn: Any) -> tuple[types.CodeType, dict[str, Any]] | None:
    """(code, globals) of the first frame Dynamo compiled for the compiled callable ``fn``: the
    candidate that has cache entries (None while none has)."""
    for code, globs in _candidates(fn):
        if _cache_entries(code):
            return code, globs
    return None


def entry_code(code: types.CodeType, compile_id: str | None = None) -> types.CodeType | None:
    """The transformed code a call runs for the frame of ``code``: the entry Dynamo's lookup just
    put first, or the entry of compile ``compile_id`` (a call that compiled: its entry is added
    after it started)."""
    entries = _cache_entries(code)
    if compile_id is None:
        return entries[0].code if entries else None
    for e in entries:
        if str(getattr(e, "compile_id", "")) == compile_id:
            return e.code
    return None


def is_dynamo_code(code: types.CodeType) -> bool:
    """Code Dynamo wrote: it calls a graph or resumes after a graph break."""
    return any(n.startswith(("__compiled_fn", "__resume_at")) for n in code.co_names)


def graphs_and_ops(code: types.CodeType, globs: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
    """The graphs the transformed ``code`` calls (and its resume functions' graphs) and their ops
    (empty where a backend keeps none reachable)."""
    graphs = 0
    ops: list[str] | None = []
    todo = [(code, globs)]
    for _ in range(_MAX_RESUMES):
        if not todo:
            break
        code, globs = todo.pop()
        for name in code.co_names:
            if name.startswith("__compiled_fn"):
                graphs += 1
                got = graph_ops(globs.get(name)) if ops is not None else None
                if got is None:
                    ops = None  # one graph's ops unknown: no list rather than a partial one
                else:
                    ops.extend(got)
            elif name.startswith("__resume_at"):
                fn = globs.get(name)
                entries = _cache_entries(fn.__code__) if isinstance(fn, types.FunctionType) else []
                if entries:
                    todo.append((entries[0].code, fn.__globals__))
    return graphs, tuple((ops or ())[:MAX_OPS])


def graph_ops(compiled_fn: Any) -> list[str] | None:
    """The ops of one graph from the callable Dynamo calls it through, or None (not reachable)."""
    gm = _dynamo_graph_module(compiled_fn)
    if gm is not None:
        return _node_ops(gm)
    fx = sys.modules.get("torch.fx")
    seen: set[int] = set()
    queue: list[Any] = [compiled_fn]
    while queue and len(seen) < _MAX_VISIT:
        obj = queue.pop(0)
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if fx is not None and isinstance(obj, fx.GraphModule):
            return _node_ops(obj)  # AOTAutograd's forward graph (aot_eager)
        text = getattr(obj, "inductor_post_grad_graph_str", None) if not isinstance(obj, type) else None
        if isinstance(text, str) and text:
            return _ATEN_CALL.findall(text)  # inductor's lowered graph, ``aten.mul.Tensor`` …
        queue.extend(_children(obj))
    return None


def _children(obj: Any) -> list[Any]:
    """Where a backend's wrapper keeps what it wraps: closures, bound objects, torch objects' fields."""
    if isinstance(obj, types.FunctionType):
        cells = obj.__closure__ or ()
        return [_cell(c) for name, c in zip(obj.__code__.co_freevars, cells) if not _BACKWARD.search(name)]
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if isinstance(obj, types.BuiltinMethodType):  # torch 2.15: autograd.Function.apply bound in C
        owner = getattr(obj, "__self__", None)
        return [owner] if isinstance(owner, type) else []
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args]
    if isinstance(obj, (list, tuple)):
        return list(obj[:16])
    if isinstance(obj, type):  # AOTAutograd's autograd.Function class keeps the compiled forward
        if not obj.__module__.startswith("torch.") or issubclass(obj, torch.nn.Module):
            return []
        return [v for k, v in list(vars(obj).items())[:64] if not k.startswith("__") and not _BACKWARD.search(k)]
    if isinstance(obj, (types.ModuleType, torch.nn.Module)):
        return []  # a module other than a GraphModule is the user's model, not a backend's wrapper
    if not type(obj).__module__.startswith("torch"):
        return []  # the user's objects (a module the graph closes over) are not the backend's
    fields = getattr(obj, "__dict__", None)
    if not isinstance(fields, dict):
        return []
    return [v for k, v in list(fields.items())[:64] if not _BACKWARD.search(k)]


def _cell(c: Any) -> Any:
    try:
        return c.cell_contents
    except ValueError:  # an empty cell
        return None


def _dynamo_graph_module(fn: Any) -> Any:
    """Dynamo's own GraphModule when the backend runs it as it is (``eager``)."""
    fx = sys.modules.get("torch.fx")
    for _ in range(4):
        if fn is None:
            return None
        owner = getattr(fn, "__self__", None)
        if fx is not None and isinstance(owner, fx.GraphModule):
            return owner
        fn = getattr(fn, "_torchdynamo_orig_callable", None)
    return None


def _node_ops(gm: Any) -> list[str]:
    return [_target_name(n) for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]


def _target_name(node: Any) -> str:
    if node.op == "call_method":
        return f"torch.Tensor.{node.target}"
    if node.op == "call_module":
        return str(node.target)
    from .ops import op_name

    try:
        return op_name(node.target)
    except Exception:  # noqa: BLE001 - an odd target still has a name
        return str(getattr(node.target, "__name__", node.target))
