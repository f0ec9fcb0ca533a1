"""Keep torch.compile from compiling tensormagic's own functions as frames.

While a compiled function runs, Dynamo's frame hook sees every Python frame that starts outside
a compiled graph: the frames of a module call it skips (``module.compile()`` on torch's own
modules), and what they call.  Our mode's ``__torch_function__``, the module hooks, and every
Python function the compiled engine calls from C would be compiled then, guarded on tensor ids,
recompiled until Dynamo's limit, and traced with fake tensors (recording nothing true).  Each of
our code objects is marked to be run as it is (``skip_code``'s strategy: this frame only, the
frames it calls keep Dynamo's usual rules, so the user's code it calls is compiled as untracked).
Dynamo still inlines the mode's ``__torch_function__`` when it traces a torch call: the mark is
read by the frame hook only.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch

_done: set[str] = set()
#: len(sys.modules) at the last scan: the scan walks every loaded module (thousands with torch,
#: ~1.4 ms), so a block start skips it when nothing was imported since
_scanned_len = -1


def _strategy() -> Any:
    ev = getattr(getattr(getattr(sys.modules.get("torch"), "_C", None), "_dynamo", None), "eval_frame", None)
    if ev is None or not hasattr(ev, "set_code_exec_strategy"):
        return None  # a torch without it: nothing to mark
    return ev.set_code_exec_strategy, ev._FrameExecStrategy(ev._FrameAction.SKIP, ev._FrameAction.DEFAULT)


def _codes(obj: Any, seen: set[int], out: list[types.CodeType]) -> None:
    fn = getattr(obj, "__func__", obj)
    code = getattr(fn, "__code__", None)
    if isinstance(code, types.CodeType):
        stack = [code]
        while stack:
            c = stack.pop()
            if id(c) in seen:
                continue
            seen.add(id(c))
            out.append(c)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    elif isinstance(obj, property):
        for f in (obj.fget, obj.fset, obj.fdel):
            if f is not None:
                _codes(f, seen, out)


def skip_frames() -> None:
    """Mark the code of every tensormagic module loaded so far (once per module)."""
    global _scanned_len
    if len(sys.modules) == _scanned_len:
        return  # nothing imported since the last scan (an import and a removal in between is missed
        # until the next import: that module's frames are then compiled as untracked user code)
    _scanned_len = len(sys.modules)
    got = _strategy()
    if got is None:
        return
    set_strategy, skip = got
    for name, mod in list(sys.modules.items()):
        if name in _done or mod is None or not (name == "tensormagic" or name.startswith("tensormagic.")):
            continue
        _done.add(name)
        seen: set[int] = set()
        codes: list[types.CodeType] = []
        for obj in list(vars(mod).values()):
            if getattr(obj, "__module__", None) != name:
                continue
            _codes(obj, seen, codes)
            if isinstance(obj, type):
                for member in list(vars(obj).values()):
                    _codes(member, seen, codes)
        for code in codes:
            set_strategy(code, skip)


class _NoFlag:
    _is_compiling_flag = False


# ``torch.compiler.is_compiling()`` is ``False if torch.jit.is_scripting() else _is_compiling_flag``
# (~1,500 instructions: three lookups and two Python calls), and the hot path asks it at every
# module call twice (the module hooks) and at every torch call a Python function hands the mode.
# Outside TorchScript, which never runs these functions, ``is_scripting()`` is False, so the same
# answer is ``is_dynamo_compiling() or _is_compiling_flag`` (~450): Dynamo folds
# ``is_dynamo_compiling()`` to True while it traces, as it folds ``is_compiling()``, and never
# reads (nor guards on) the flag; run eagerly it is False, and the flag answers as
# ``is_compiling()`` would (True while Dynamo compiles, and in a non-strict ``torch.export``).
if callable(getattr(torch.compiler, "is_dynamo_compiling", None)) and isinstance(
    getattr(torch.compiler, "_is_compiling_flag", None), bool
):
    #: ``dynamo_compiling() or compile_flag._is_compiling_flag`` is ``torch.compiler.is_compiling()``
    dynamo_compiling: Any = torch.compiler.is_dynamo_compiling
    compile_flag: Any = torch.compiler
else:  # a torch without them: its own is_compiling(), whatever it reads
    dynamo_compiling = torch.compiler.is_compiling
    compile_flag = _NoFlag
