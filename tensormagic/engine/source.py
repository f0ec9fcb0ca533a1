"""Which frame is the user's: map a torch call to the cell or file line a person wrote.

The names a line binds (``z`` for ``z = y * y``) are ``bound_names.py``'s; this module only finds
the line."""

from __future__ import annotations

import ast
import dis
import functools
import itertools
import linecache
import os
import site
import sys
import sysconfig
from types import CodeType, FrameType
from typing import Any, Callable, Dict, Optional, Tuple

from .compiled import INSIDE_COMPILED, is_disable_wrapper, is_graph_code

#: filename -> (cell number, line offset) for code that belongs to a notebook cell.
Locator = Callable[[str], Optional[Tuple[Optional[int], int]]]
#: per code object: (the code, whether it is the user's (None: a compiled graph's), offset -> (place, offset), line -> place)
_Entry = Tuple[CodeType, bool, Dict[int, Tuple[Tuple[str, int], int]], Dict[int, Tuple[str, int]]]


@functools.lru_cache(maxsize=1)  # realpath on each folder: ~0.6 ms, once per process, not per block
def _library_prefixes() -> tuple[str, ...]:
    import torch

    import tensormagic

    paths = {
        os.path.dirname(torch.__file__),
        os.path.dirname(tensormagic.__file__),
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["platstdlib"],
    }
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - virtualenvs without getsitepackages
        pass
    paths.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    return tuple(sorted(os.path.realpath(p) + os.sep for p in paths if p))


@functools.lru_cache(maxsize=1)
def _between() -> tuple[str, tuple[str, ...]]:
    """The frames that may stand between a line and the op it calls: tensormagic's (its folder),
    and torch's operator wrappers (``Tensor.__rsub__``, ``handle_torch_function``)."""
    import torch

    import tensormagic

    base = os.path.dirname(torch.__file__)
    return os.path.dirname(tensormagic.__file__) + os.sep, (
        os.path.join(base, "_tensor.py"), os.path.join(base, "overrides.py"))  # fmt: skip


def called_directly(where: tuple[str, int] | None, depth: int = 1) -> FrameType | None:
    """The user's frame whose line ``where`` called the op being recorded itself, with only
    tensormagic's frames and torch's operator wrappers between (not a library function or a
    wrapper object the line called: ``dataset[i]``): then the op's inputs are the operands the
    line shows.  None otherwise.  ``depth``: the caller's frames to pass over first."""
    if type(where) is not tuple:  # no line (None), or inside a compiled graph (INSIDE_COMPILED)
        return None
    ours, wrappers = _between()
    f: FrameType | None = sys._getframe(depth + 1)
    while f is not None:
        fn = f.f_code.co_filename
        if not (fn.startswith(ours) or fn in wrappers):
            return f if fn == where[0] and f.f_lineno == where[1] else None
        f = f.f_back
    return None


def local_holding(f: FrameType, t: Any) -> tuple[str, str] | None:
    """(the local variable holding ``t``, its function's name) in function frame ``f``, or None:
    a module's top level (the namespace names what it holds), or no local holds it."""
    if not f.f_code.co_flags & _OPTIMIZED:
        return None
    try:
        for name, v in f.f_locals.items():
            if v is t and isinstance(name, str) and name.isidentifier():
                return name, f.f_code.co_name
    except Exception:  # noqa: BLE001 - a frame whose locals cannot be read names nothing
        return None
    return None


_OPTIMIZED = 0x1  # inspect.CO_OPTIMIZED: a function's frame, with fast locals


#: filename -> whether its code is the user's, kept across blocks: each block has a new LineFinder,
#: and realpath (an lstat per path part) on the ~20 files a training step passes through cost
#: ~0.3 ms per block.  Bounded: cleared when full.
_user_file: dict[str, bool] = {}
_USER_FILE_MAX = 4096


class LineFinder:
    """Finds the innermost frame that belongs to user code; decisions are cached per code object."""

    __slots__ = ("_cache", "_prefixes", "lasti", "on_graph")

    def __init__(self) -> None:
        # Keyed on id(code), not the code: hashing a code object re-hashes its constants every
        # time (~0.5 µs for Module._call_impl, met twice per op inside an nn.Module).  The value
        # holds the code object, so its id cannot be reused while the entry exists.
        self._cache: dict[int, _Entry] = {}
        #: bytecode offset of the last frame found: it falls back when a loop runs the line again
        self.lasti = -1
        self._prefixes = _library_prefixes()
        #: called with a compiled graph's frame that makes a recorded torch call (``compiled.py``);
        #: returns the ``compile_wrapper`` frame it runs under, or None
        self.on_graph: Callable[[FrameType], Any] | None = None

    def _learn(self, code: CodeType, frame: FrameType | None = None) -> _Entry:
        """Whether ``code`` is the user's, cached with its places: bytecode offset -> (the shared
        ``(filename, line)`` of that offset's line, one tuple per line used by every record made
        there; the offset).  Keyed by offset: ``f_lineno`` decodes the line table (~0.1 µs a call).
        ``frame``: a frame running ``code``, for code with no file (what exec'd it)."""
        fn = code.co_filename
        real = None
        if fn.startswith("<"):
            # <ipython-input-…> cells and exec'd strings are the user's; <frozen …> is Python's; a
            # string a library exec'd (inductor's op handlers, <string>:410) is the library's code
            ok: bool | None = not fn.startswith("<frozen") and not self._exec_by_library(frame)
        else:
            ok = self._user_path(fn)
        if ok and is_graph_code(code, real) or ok is False and is_disable_wrapper(code):
            # a compiled graph's code, or the wrapper a compiled call runs its graphs through:
            # ``find`` decides per call (both engines ask it)
            ok = None
        ent = self._cache[id(code)] = (code, ok, {}, {})
        return ent

    def _user_path(self, fn: str) -> bool:
        known = _user_file.get(fn)
        if known is None:
            if len(_user_file) >= _USER_FILE_MAX:
                _user_file.clear()
            known = _user_file[fn] = not os.path.realpath(fn).startswith(self._prefixes)
        return known

    def _exec_by_library(self, frame: FrameType | None) -> bool:
        """Whether file-less code running in ``frame`` is a library's: its globals are a library
        module's namespace, or a bare dict (no ``__name__``, as inductor's ``exec(code, {})``) and
        library code called it.  Code the user exec'd runs in a namespace of the user's (a shell's
        ``__main__``, which need not be ``sys.modules["__main__"]``) or is called by the user."""
        if frame is None:
            return False
        try:
            g = frame.f_globals
            name = g.get("__name__")
            if isinstance(name, str):
                mod = sys.modules.get(name)
                path = getattr(mod, "__file__", None)
                return getattr(mod, "__dict__", None) is g and isinstance(path, str) and not self._user_path(path)
            back = frame.f_back
            if back is None:
                return False
            fn = back.f_code.co_filename
            return fn.startswith("<frozen") if fn.startswith("<") else not self._user_path(fn)
        except Exception:  # noqa: BLE001 - odd globals (a dict subclass that raises): the user's, as before
            return False

    def find(self, frame: FrameType | None) -> tuple[str, int] | None:
        cache = self._cache
        while frame is not None:
            code = frame.f_code
            ent = cache.get(id(code))
            if ent is None:
                ent = self._learn(code, frame)
            ok = ent[1]
            if ok is None:
                # a compiled graph's torch call is part of the compiled call's one event; an FX
                # module run without torch.compile keeps its lines
                if self.on_graph is not None and self.on_graph(frame) is not None:
                    return INSIDE_COMPILED
                if is_disable_wrapper(code):  # a disabled function run outside compiled code
                    frame = frame.f_back
                    continue
                ok = True
            if ok:
                lasti = frame.f_lasti
                hit = ent[2].get(lasti)
                if hit is None:
                    line = frame.f_lineno
                    where = ent[3].get(line)
                    if where is None:
                        where = ent[3][line] = (code.co_filename, line)
                    # the offset's int is kept too: records then share it (a new int past 256)
                    hit = ent[2][lasti] = (where, lasti)
                self.lasti = hit[1]
                return hit[0]
            frame = frame.f_back
        return None

    def places(self) -> list[tuple[str, int]]:
        """Every ``(filename, line)`` ``find`` has returned."""
        return [where for ent in self._cache.values() for where in ent[3].values()]

    def expression(self, where: tuple[str, int], lasti: int) -> str | None:
        """The source text of the expression the user's code was evaluating at bytecode offset
        ``lasti`` of line ``where`` (``pred.argmax(1) == yb``), or None where it cannot be said
        (Python 3.10 has no column positions; an offset this finder never returned)."""
        code = self._code_at(where, lasti)
        return _expression_at(code, lasti) if code is not None else None

    def at_outer_call(self, where: tuple[str, int], lasti: int) -> bool | None:
        """Whether bytecode offset ``lasti`` of line ``where`` is the line's last call (the
        function the line calls, which runs after its arguments are made), from the bytecode:
        Python 3.10 has no column positions to name the expression.  None where it cannot be said."""
        code = self._code_at(where, lasti)
        return _is_last_call(code, lasti) if code is not None else None

    def _code_at(self, where: tuple[str, int], lasti: int) -> CodeType | None:
        """The user's code whose bytecode offset ``lasti`` this finder placed at line ``where``."""
        for code, ok, offsets, _lines in self._cache.values():
            hit = offsets.get(lasti) if ok else None
            if hit is not None and hit[0] == where:
                return code
        return None


_CALLS = frozenset(("CALL_FUNCTION", "CALL_FUNCTION_KW", "CALL_FUNCTION_EX", "CALL_METHOD"))  # Python 3.10


def _is_last_call(code: CodeType, lasti: int) -> bool | None:
    """Whether ``lasti`` is the last call instruction of the stretch of one line's bytecode that
    holds it (an operator's offset, ``*`` or ``[]``, is not); None if it is not in ``code``."""
    if hasattr(code, "co_positions"):  # 3.11+: the expression at the offset says it (and starts_line changed)
        return None
    stretch: list[Any] = []
    found = False
    line = None
    for ins in dis.get_instructions(code):
        if ins.starts_line is not None and ins.starts_line != line:
            if found:
                break
            stretch, line = [], ins.starts_line
        stretch.append(ins)
        found = found or ins.offset == lasti
    if not found:
        return None
    calls = [ins.offset for ins in stretch if ins.opname in _CALLS]
    return bool(calls) and lasti == calls[-1]


def _expression_at(code: CodeType, lasti: int) -> str | None:
    positions = getattr(code, "co_positions", None)
    if positions is None or lasti < 0:
        return None
    if lasti < len(code.co_code) and code.co_code[lasti] == _FOR_ITER:
        # a ``for`` fetching its next item: its position spans the whole statement (3.11), or
        # the iterable (3.12+); what is being evaluated is ``next()`` of the iterable
        it = _iterable_at(code, lasti)
        return f"next({it})" if it else None
    # one entry per 2-byte code unit
    return _expression_text(code.co_filename, next(itertools.islice(positions(), lasti // 2, None), None))


_FOR_ITER = dis.opmap["FOR_ITER"]


def _iterable_at(code: CodeType, lasti: int) -> str | None:
    """The iterable of the ``for`` whose ``FOR_ITER`` is at ``lasti``: the expression evaluated
    just before its ``GET_ITER`` (a comprehension of 3.10-3.11, handed an iterator, has none)."""
    before: list[Any] = [None, None]
    for ins in dis.get_instructions(code):
        if ins.offset == lasti:
            break
        before = [before[1], ins]
    else:
        return None
    if before[1] is None or before[1].opname != "GET_ITER":
        return None
    for ins in before:
        text = _expression_text(code.co_filename, ins.positions) if ins is not None else None
        if text:
            return text
    return None


def _expression_text(filename: str, pos: Any) -> str | None:
    """The source between a bytecode position's columns, if it is one expression (a statement's
    position, such as ``for … in …:`` spanning its body, names nothing)."""
    if pos is None:
        return None
    line, end, col, end_col = pos
    if line is None or end is None or col is None or end_col is None:
        return None
    # columns count UTF-8 bytes
    rows = [linecache.getline(filename, n).encode() for n in range(line, end + 1)]
    if not all(rows):
        return None
    if line == end:
        text = rows[0][col:end_col].decode(errors="replace")
    else:
        parts = [rows[0][col:], *rows[1:-1], rows[-1][:end_col]]
        text = " ".join(p.decode(errors="replace").strip() for p in parts)
    text = " ".join(text.split())
    if not text:
        return None
    try:
        ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    return text


def source_line(filename: str, lineno: int) -> str | None:
    text = linecache.getline(filename, lineno)
    return text.rstrip("\n") if text else None


def source_text(filename: str) -> str | None:
    lines = linecache.getlines(filename)
    return "".join(lines) if lines else None


def cell_locator(shell: Any, number: int | None = None, offset: int = 0) -> Locator:
    """Map code filenames to IPython cells (execution counts) through the shell's compiler;
    cell ``number``'s own lines are shifted by ``offset`` (1 under ``%%trackgrad``)."""
    fmap = shell.compile._filename_map

    def locate(filename: str) -> tuple[int | None, int] | None:
        n = fmap.get(filename)
        if n is None:
            return None
        return (n, offset) if n == number else (n, 0)

    return locate


def ipython_locator() -> Locator | None:
    """The running IPython's cell locator, if IPython is running (never imports it)."""
    if "IPython" not in sys.modules:
        return None
    ip = sys.modules["IPython"].get_ipython()
    if getattr(getattr(ip, "compile", None), "_filename_map", None) is None:
        return None
    return cell_locator(ip)
