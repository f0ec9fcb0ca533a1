"""Dynamo's hooks that see a compiled call start, set only while a block runs.

A call of a compiled function whose graph inductor fused into C++ kernels makes no torch call a
function mode sees (under ``torch.no_grad()``, none at all: AOTAutograd's runtime wrapper then
does not even toggle grad mode).  Dynamo itself offers two hooks, each a setting of torch, not a
patch of its code, and each taken back when the last block ends:

- the guard-complete hook (``torch._C._dynamo.eval_frame.set_guard_complete_hook``, what
  ``torch.compiler.set_enable_guard_collectives`` sets): Dynamo calls it each time it has looked
  up its cache for a frame it compiled, just before running the compiled code.  Its caller's
  frame (the frame being run is not on the stack yet) is Dynamo's ``compile_wrapper`` or a few
  frames below it.  Dynamo keeps the cached code when the hook returns True: ours returns what a
  hook set before it returns (True when none), so what runs is unchanged.
- the end-of-compile callback (``torch._dynamo.callback_handler.register_end_callback``): a call
  that compiles its code (the first call) is not looked up in a cache; Dynamo calls this at the
  end of the compile, from the frames of the call being compiled.
- the start-of-compile callback, with that end callback, brackets a backward graph AOTAutograd
  compiles when it first runs (inside ``backward()``, trigger ``LAZY_BACKWARD``): inductor's
  lowering makes torch calls of its own there (``torch.empty([1])`` to promote dtypes, from
  functions it ``exec``s), which are the compiler's work, not the user's, so the mode passes them
  through, as it does while Dynamo traces.  ``torch._dynamo`` is imported
  for it only where it is already loaded (importing it costs seconds); a block that starts before
  the first ``torch.compile`` registers it at the first guard-complete call, so a first call
  compiled then, whose graph no mode sees, is the one call that may go unrecorded.

Both run for every thread: they act only for a thread with a block running, and never raise.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import torch

_get_ident = threading.get_ident
_no_torch_function = torch._C.DisableTorchFunction
#: thread id -> the modes of the blocks running in that thread (innermost last)
_running: dict[int, list[Any]] = {}
_lock = threading.Lock()
#: the guard-complete hook set before ours (``set_enable_guard_collectives``), called first
_prior: Any = None
_hooked = False
_callback_handler: Any = None
#: id(mode) -> (mode, its busy flag before a lazy backward compile started on its thread)
_compiling: dict[int, tuple[Any, Any]] = {}


def _new_lock_in_child() -> None:
    # fork copies the lock as it was: held, if another thread was entering or leaving a block
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; registered before api's handler, so it runs first
    os.register_at_fork(after_in_child=_new_lock_in_child)


def _setter() -> Any:
    ev = getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None)
    return getattr(ev, "set_guard_complete_hook", None)


def _guard_complete(cache_hit: bool) -> bool:
    prior = _prior
    ok = True if prior is None else prior(cache_hit)
    modes = _running.get(_get_ident())
    if modes:
        if _callback_handler is None:
            _register_callback()
        _entered(sys._getframe(1), modes, cache_hit, None)
    return ok


def _trigger(args: Any) -> str:
    return getattr(getattr(args, "callback_trigger", None), "name", "DYNAMO")


def _compile_start(args: Any) -> None:
    modes = _running.get(_get_ident())
    if not modes or _trigger(args) != "LAZY_BACKWARD":
        return
    for mode in list(modes):
        if id(mode) not in _compiling:
            _compiling[id(mode)] = (mode, mode._busy)
            mode._busy = True


def _compile_end(args: Any) -> None:
    modes = _running.get(_get_ident())
    if not modes:
        return
    if _trigger(args) != "DYNAMO":
        # a backward compiled when it first runs: no call of a compiled function starts
        for mode in list(modes):
            held = _compiling.pop(id(mode), None)
            if held is not None and mode._busy is True:
                mode._busy = held[1]
        return
    compile_id = getattr(args, "compile_id", None)
    _entered(sys._getframe(1), modes, None, None if compile_id is None else str(compile_id))


def _entered(frame: Any, modes: list[Any], cache_hit: bool | None, compile_id: str | None) -> None:
    # the tracker reads the call's tensors (shape, storage): not calls of the user's code for the
    # mode to see, and not a subclass's __torch_function__ either (describe.py reads those)
    with _no_torch_function():
        for mode in modes if len(modes) == 1 else list(modes):
            if mode.disabled:
                continue
            try:
                mode.tracker.open_compiled(frame, graph=False, cache_hit=cache_hit, compile_id=compile_id)
            except Exception as e:  # noqa: BLE001 - a failure here must never reach Dynamo or the user
                mode._internal(e)


def _register_callback() -> None:
    global _callback_handler
    dynamo = sys.modules.get("torch._dynamo")
    handler = getattr(dynamo, "callback_handler", None)
    if handler is None or not hasattr(handler, "register_end_callback"):
        return
    handler.register_end_callback(_compile_end)
    if hasattr(handler, "register_start_callback"):
        handler.register_start_callback(_compile_start)
    _callback_handler = handler


def _install() -> None:
    global _prior, _hooked
    setter = _setter()
    if setter is not None:
        _prior = setter(_guard_complete)
        _hooked = True
    _register_callback()


def _uninstall() -> None:
    global _prior, _hooked, _callback_handler
    if _hooked:
        setter = _setter()
        current = setter(_prior) if setter is not None else None
        if current is not _guard_complete and setter is not None:
            setter(current)  # set by someone else during the block: theirs stays
        _prior, _hooked = None, False
    handler, _callback_handler = _callback_handler, None
    if handler is not None:
        for remove, cb in ((handler.remove_end_callback, _compile_end),
                           (getattr(handler, "remove_start_callback", None), _compile_start)):
            try:
                if remove is not None:
                    remove(cb)
            except ValueError:  # torch._dynamo.reset() during the block cleared every callback
                pass


def watch(mode: Any) -> None:
    """Tell ``mode``'s tracker of the compiled calls its thread starts (``open_compiled``)."""
    tid = _get_ident()
    with _lock:
        if not _running:
            _install()
        modes = _running.setdefault(tid, [])
        if mode not in modes:
            modes.append(mode)


def unwatch(mode: Any) -> None:
    """Stop telling ``mode``; the hooks go when no block runs in any thread.  Idempotent."""
    with _lock:
        _compiling.pop(id(mode), None)
        for tid, modes in list(_running.items()):
            if mode in modes:
                modes.remove(mode)
                if not modes:
                    del _running[tid]
        if not _running and (_hooked or _callback_handler is not None):
            _uninstall()
