"""A ``torch.compile``d call as one event: what is seen of it, without patching torch.

A call of a compiled function or module runs Dynamo's ``compile_wrapper`` frame
(``torch/_dynamo/eval_frame.py``), whose locals hold the call: ``fn`` (the compiled function or
module), ``args`` and ``kwargs``, and, once the call has returned, ``result``.  A frame object
keeps its locals after its function returns, so the tracker holds that one frame from the call's
start until it has read the outputs (the next first sight of a tensor, the next compiled call,
or the block's end) and then drops it.

The call's start is seen in two ways (``compiled_entry.py``, ``compiled_calls.py``):
- Dynamo's own hooks, set only while a block runs: the guard-complete hook, which Dynamo calls
  each time it is about to run a frame it has compiled code for (the call of ``compile_wrapper``
  is a few frames up), and the end-of-compile callback for a call that compiles first.  These see
  every call, whatever the backend runs: inductor fuses a whole elementwise graph into C++ kernels
  that no torch function mode sees.
- the torch calls the mode still sees while a graph runs (the FX graph's ops with the eager
  backend, the ATen ops with aot_eager, the library kernels inductor's wrapper calls with
  ``out=``): their frames are graph code (``<eval_with_key>`` files, inductor's generated
  modules), below ``compile_wrapper``.  They are part of the call's one event, never events of
  their own, and open the call where the hooks did not (a torch without them).

The graphs and their ops: ``compiled_graphs.py``.
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


def is_disable_wrapper(code: CodeType) -> bool:
    """Dynamo's ``disable`` wrapper (``eval_frame.py``'s ``_fn``), through which compiled code calls
    each graph: the backend's runtime (AOTAutograd's wrappers) runs below it, as library code."""
    return code.co_name == "_fn" and code.co_filename.endswith(f"_dynamo{_SEP}eval_frame.py")


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


def compiled_module(fn: Any) -> torch.nn.Module | None:
    """The module a compiled callable calls (``torch.compile(m)``, ``m.compile()``), or None."""
    for _ in range(8):  # wrap_inline, functools.wraps: __wrapped__ leads to what the user compiled
        if isinstance(fn, torch.nn.Module):
            return fn
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            return owner
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            break
    return None


def compiled_name(fn: Any) -> str:
    """``Sequential`` for a compiled module (``torch.compile(m)``, ``m.compile()``), the function's
    qualified name for a compiled function."""
    mod = compiled_module(fn)
    if mod is not None:
        return type(mod).__name__
    for _ in range(8):
        nxt = getattr(fn, "__wrapped__", None)
        if nxt is None:
            break
        fn = nxt
    name = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)
    return name.rsplit("<locals>.", 1)[-1]  # ``Model.step``, but ``f`` for a function defined in another


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
