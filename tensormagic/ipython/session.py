"""Running IPython cells under tracking: one cell (``%%trackgrad``) or every cell (``%trackgrad on``).

Plain Python over an ``InteractiveShell``: the magics parse arguments and call this; tests and
scripts can call it directly.
"""

from __future__ import annotations

import ast
import inspect
import sys
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable

from IPython.core.error import UsageError

from ..api import TrackingWarning, track
from ..engine.source import cell_locator
from ..model.recording import Recording
from .display import diagnostics_shown_once, shows_diagnostics


@dataclass(frozen=True)
class Options:
    """What to record and how to show it; the magics fill it from traits and flags."""

    stats: bool = False
    quiet: bool = False
    max_events: int = 20_000
    display: str = "auto"
    log_path: str | None = None
    diagnostics: Any = "all"

    def with_flags(self, **flags: Any) -> Options:
        return replace(self, **{k: v for k, v in flags.items() if v is not None})


def _make_track(shell: Any, opts: Options, *, number: int, offset: int, source: str,
                filename: str | None, cell_id: str | None) -> track:  # fmt: skip
    return track(stats=opts.stats, max_events=opts.max_events, log=opts.log_path,
                 diagnostics=opts.diagnostics, namespace=shell.user_ns,
                 locator=cell_locator(shell, number, offset),
                 block=(filename, 1, None) if filename else None, cell=number, cell_id=cell_id,
                 source=source, history=True)  # fmt: skip


def run_tracked_cell(shell: Any, body: str, opts: Options, *, full_source: str | None = None,
                     cell_id: str | None = None,
                     on_done: Callable[[Recording], None] | None = None) -> Any:  # fmt: skip
    """Run ``body`` as the current cell's code under ``track()``; return the last expression's value.

    The body is transformed, compiled and cached like a real cell (tracebacks and the report quote
    its lines); line numbers count the ``%%trackgrad`` line as line 1.  The user's exception
    propagates unchanged; ``on_done`` receives the recording even then.
    """
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
    number = running_cell_number(shell)
    if number is None:  # called from Python, not from a cell: the number the next cell gets
        number = shell.execution_count
    transformed = shell.transform_cell(body)
    filename = shell.compile.cache(transformed, number, raw_code=body)
    tree = shell.compile.ast_parse(transformed, filename=filename)
    tree = shell.transform_ast(tree)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec_code, eval_code = _compile(shell, tree, last, filename)
    run = _runner(shell, exec_code, eval_code)
    t = _make_track(shell, opts, number=number, offset=1, source=full_source or body,
                    filename=filename, cell_id=cell_id)  # fmt: skip
    rec: Recording | None = None
    shown = on_done is not None and shows_diagnostics(opts.display, shell, summary=False, quiet=opts.quiet)
    with diagnostics_shown_once(t.recording, shown):
        try:
            with t as rec:
                run(eval(exec_code, shell.user_global_ns, shell.user_ns))
                value = run(eval(eval_code, shell.user_global_ns, shell.user_ns)) if eval_code else None
        finally:
            if rec is not None and on_done is not None:
                on_done(rec)
    return value


def _compile(shell: Any, tree: ast.Module, last: ast.Expression | None, filename: str) -> tuple[Any, Any]:
    """The body's and the last expression's code, with top-level ``await`` allowed where IPython
    allows it (autoawait on: the same flag its own ``run_ast_nodes`` compiles cells with)."""
    flags = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0) if getattr(shell, "autoawait", False) else 0
    extra = getattr(shell.compile, "extra_flags", None)
    with extra(flags) if extra is not None else nullcontext():
        exec_code = shell.compile(tree, filename, "exec")
        eval_code = shell.compile(last, filename, "eval") if last is not None else None
    return exec_code, eval_code


def _is_async(code: Any) -> bool:
    return code is not None and bool(code.co_flags & inspect.CO_COROUTINE)


def _runner(shell: Any, exec_code: Any, eval_code: Any) -> Callable[[Any], Any]:
    """What finishes running a code object's ``eval`` result: nothing for plain code; for a cell
    with top-level ``await`` (a coroutine), the shell's ``loop_runner``, as IPython runs such a cell.

    Where an event loop already runs in this thread (a Jupyter kernel runs the magic inside its
    loop) the coroutine cannot be driven from the magic: a one-line ``UsageError`` before any of
    the cell runs; ``%trackgrad on`` records such cells, since IPython itself awaits them."""
    if not (_is_async(exec_code) or _is_async(eval_code)):
        return lambda result: result
    import asyncio  # only here: loading the extension does not import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("%%trackgrad cannot run a cell with top-level 'await' inside the kernel's event loop: "
                         "use '%trackgrad on' before the cell (and '%trackgrad off' after)")  # fmt: skip
    loop_runner = shell.loop_runner

    def run(result: Any) -> Any:
        return loop_runner(result) if inspect.iscoroutine(result) else result

    return run


class AutoTracker:
    """``%trackgrad on``: tracks every following cell through pre/post_run_cell callbacks."""

    def __init__(self, shell: Any, opts: Options, on_done: Callable[[Recording], None],
                 make_track: Callable[..., track] | None = None) -> None:  # fmt: skip
        self.shell = shell
        self.opts = opts
        self.on_done = on_done
        self._make_track = make_track or _make_track
        self._current: track | None = None
        self._rec: Recording | None = None
        self._count_before: int | None = None
        self._nested = 0  # run_cell calls made by the tracked cell, still open
        self.active = False

    def start(self) -> None:
        if self.active:
            return
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        self.active = True

    def stop(self) -> None:
        """Unregister the callbacks and close a cell left open (the cell running ``%trackgrad off``)."""
        for name, cb in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            try:
                self.shell.events.unregister(name, cb)
            except ValueError:
                pass  # already gone
        self.active = False
        self._finish(None)

    @staticmethod
    def _skips(raw: str) -> bool:
        # a %%trackgrad cell records itself once with its own options; %trackgrad off ends tracking
        head = raw.lstrip()
        return head.startswith(("%%trackgrad", "%trackgrad")) or not head

    def pre_run_cell(self, info: Any) -> None:
        try:
            raw = getattr(info, "raw_cell", "") or ""
            if self._current is not None:
                if running_cell_number(self.shell) is not None:
                    # run_cell called by the tracked cell (%%capture, a helper): its code runs inside
                    # the open recording, which already sees it; it gets no recording of its own
                    self._nested += 1
                    return
                self._finish(None)  # a cell that never reached post_run_cell
            if self._skips(raw):
                return
            # The cell's In[N] is not known yet: IPython >= 9.8 has already counted it here when
            # it stores history, earlier releases count it after the cell.  The count now is the
            # cell's own where history is not stored (nothing moves it then); _finish corrects it
            # from the result otherwise.
            self._count_before = self.shell.execution_count
            t = self._make_track(self.shell, self.opts, number=self._count_before, offset=0, source=raw,
                                 filename=None, cell_id=getattr(info, "cell_id", None))  # fmt: skip
            self._rec = t.__enter__()
            self._current = t
        except Exception as e:  # noqa: BLE001 - a raising callback would print on every cell
            self._fail(e)

    def post_run_cell(self, result: Any) -> None:
        try:
            if self._nested:
                self._nested -= 1
                return
            if self._current is None:
                return
            self._finish(result)
        except Exception as e:  # noqa: BLE001 - a raising callback would print on every cell
            self._fail(e)

    def _number(self, result: Any) -> int | None:
        """The cell's In[N], as IPython numbers it in tracebacks ("Cell In[N]")."""
        if result is not None:
            n = getattr(result, "execution_count", None)
            if isinstance(n, int):
                return n
            # IPython 8 leaves it None where history is not stored; the count did not move then
            return self._count_before
        return running_cell_number(self.shell)  # %trackgrad off inside the tracked cell

    def _finish(self, result: Any) -> None:
        t, rec = self._current, self._rec
        self._current = self._rec = None
        self._nested = 0
        if t is None or rec is None:
            return
        rec.cell = self._number(result)
        t.block = _cell_block(self.shell, rec.cell)
        err = None
        if result is not None:
            err = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        shown = result is not None and shows_diagnostics(self.opts.display, self.shell, summary=True,
                                                         quiet=self.opts.quiet)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TrackingWarning)  # reported by _fail below, once
            with diagnostics_shown_once(rec, shown):
                t.__exit__(type(err) if err else None, err, getattr(err, "__traceback__", None))
        if result is not None:
            self.on_done(rec)
        if rec.internal_error is not None:
            self._fail(RuntimeError(rec.internal_error))

    def _fail(self, e: BaseException) -> None:
        """Report an internal failure once and switch tracking off, leaving no mode behind."""
        try:
            self.stop()
        finally:
            warnings.warn(f"tensormagic: tracking switched off after an internal error: {type(e).__name__}: {e}",
                          TrackingWarning, stacklevel=1)  # fmt: skip


def _cell_block(shell: Any, number: int | None) -> tuple[str, int, None] | None:
    """The filename IPython compiled cell ``number`` under (its linecache entry), if any."""
    if number is None:
        return None
    names = [fn for fn, n in shell.compile._filename_map.items() if n == number]
    return (names[-1], 1, None) if names else None


def running_cell_number(shell: Any) -> int | None:
    """The In[N] of the cell whose code is running now, or None outside a cell.

    It is the number IPython's compiler filed the cell's code under, the one its tracebacks print
    as "Cell In[N]": read from the innermost cell's top-level frame (a function defined in an
    earlier cell and called from this one is skipped by its name).  ``shell.execution_count`` is
    not it: inside a cell it is N on IPython < 9.8 and N + 1 from 9.8 on, where history is stored.
    """
    fmap = getattr(getattr(shell, "compile", None), "_filename_map", None)
    if not fmap:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>":
            n = fmap.get(code.co_filename)
            if isinstance(n, int):
                return n
        frame = frame.f_back
    return None
