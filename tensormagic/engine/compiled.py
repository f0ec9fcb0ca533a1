"""A ``torch.compile``d call as one event: what the mode can see of it, without patching torch.

While a compiled function runs, the mode still sees the torch calls its graph makes at run time
(the FX graph's ops with the eager backend, the aten ops with aot_eager, the library kernels
inductor's wrapper calls with ``out=``).  Their frames tell them apart from the user's own
calls: the graph's code (``<eval_with_key>`` files, inductor's generated modules) runs below
Dynamo's ``compile_wrapper`` frame (``torch/_dynamo/eval_frame.py``), whose locals hold the call:
``fn`` (the compiled function or module), ``args`` and ``kwargs``, and, once the call has
returned, ``result``.  A frame object keeps its locals after its function returns, so the
tracker holds that one frame from the graph's first recorded op until it has read the outputs
(the next first sight of a tensor, the next compiled call, or the block's end) and then drops it.

What cannot be seen without a patch, and is therefore not recorded:
- a call whose graph makes no torch call the mode sees (inductor fuses a whole elementwise graph
  into C++ kernels): its outputs appear as tensors seen without an op;
- the op list of a graph compiled by aot_eager or inductor: Dynamo keeps its FX graph reachable
  from the compiled function only for backends that run the FX graph itself (``eager``); the
  event then gives the number of graphs and no op list.
"""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType
from typing import Any

import torch

#: the place ``LineFinder.find`` returns for a torch call made by a compiled graph: never recorded
INSIDE_COMPILED: Any = ...
#: inputs and outputs an event keeps, at most (a compiled call can take hundreds of tensors)
MAX_TENSORS = 64
#: the op list an event keeps, at most
MAX_OPS = 200

_SEP = os.sep


def is_graph_code(code: CodeType, real: str | None = None) -> bool:
    """Code a compiled graph runs (an FX GraphModule's generated ``forward``, inductor's wrapper);
    ``real``: the code's file, resolved already (``LineFinder._learn`` has it)."""
    fn = code.co_filename
    if fn.startswith("<"):
        return fn.startswith("<eval_with_key>")
    root = _inductor_root()
    return root is not None and (real or os.path.realpath(fn)).startswith(root)


_roots: dict[str | None, str | None] = {}


def _inductor_root() -> str | None:
    mod = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    if mod is None:
        return None  # inductor never ran: no code of its own can be running
    key = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # what cache_dir() reads first
    if key in _roots:  # resolving the folder costs ~0.5 ms: once per process and setting
        return _roots[key]
    try:
        root: str | None = os.path.realpath(mod.cache_dir()) + _SEP
    except Exception:  # noqa: BLE001 - an unusual inductor: its code then reads as the user's
        root = None
    _roots[key] = root
    return root


#: id(code) -> (code, whether it is Dynamo's compile_wrapper): a graph's torch call walks ~10
#: frames to its wrapper, and the code objects on that walk are the same every call
_wrapper_codes: dict[int, tuple[CodeType, bool]] = {}


def _is_wrapper(code: CodeType) -> bool:
    got = _wrapper_codes.get(id(code))
    if got is None or got[0] is not code:
        if len(_wrapper_codes) > 4096:  # code objects come and go (exec'd strings): stay bounded
            _wrapper_codes.clear()
        yes = code.co_name == "compile_wrapper" and code.co_filename.endswith(f"_dynamo{_SEP}eval_frame.py")
        got = _wrapper_codes[id(code)] = (code, yes)
    return got[1]


def wrapper_frame(frame: FrameType | None, known: tuple[FrameType, ...] = ()) -> FrameType | None:
    """The ``compile_wrapper`` frame the graph frame ``frame`` runs under, or None (an FX module
    called without torch.compile); one of ``known`` (open calls' wrappers) is found by identity."""
    while frame is not None:
        if frame in known or _is_wrapper(frame.f_code):
            return frame
        frame = frame.f_back
    return None


def callee_frame(wrapper: FrameType, inner: FrameType) -> FrameType | None:
    """The frame ``compile_wrapper`` called (it runs Dynamo's compiled code), from a frame below it."""
    f: FrameType | None = inner
    while f is not None and f.f_back is not wrapper:
        f = f.f_back
    return f


def compiled_name(fn: Any) -> str:
    """``Sequential`` for a compiled module (``torch.compile(m)``, ``m.compile()``), the function's
    qualified name for a compiled function."""
    for _ in range(8):  # wrap_inline, functools.wraps: __wrapped__ leads to what the user compiled
        if isinstance(fn, torch.nn.Module):
            return type(fn).__name__
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            return type(owner).__name__
        nxt = getattr(fn, "__wrapped__", None)
        if nxt is None:
            break
        fn = nxt
    name = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)
    return name.rsplit("<locals>.", 1)[-1]  # ``Model.step``, but ``f`` for a function defined in another


def graphs_and_ops(callee: FrameType | None) -> tuple[int | None, tuple[str, ...]]:
    """How many graphs the running compiled code calls, and their ops where Dynamo keeps the FX
    graph reachable (the eager backend; see the module docstring)."""
    if callee is None:
        return None, ()
    names = [n for n in callee.f_code.co_names if n.startswith("__compiled_fn")]
    if not names:
        return None, ()
    ops: list[str] = []
    g = callee.f_globals
    for n in names:
        gm = _graph_module(g.get(n))
        if gm is None:
            return len(names), ()
        for node in gm.graph.nodes:
            if node.op in ("call_function", "call_method", "call_module") and len(ops) < MAX_OPS:
                ops.append(_target_name(node))
    return len(names), tuple(ops)


def _graph_module(fn: Any) -> Any:
    fx = sys.modules.get("torch.fx")
    for _ in range(4):
        if fn is None:
            return None
        owner = getattr(fn, "__self__", None)
        if fx is not None and isinstance(owner, fx.GraphModule):
            return owner
        fn = getattr(fn, "_torchdynamo_orig_callable", None)
    return None


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


def tensors_of(value: Any, out: list[torch.Tensor]) -> None:
    """The tensors in a call's arguments or result: top level, and one level of lists, tuples and
    dicts (what a module call takes and returns); at most ``MAX_TENSORS``."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
    for v in items:
        if len(out) >= MAX_TENSORS:
            return
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)) or isinstance(v, dict):
            for w in v.values() if isinstance(v, dict) else v:
                if isinstance(w, torch.Tensor) and len(out) < MAX_TENSORS:
                    out.append(w)
