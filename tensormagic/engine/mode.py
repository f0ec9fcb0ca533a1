"""The ``TorchFunctionMode`` that ``track()`` enters: it routes each torch call to the Tracker.

Every torch call of the block passes through ``TrackMode.__torch_function__``, so its first
lines decide in two dict lookups what a call is (cached per function, ``ops.classify``).  The
common case, an op without keyword arguments that may make a new tensor, is handled in that
one function; everything else (in-place writes, ``out=``, moves, views, backward, watched
calls) goes through ``_call``.

``CompiledTrackMode`` (``compiled_mode.py``) runs the common calls in C (``csrc/``, the ``_hotpath`` extension, built at
install where a compiler is available): calls that record nothing (watched ones after their
watch), an op without ``out=`` that makes one new tensor from known ones, an in-place op on its
first argument.  It hands every other call to the Python method; both engines record the same events
(``tests/test_engines.py``).

torch.compile: Dynamo inlines a mode's ``__torch_function__`` when it compiles a function that
runs under the mode.  Its first line passes every call through while Dynamo traces
(``torch.compiler.is_compiling()``, asked as ``frames.py`` says, which Dynamo reads as True): tracking adds nothing to the
graph, no graph break and no recompile beyond the mode's presence on the stack, and Dynamo never
reaches tensormagic's own code (it would compile those frames, guarding them on tensor ids).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from . import backward_run, compiled_entry, describe, frames
from .compiled import INSIDE_COMPILED
from .describe import NO_VERSION, PLAIN
from .frames import compile_flag as _flag
from .frames import dynamo_compiling as _dynamo_compiling
from .ops import ALIAS, BACKWARD, DATA_SET, GENERAL, INPLACE, MOVE, NUMPY, SKIP, classify, op_name
from .tracker import Tracker

try:  # built from csrc/ at install when a C compiler is there; the Python path does the same
    from . import _hotpath
except ImportError:  # pragma: no cover - exercised where no compiler was available
    _hotpath = None  # type: ignore[assignment]
else:  # how the compiled path reads a tensor that is not a plain one (describe.py)
    _hotpath.set_describe(describe.attr, describe.meta, describe.call_unwrapped, torch.nn.Parameter)

ENGINES = ("c", "python")

Tensor = torch.Tensor
_now = time.perf_counter_ns
_getframe = sys._getframe
WATCHED = -1  # a call a diagnostic watches before it runs (``Tracker.call_watch``)
WATCHED_SKIP = -2  # a watched call that records nothing itself (``.grad`` reads)


class _AllSkip(dict):  # type: ignore[type-arg]
    """The action table of a mode that stopped recording: every call is SKIP."""

    def get(self, key: Any, default: Any = None) -> int:
        return SKIP


def _reads_non_leaf(args: Any) -> bool:
    """The call's first argument is a tensor that is neither a leaf nor retains its grad."""
    t = args[0] if args else None
    return isinstance(t, Tensor) and not describe.flag(t, "is_leaf") and not describe.flag(t, "retains_grad")


class TrackMode(TorchFunctionMode):
    """The mode entered by ``track()``; routes each call by its cached classification."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker
        self._actions: dict[Any, int] = {}
        # func -> (watch, action, non_leaf_only): see Tracker.call_watch
        self._watched: dict[Any, tuple[Callable[..., None], int, bool]] = {}
        self.disabled = False
        self._busy = False
        self._find = tracker.lines.find  # bound once: the hot path calls it per recorded op

    def _classify(self, func: Any) -> int:
        action = classify(func)
        watch = self.tracker.call_watch.get(op_name(func))
        if watch is not None:
            self._watched[func] = (watch, action, getattr(watch, "non_leaf_only", False) is True)
            action = WATCHED_SKIP if action == SKIP else WATCHED
        self._actions[func] = action
        return action

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
        # torch.compiler.is_compiling(), cheaper (frames.py): torch.compile is tracing this call,
        # pass it through (module docstring)
        if _dynamo_compiling() or _flag._is_compiling_flag:
            return func(*args, **kwargs) if kwargs else func(*args)
        action = self._actions.get(func)
        if action is None:
            action = self._classify(func)
        # busy: False, True (a call of the mode's is running), or backward_run.OffThread while
        # backward's engine runs (true on other threads only): put back as it was after a call
        busy = self._busy
        if action != GENERAL or kwargs or busy:
            if action == SKIP or busy:
                return func(*args, **kwargs) if kwargs else func(*args)
            if action == WATCHED_SKIP:
                self._watch(func, args)
                return func(*args, **kwargs) if kwargs else func(*args)
            return self._call(func, action, args, kwargs or {})
        # A GENERAL op without keyword arguments: the bulk of what a block runs, handled here
        # without another call.  First, the call torch.compile cannot trace (module docstring).
        t = _now()
        a0 = args[0] if args else None
        # an op that writes its input and hands it back (dropout inplace) shows as a version bump;
        # read without a subclass's __torch_function__, NO_VERSION when it has none (inference)
        v0 = NO_VERSION
        if isinstance(a0, Tensor):
            if type(a0) in PLAIN:
                try:
                    v0 = a0._version
                except Exception:  # noqa: BLE001 - an inference tensor keeps no version counter
                    pass
            else:
                v0 = describe.version(a0)
        # Calls made by the function itself (e.g. inside nn.init on a Parameter) can reach the mode
        # again: they are part of this call, not events of their own.
        self._busy = True
        try:
            r = func(*args)
        except Exception as exc:
            if self.tracker.error_hooks:
                self._on_error(func, args, {}, exc)
            raise
        finally:
            self._busy = busy
        try:
            if isinstance(r, Tensor):
                if r is a0:
                    if describe.version(a0) != v0:
                        self.tracker.record_write(func, a0, v0, args, {}, self._find(_getframe(1)))
                    return r
                tr = self.tracker
                where = self._find(_getframe(1))
                if where is not INSIDE_COMPILED and not tr._created(func, args, None, r, where, t):
                    tr.record_outputs(func, GENERAL, args, {}, r, where)
            elif isinstance(r, (tuple, list)):
                self.tracker.record_outputs(func, GENERAL, args, {}, r, self._find(_getframe(1)))
        except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
            self._internal(e)
        return r

    def _watch(self, func: Any, args: Any) -> None:
        try:
            watch, _action, non_leaf_only = self._watched[func]
            if non_leaf_only and not _reads_non_leaf(args):
                return
            if args and isinstance(args[0], Tensor) and type(args[0]) not in PLAIN:
                describe.call_unwrapped(watch, self.tracker, func, args, self._where)  # no subclass code
            else:
                watch(self.tracker, func, args, self._where)
        except Exception as e:  # noqa: BLE001 - a failing check must never break user code
            self._internal(e)

    def _call(self, func: Any, action: int, args: Any, kwargs: dict[str, Any]) -> Any:
        """Every other recorded call: in-place, out=, moves, views, backward, watched calls.  The
        compiled engine runs the same two halves around its own call of ``func``."""
        __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
        t = _now()  # when the call began; not traceable by torch.compile: see the module docstring
        st = self._before_call(func, action, args, kwargs, t)
        if st is None:
            return func(*args, **kwargs)
        busy = self._busy
        self._busy = True
        try:
            if st[1] == BACKWARD:  # its engine runs with the mode on the stack: hooks are recorded
                r = backward_run.run(self, func, args, kwargs)
            else:
                r = func(*args, **kwargs)
        except Exception as exc:
            if self.tracker.error_hooks:
                self._on_error(func, args, kwargs, exc)
            raise
        finally:
            self._busy = busy
        self._after_call(st, r)
        return r

    def _before_call(self, func: Any, action: int, args: Any, kwargs: dict[str, Any], t: int = 0) -> Any:
        """What ``_after_call`` compares with: the written tensor's version, backward's leaves…;
        None when recording stopped (a watch failed) or for a backward a hook started."""
        tr = self.tracker
        if action == GENERAL and kwargs and "out" in kwargs and self._find(_getframe(1)) is INSIDE_COMPILED:
            return None  # a compiled graph's kernel filling its own buffer: part of its call's one event
        if not t:
            t = _now()
        if action == WATCHED:
            action = self._watched[func][1]
            self._watch(func, args)
            if self.disabled:
                return None
        written: Any = None
        before: Any = None
        if action == INPLACE:
            # torch.nn.init functions arrive with the tensor as a keyword (tensor=...)
            written = args[0] if args else next((v for v in kwargs.values() if isinstance(v, Tensor)), None)
        elif action == GENERAL:
            out = kwargs.get("out") if kwargs else None
            if out is not None:
                written = out
            elif args and isinstance(args[0], Tensor):
                written = args[0]  # an op that writes its input and hands it back (dropout inplace)
        elif action == DATA_SET:
            try:
                before = tr.meta(args[0])
            except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
                self._internal(e)
        v0: Any = None
        if isinstance(written, Tensor):
            v0 = describe.version(written)
        elif isinstance(written, (list, tuple)):
            v0 = [describe.version(w) if isinstance(w, Tensor) else NO_VERSION for w in written]
        prep: Any = None
        if action == BACKWARD:
            if self._busy is not False:
                return None  # started by a hook while backward's engine runs: as torch runs it, mode off
            try:
                prep = tr.prepare_backward(func, args, kwargs)
            except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
                self._internal(e)
        return (func, action, args, kwargs, written, v0, before, prep, t)

    def _after_call(self, st: Any, r: Any) -> None:
        """Record what the call did (``st`` from ``_before_call``); never raises an Exception."""
        func, action, args, kwargs, written, v0, before, prep, t = st
        tr = self.tracker
        n0 = len(tr.raw)
        try:
            if action == GENERAL or action == ALIAS or action == MOVE:
                if written is not None and (r is written or action == GENERAL and "out" in kwargs):
                    if isinstance(written, Tensor):
                        if describe.version(written) != v0:
                            tr.record_write(func, written, v0, args, kwargs, self._find(_getframe(1)))
                    elif isinstance(written, (list, tuple)):  # out=(values, indices): each one written
                        where = self._where()
                        for w, v in zip(written, v0):
                            if isinstance(w, Tensor) and describe.version(w) != v:
                                tr.record_write(func, w, v, args, kwargs, where)
                elif isinstance(r, (Tensor, tuple, list)):
                    tr.record_outputs(func, action, args, kwargs, r, self._find(_getframe(1)), t)
            elif action == INPLACE:
                if isinstance(written, Tensor):
                    tr.record_write(func, written, v0, args, kwargs, self._find(_getframe(1)))
                elif isinstance(written, (list, tuple)):
                    where = self._where()
                    for w, v in zip(written, v0):
                        if isinstance(w, Tensor):
                            tr.record_write(func, w, v, (w,), {}, where)
            elif action == DATA_SET:
                tr.record_data_set(func, args[0], args[1], before, self._where())
            elif action == NUMPY:
                tr.record_numpy(func, args[0], self._where())
            elif prep is not None:
                tr.finish_backward(func, prep, r, self._where())
            tr.one_call(n0)  # a foreach write's records, backward's: one call (Lines counts calls)
        except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
            self._internal(e)

    def _where(self) -> Any:
        # the walk skips tensormagic's own frames: starting a few frames deep costs little
        return self.tracker.lines.find(_getframe(2))

    def _on_error(self, func: Any, args: Any, kwargs: Any, exc: BaseException) -> None:
        where = self._where()
        for hook in self.tracker.error_hooks:
            try:  # reads of a subclass's attributes run none of its code
                describe.call_unwrapped(hook, self.tracker, func, args, kwargs, exc, where)
            except Exception as e:  # noqa: BLE001 - the user's exception is the one that matters
                self._internal(e)

    def _internal(self, e: BaseException) -> None:
        """An internal failure: stop recording for the rest of the block, say so once."""
        if self.tracker.internal_error is None:
            self.tracker.internal_error = e
        self.disabled = True
        self._actions = _AllSkip()

    def __enter__(self) -> TrackMode:
        super().__enter__()
        compiled_entry.watch(self)  # the compiled calls this thread starts (compiled_entry.py)
        return self

    def __exit__(self, *exc: object) -> None:
        compiled_entry.unwatch(self)
        super().__exit__(*exc)

    def close(self) -> None:
        """The block has ended and the mode is off the stack: drop what recording needed."""
        compiled_entry.unwatch(self)  # a mode some other code took off the stack never ran __exit__

    def make_inert(self) -> None:
        """Record nothing more, without calling it a failure (a forked child's copy of the mode)."""
        self.disabled = True
        self._actions = _AllSkip()


def default_engine() -> str:
    """The compiled engine when it was built, unless ``TENSORMAGIC_ENGINE=python`` says otherwise."""
    env = os.environ.get("TENSORMAGIC_ENGINE", "").strip().lower()
    if env == "python" or _hotpath is None:
        return "python"
    return "c"


def check_engine(engine: str | None) -> None:
    """A clear error for an engine name that is not one of ``ENGINES`` (None: the default)."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))} or None, got {engine!r}")


def make_mode(tracker: Tracker, engine: str | None = None) -> TrackMode:
    """The tracking mode for ``engine`` ("c", "python"; None: ``default_engine()``)."""
    check_engine(engine)
    engine = engine or default_engine()
    if engine == "c":
        if _hotpath is None:
            raise ValueError("engine='c' needs tensormagic's compiled hot path, which was not built "
                             "at install (no C compiler?); use engine='python'")  # fmt: skip
        # it subclasses TrackMode; imported before skip_frames, which marks the code of every
        # tensormagic module loaded so far
        from .compiled_mode import CompiledTrackMode
    frames.skip_frames()  # torch.compile must never compile our own functions as frames
    return CompiledTrackMode(tracker) if engine == "c" else TrackMode(tracker)
