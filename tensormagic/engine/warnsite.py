"""A warning PyTorch raises inside a tracked call points at the user's line, as it does untracked.

torch issues its C++ warnings (``TORCH_WARN``) with stacklevel 1 when the C function returns, so
Python places them at the frame that called the function.  The compiled engine calls torch from
C (no frame of its own); the pure-Python engine calls it from ``TrackMode.__torch_function__``,
and a user reading ``.grad`` of a non-leaf would see ``…/tensormagic/engine/mode.py:123:
UserWarning`` as if tensormagic were at fault.

While a block runs, ``warnings._showwarnmsg`` (the one place every warning the filters let
through goes, whatever ``showwarning`` or ``catch_warnings(record=True)`` the user set) is
wrapped.  A warning placed in ``mode.py`` is issued again with ``warnings.warn_explicit`` at the
first frame outside ``mode.py`` (the caller of the torch function: the user's line), with that
frame's module, ``__warningregistry__`` and globals, so the user's filters and "once per
location" decide as they do untracked; what the first pass left in ``mode.py``'s registry (and
the process-wide once-registry) is taken out first.  Calls that warn nothing pay nothing: the
wrapper runs only when a warning is shown.

Not covered: a filter that ignores or raises on the first pass decides with ``mode.py``'s module
and line (a filter on module ``tensormagic``, which untracked code never matches), and a
Python-level torch function warning with ``stacklevel`` 2 or more counts the mode's frames too
(except ``torch.autograd.grad``'s and ``backward``'s own, which ``backward_run.run`` calls: those
are placed where untracked code places them).
"""

from __future__ import annotations

import sys
import threading
import warnings
from typing import Any

from . import backward_run as _backward_run
from . import mode as _mode

_MODE_FILE = _mode.__file__
_RUN_FILE = _backward_run.__file__
_RUN_CODE = _backward_run.run.__code__
_lock = threading.Lock()
_users = 0
_original: Any = None
_chained = False  # someone wrapped ours since: ours stays in their chain, passing warnings on


def _located_in_mode(msg: Any) -> bool:
    return getattr(msg, "filename", None) in (_MODE_FILE, _RUN_FILE)


def _backward_caller(f: Any) -> Any:
    """For a warning placed in ``backward_run.run`` (a ``stacklevel=2`` warning of torch's
    ``autograd.grad``/``backward`` code, which ``run`` called): the frame untracked code would
    place it at, the caller of the function that warned.  Up from ``run``: the mode's frames,
    ``handle_torch_function``, then the public function the user called (``F``).  Untracked, ``F``
    itself called the function that warned when ``F`` is ``Tensor.backward`` (``run`` called
    ``autograd.backward`` for it), else ``F``'s caller did.  None where the frames are not so."""
    while f is not None and f.f_code is not _RUN_CODE:
        f = f.f_back
    if f is None:
        return None
    tensor_backward = f.f_locals.get("func") is _backward_run.tensor_backward()
    while f is not None and not (f.f_code.co_name == "handle_torch_function" and
                                 f.f_code.co_filename.endswith("overrides.py")):  # fmt: skip
        f = f.f_back
    outer = f.f_back if f is not None else None
    if outer is None:
        return None
    return outer if tensor_backward else outer.f_back


def _show(msg: Any) -> None:
    """``warnings._showwarnmsg`` while blocks run: a warning placed in mode.py is issued again at
    its caller's line; every other warning is shown as before."""
    original = _original
    if not _located_in_mode(msg):
        return original(msg)
    try:
        f = sys._getframe(1)
        if msg.filename == _RUN_FILE:
            f = _backward_caller(f)
        else:
            while f is not None and f.f_code.co_filename != _MODE_FILE:
                f = f.f_back  # up through warnings' own frames to the mode's call of torch
            while f is not None and f.f_code.co_filename == _MODE_FILE:
                f = f.f_back  # and past the mode's frames: the caller of the torch function
        if f is None:
            return original(msg)
        g = f.f_globals
        registry = g.get("__warningregistry__")
        if not isinstance(registry, dict):
            registry = g["__warningregistry__"] = {}
        for placed in (_mode, _backward_run):  # judged again at the user's line
            placed.__dict__.get("__warningregistry__", {}).clear()
        warnings.onceregistry.pop((str(msg.message), msg.category), None)
        filename = f.f_code.co_filename
        module = g.get("__name__")
        if not isinstance(module, str):  # a frame without one (exec'd code): as warnings names it
            module = "<string>"  # (None would make warn_explicit drop the warning without a word)
        warnings.warn_explicit(msg.message, msg.category, filename, f.f_lineno, module=module,
                               registry=registry, module_globals=g)  # fmt: skip
    except Warning:
        raise  # a user's "error" filter at their line: raised as it is untracked
    except Exception:  # noqa: BLE001 - never lose the warning: show it where it was placed
        return original(msg)
    return None


def acquire() -> None:
    """A block starts: wrap ``warnings._showwarnmsg`` (once for all running blocks)."""
    global _users, _original
    with _lock:
        if _users == 0 and not _chained and getattr(warnings, "_showwarnmsg", None) is not None:
            _original = warnings._showwarnmsg
            warnings._showwarnmsg = _show  # type: ignore[attr-defined]
        _users += 1


def release() -> None:
    """A block ends: the last one puts the original back, unless someone replaced ours since
    (then ours stays in their chain, and passes every warning on as it came)."""
    global _users, _chained
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0:
            if warnings.__dict__.get("_showwarnmsg") is _show:
                warnings._showwarnmsg = _original  # type: ignore[attr-defined]
            else:
                _chained = True  # wrapping it again would call ourselves through theirs


def installed() -> bool:
    """Whether the wrapper is in place (tests check that none is left after a block)."""
    return warnings.__dict__.get("_showwarnmsg") is _show
