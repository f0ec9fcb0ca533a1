"""``track()``: the plain Python API that scripts, tests and the magics all use."""

from __future__ import annotations

import inspect
import os
import sys
import time
import warnings
from types import TracebackType
from typing import Any, Mapping

import torch

from .engine import identity, naming, warnsite
from .engine.mode import TrackMode, check_engine, default_engine, make_mode
from .engine.source import Locator, ipython_locator
from .engine.tracker import Tracker
from .model.recording import Recording

_last: list[Recording] = []
#: the track() blocks running now, in this process (any thread): a forked child stops them
_running: list[track] = []


def last_recording() -> Recording | None:
    """The most recent finished recording in this process (from ``track()`` or a magic)."""
    return _last[-1] if _last else None


class TrackingWarning(UserWarning):
    """tensormagic could not record something; the user's code ran unchanged."""


def _events_failed(rec: Recording, e: Exception) -> None:
    """A report's events could not be made when first read (in the reader's code: ``rec.to_text()``,
    a display): the report says the recording is incomplete, and a warning says why, once."""
    if rec.internal_error is None:
        rec.internal_error = f"{type(e).__name__}: {e}"
    warnings.warn(_inert(f"tensormagic could not build the report's events: {type(e).__name__}: {e}"),
                  TrackingWarning, stacklevel=4)  # fmt: skip


#: the most ``max_events`` takes (the compiled engine counts in a C ``Py_ssize_t``)
MAX_EVENTS = sys.maxsize


def check_max_events(value: Any) -> int:
    """``value`` as a whole number from 1 to ``MAX_EVENTS``, or a one-line ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EVENTS:
        raise ValueError(f"max_events must be a positive number (a whole number from 1 to {MAX_EVENTS}), "
                         f"got {value!r}")  # fmt: skip
    return int(value)


class track:
    """Record what the torch code in a ``with`` block does; yields a :class:`Recording`.

    ``stats=True`` computes value statistics of every output during the block (costs more and
    synchronises a GPU); by default statistics are computed later, on demand.  ``max_events``
    bounds memory: past it, repeats of a (line, op, kind) are folded into counts.  ``log`` is a
    path to append the recording to (JSON Lines).  The keyword-only arguments are the seams the
    IPython layer uses: the namespace names are resolved from, how filenames map to cells, and
    the block's own source file and line range.  ``engine`` picks the hot path: "c" (compiled at
    install, the default where it was built) or "python" (the same records, slower; also chosen by
    the environment variable ``TENSORMAGIC_ENGINE=python``).  ``history=True`` (the magics' choice)
    adds what the block did to each tensor still alive at its end to that tensor's history across
    blocks, which ``tensor_info`` shows (bounded: see ``engine/history.py``).
    """

    def __init__(self, stats: bool = False, max_events: int = 20_000, log: Any = None,
                 diagnostics: Any = "all", *, namespace: Mapping[str, Any] | None = None,
                 locator: Locator | None = None, block: tuple[str, int, int | None] | None = None,
                 cell: int | None = None, cell_id: str | None = None,
                 source: str | None = None, engine: str | None = None, history: bool = False) -> None:  # fmt: skip
        self.stats = bool(stats)
        self.max_events = check_max_events(max_events)
        check_engine(engine)  # before the block: a bad name must not cost the user's cell
        self.engine = engine
        self.history = bool(history)
        self.log = log
        self.diagnostics = diagnostics
        from .diagnostics import select as select_diagnostics

        self._diagnostics = select_diagnostics(diagnostics)  # an unknown id fails here, before the block
        self._checks: Any = None
        self.namespace = namespace
        self.locator = locator
        self.block = block
        self.recording = Recording(cell=cell, cell_id=cell_id, source=source, stats_enabled=self.stats)
        self._frame: Any = None
        self._mode: TrackMode | None = None
        self._tracker: Tracker | None = None
        self._t0 = 0.0
        self._log_writer: Any = None
        self._compiled = False

    def __enter__(self) -> Recording:
        if self._mode is not None:
            raise RuntimeError("this track() is recording a block already: each with-block needs a track() "
                               "of its own (a new track() inside a block records its own events)")  # fmt: skip
        if self.recording.finished:
            raise RuntimeError("this track() has recorded its block already and keeps that recording: "
                               "make a new track() for another block")  # fmt: skip
        caller = sys._getframe(1)
        if self.namespace is None:
            self._frame = caller  # names are read from the caller's variables when the block ends
        if self.locator is None:
            self.locator = ipython_locator()
        if self.block is None:
            self.block = (caller.f_code.co_filename, caller.f_lineno, None)
        if self.log is not None:  # checked now, so a bad path warns once, before the block runs
            from .log.writer import start_logging

            self._log_writer = start_logging(self.log, site=self._warn_site())
        if self.recording.cell is None and self.recording.file is None and self.block is not None:
            self.recording.file = self.block[0]
        # event times count from the Tracker's creation: take the wall-clock start just before it
        self.recording.started = time.time()
        tr = self._tracker = Tracker(stats=self.stats, max_events=self.max_events)
        tr.keep_history = self.history
        self._compiled = (self.engine or default_engine()) == "c"  # the checks and the build follow the engine
        modules_on = False
        try:
            if self._diagnostics.ids:
                from .diagnostics import install

                self._checks = install(tr, self._diagnostics, compiled=self._compiled)
            for _name, t in naming.named_tensors(self._namespace()):
                tr.mark_preexisting(t)
            self._t0 = time.perf_counter()
            tr.modules.__enter__()
            modules_on = True
            mode = make_mode(tr, self.engine)
            warnsite.acquire()  # torch's warnings inside the mode's calls point at the user's line
            try:
                mode.__enter__()
            except BaseException:
                warnsite.release()
                raise
            self._mode = mode
        except BaseException:
            # a block that fails to start leaves nothing installed: no module hooks, no checks
            if modules_on:
                tr.modules.__exit__(None, None, None)
            checks, self._checks = self._checks, None
            if checks is not None:
                tr.finish()
                checks.close()
            self._tracker = None
            self._log_writer = None
            raise
        _running.append(self)
        return self.recording

    def _warn_site(self) -> tuple[str, int] | None:
        """Where a magic's cell warns about its log: ``<cell N>``, line 1 (the magic's line), as the
        diagnostics place theirs; None from Python, where the warning points at the caller."""
        cell = self.recording.cell
        return (f"<cell {cell}>", 1) if cell is not None else None

    def _namespace(self) -> Mapping[str, Any]:
        if self.namespace is not None:
            return self.namespace
        return {} if self._frame is None else frame_namespace(self._frame)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:  # fmt: skip
        assert self._tracker is not None and self._mode is not None
        tr, mode = self._tracker, self._mode
        if self in _running:
            _running.remove(self)
        try:
            _remove_mode(mode)
        finally:
            mode.close()
            warnsite.release()
            tr.modules.__exit__(None, None, None)
        rec = self.recording
        rec.duration_s = time.perf_counter() - self._t0
        if exc is not None:
            rec.failed = True
            rec.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        namespace = self._namespace()
        try:
            from .engine.build import build

            build(tr, rec, namespace=namespace, locator=self.locator, block=self.block,
                  compiled=self._compiled)
            pending = rec.__dict__.get("_pending")
            if pending is not None:
                pending.on_error = _events_failed
        except Exception as e:  # noqa: BLE001 - a report failure must not replace the user's result
            rec.internal_error = f"{type(e).__name__}: {e}"
            warnings.warn(_inert(f"tensormagic could not finish the recording: {rec.internal_error}"),
                          TrackingWarning, stacklevel=2)  # fmt: skip
        if tr.internal_error is not None and rec.internal_error is None:
            e = tr.internal_error
            rec.internal_error = f"{type(e).__name__}: {e}"
            warnings.warn(_inert(f"tensormagic stopped recording part-way: {rec.internal_error}"),
                          TrackingWarning, stacklevel=2)  # fmt: skip
        checks, self._checks = self._checks, None
        if checks is not None:
            try:
                rec.diagnostics = checks.finish(rec, namespace=namespace, locator=self.locator)
            except Exception as e:  # noqa: BLE001 - a failed check must not replace the user's result
                warnings.warn(_inert(f"tensormagic could not finish its diagnostics: {type(e).__name__}: {e}"),
                              TrackingWarning, stacklevel=2)  # fmt: skip
        # the checks hold the tracker and its hooks hold the checks: break that cycle, so a
        # recording and its raw records are freed by reference counting, not a full collection
        tr.finish()
        if checks is not None:
            checks.close()
        rec.finished = True
        self._frame = None
        self._mode = None
        self._tracker = None
        identity.prune(compiled=self._compiled)
        _last[:] = [rec]
        if self._log_writer is not None:
            from .log.writer import log_recording

            log_recording(self._log_writer, rec, site=self._warn_site())
            self._log_writer = None
        if rec.diagnostics:
            from .diagnostics import emit

            emit(rec.diagnostics, failed=exc is not None)
        return False  # never swallow the user's exception


def _inert(text: str) -> str:
    """A warning's text with control and bidi characters escaped (it prints on a terminal)."""
    from .views.inert import inert_line

    return inert_line(text)


def frame_namespace(frame: Any) -> dict[str, Any]:
    """Globals and locals visible in ``frame``, without keeping its tensors alive."""
    ns = dict(frame.f_globals)
    loc = frame.f_locals
    if loc is frame.f_globals:
        return ns
    ns.update(loc)
    if (sys.version_info < (3, 13) and frame.f_code.co_flags & inspect.CO_OPTIMIZED
            and sys.getrefcount(loc) <= _SNAPSHOT_REFS):  # fmt: skip
        # Before PEP 667, f_locals of a function frame is a snapshot dict cached on the frame:
        # left as is, it would keep ``x`` alive after the user's ``del x``.  It is re-filled
        # from the real locals on every later access (and before every trace callback), so
        # dropping our copies of tensors changes nothing the user's code can see -- unless
        # someone holds that dict: ``locals()`` returns this same dict (``ns = locals()`` kept
        # across the block, a debugger's ``curframe_locals``), and deleting from it would take
        # the user's names away.  Then it holds what ``locals()`` would give now.  Only a
        # function frame has such a snapshot: a class body's or exec()'s f_locals is the
        # user's real namespace, where deleting would delete their variables.
        for k in [k for k, v in loc.items() if isinstance(v, torch.Tensor)]:
            del loc[k]
    return ns


#: references to a function frame's f_locals snapshot when nobody else holds it: the frame,
#: ``frame_namespace``'s ``loc`` and ``sys.getrefcount``'s argument
_SNAPSHOT_REFS = 3


def _inert_in_forked_child() -> None:
    """In a process forked while blocks were recording (a DataLoader worker): fork copied the
    forking thread's tracking modes and the process-wide module hooks.  The child's records
    could never reach the parent: take the modes off the stack and the hooks out, so that the
    child's torch calls cost nothing and record nothing."""
    blocks, _running[:] = list(_running), []
    for t in blocks:
        try:
            if t._mode is not None:
                t._mode.make_inert()
                _remove_mode(t._mode)
            if t._tracker is not None:
                t._tracker.modules.__exit__(None, None, None)
            warnsite.release()  # the child's blocks never end: their warning redirect goes now
        except Exception:  # noqa: BLE001 - the child's own work must go on
            pass


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_inert_in_forked_child)


def _remove_mode(mode: TrackMode) -> None:
    """Pop our mode even if user code left another mode (``torch.device``) open above it."""
    from torch.overrides import _get_function_stack_at, _len_torch_function_stack

    n = _len_torch_function_stack()
    stack = [_get_function_stack_at(i) for i in range(n)]
    if mode not in stack:
        return
    above: list[Any] = []
    while stack and stack[-1] is not mode:
        above.append(torch._C._pop_torch_function_stack())
        stack.pop()
    mode.__exit__(None, None, None)
    for m in reversed(above):
        torch._C._push_on_torch_function_stack(m)
