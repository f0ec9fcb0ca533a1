"""The ``nn.Module`` an op runs in, as a dotted path (``model.fc1``), for the block's duration.

Global forward hooks are installed when the first block starts and removed when the last one
ends, so nothing stays installed between cells.  They update the ``ModuleStack`` of the thread
that runs the module, if a block is running in that thread: a module another thread runs never
touches a tracked thread's paths (the tracking mode is per thread too).  A top-level module's name
is only known when the block ends (from the namespace), so paths start with a placeholder
``\\x00<index>`` that the recording replaces by the variable name.

torch.compile: Dynamo traces global hooks when it compiles a module's call, and guards on the
hook tables' keys.  The hooks are module-level functions kept under fixed keys, so every block
installs the same table (a key from ``register_module_forward_hook`` is new each time: each block
would recompile every compiled module); while Dynamo traces they return at once, adding nothing
to the graph.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
import weakref
from typing import Any, Callable

from torch import Tensor
from torch.nn.modules import module as _nn

from .frames import compile_flag as _flag
from .frames import dynamo_compiling as _dynamo_compiling
from .identity import _ids
from .source import local_holding

try:  # built from csrc/ at install where a C compiler is there (mode.py); _push and _pop otherwise
    from . import _hotpath
except ImportError:  # pragma: no cover - exercised where no compiler was available
    _hotpath = None  # type: ignore[assignment]

ROOT_MARK = "\x00"
#: the hook tables' key for tensormagic's hooks (RemovableHandle ids count up from 0)
HOOK_KEY = -0x7E45
_get_ident = threading.get_ident
#: thread id -> the ModuleStacks of the blocks running in that thread (innermost last)
_running: dict[int, list[ModuleStack]] = {}
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # fork copies the lock as it was: held, if another thread was entering or leaving a block
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; registered before api's handler, so it runs first
    os.register_at_fork(after_in_child=_new_lock_in_child)


def _push(running: dict[int, list[ModuleStack]], mod: Any) -> None:
    """The module stacks of this thread's blocks take ``mod`` on top (``_hotpath.module_push`` is
    its compiled twin, what the hooks call where it was built).  A child's path found again is
    looked up here, without ``_path_of``'s call."""
    stacks = running.get(_get_ident())
    if stacks:
        for st in stacks:
            stack = st._stack
            if stack:
                parent, ppath = stack[-1]
                got = st._child_paths.get((id(parent), id(mod)))
                path = got[1] if got is not None and got[0] is ppath else st._path_of(mod)
            else:
                path = st._path_of(mod)
            stack.append((mod, path))
            st.current = path


def _pop(running: dict[int, list[ModuleStack]], mod: Any) -> None:
    """The module stacks of this thread's blocks drop ``mod`` from their top (``_hotpath.module_pop``)."""
    stacks = running.get(_get_ident())
    if stacks:
        for st in stacks:
            stack = st._stack
            if stack and stack[-1][0] is mod:
                stack.pop()
            st.current = stack[-1][1] if stack else None


# the hooks run at every module call of a tracked block, twice: the stacks' work in C where the
# extension was built (~3,000 instructions of bytecode a hook less)
_push_now: Callable[[dict[int, list[ModuleStack]], Any], None] = getattr(_hotpath, "module_push", None) or _push
_pop_now: Callable[[dict[int, list[ModuleStack]], Any], None] = getattr(_hotpath, "module_pop", None) or _pop


def _pre_hook(mod: Any, args: Any) -> None:
    # torch.compiler.is_compiling(), cheaper (frames.py): Dynamo is tracing the module's call, and
    # never reaches the call below (a C function it could not trace)
    if _dynamo_compiling() or _flag._is_compiling_flag:
        return
    _push_now(_running, mod)


def _post_hook(mod: Any, args: Any, out: Any) -> None:
    if _dynamo_compiling() or _flag._is_compiling_flag:
        return
    if out is not None:
        _note_outputs(mod, out)
    _pop_now(_running, mod)


def _note_outputs(mod: Any, out: Any) -> None:
    """The tensors a module returned (itself, or in a tuple, list or dict it returned) are its outputs,
    kept with its path: a tensor made inside a module and not returned by it is its temporary."""
    stacks = _running.get(_get_ident())
    if not stacks:
        return
    bare = isinstance(out, Tensor)
    if bare:
        items: Any = (out,)
    elif isinstance(out, (tuple, list)):
        items = out
    elif isinstance(out, dict):  # transformers' ModelOutput: loss, logits
        items = list(out.values())
    else:
        return
    for t in items:
        ref = _ids.get(id(t)) if isinstance(t, Tensor) else None
        if ref is not None and ref() is t:
            for st in stacks:
                stack = st._stack
                if stack and stack[-1][0] is mod and len(st.outputs) < st.max_outputs:
                    st.outputs.add((ref.tid, stack[-1][1]))
                    if not bare and len(stack) == 1:  # a top-level call's value is the container
                        st.packed.add((ref.tid, stack[-1][1]))


#: torch warns at every call of a ``torch.compile(module)`` while any global hook is installed that
#: the hooks also fire for the wrapper: ours are meant to (the wrapper is the module the user called)
_OPTIMIZED_MODULE_WARNING = ("ignore", re.compile(r"Using `torch\.compile\(module\)` when there are global hooks"),
                             UserWarning, None, 0)  # fmt: skip


def _install() -> None:
    warnings.filters.insert(0, _OPTIMIZED_MODULE_WARNING)  # type: ignore[attr-defined]
    warnings._filters_mutated()  # type: ignore[attr-defined]
    _nn._global_forward_pre_hooks[HOOK_KEY] = _pre_hook
    _nn._global_forward_hooks[HOOK_KEY] = _post_hook
    # always called: the post hook runs on exceptions too, keeping the stack balanced
    _nn._global_forward_hooks_always_called[HOOK_KEY] = True


def _uninstall() -> None:
    for table in (_nn._global_forward_pre_hooks, _nn._global_forward_hooks, _nn._global_forward_hooks_always_called):
        table.pop(HOOK_KEY, None)
    while _OPTIMIZED_MODULE_WARNING in warnings.filters:  # type: ignore[attr-defined]
        warnings.filters.remove(_OPTIMIZED_MODULE_WARNING)  # type: ignore[attr-defined]
    warnings._filters_mutated()  # type: ignore[attr-defined]


#: modules searched below a parent for a called module that is not its child (once per pair and block)
MAX_SEARCH = 10_000


def descendant_path(parent: Any, mod: Any) -> str | None:
    """``h.0``: the attribute path from ``parent`` to ``mod`` (a child's name, or a longer path
    where ``mod`` sits deeper, as a ``ModuleList``'s items do: containers are never called, so no
    hook put them on the stack); breadth first, so the shortest path of a module reachable twice.
    None if not below."""
    level = [("", parent)]
    seen = {id(parent)}
    while level and len(seen) < MAX_SEARCH:
        nxt = []
        for prefix, m in level:
            for n, c in getattr(m, "_modules", {}).items():
                if c is None or id(c) in seen:
                    continue
                path = f"{prefix}{n}"
                if c is mod:
                    return path
                seen.add(id(c))
                nxt.append((path + ".", c))
        level = nxt
    return None


class ModuleStack:
    """Keeps the path of the innermost running module; ``current`` is read on the hot path.
    The module hooks push and pop ``_stack`` and set ``current`` (``_push``, ``_pop``)."""

    # slots: the compiled engine reads ``current`` at its offset, once per recorded op
    __slots__ = ("current", "_stack", "_child_paths", "roots", "_root_paths", "_root_index", "_thread",
                 "outputs", "packed", "max_outputs", "locals", "params", "_root_types")

    def __init__(self, max_outputs: int = 20_000) -> None:
        self.current: str | None = None
        #: (tensor id, path) for each tensor a module returned (bounded: max_events)
        self.outputs: set[tuple[int, str]] = set()
        #: the pairs of ``outputs`` a top-level module returned inside a tuple, list or dict (a subset)
        self.packed: set[tuple[int, str]] = set()
        self.max_outputs = max_outputs
        self._stack: list[tuple[Any, str]] = []
        self._child_paths: dict[tuple[int, int], tuple[str, str]] = {}  # -> (parent's path, path)
        self.roots: list[weakref.ref[Any]] = []
        self._root_paths: list[str] = []
        self._root_types: list[str] = []  # each root's class name: a root gone by the block's end says it
        self._root_index: dict[int, int] = {}
        self._thread: int | None = None
        #: root index -> (the local variable that held it where it was first called, that function's name)
        self.locals: dict[int, tuple[str, str]] = {}
        #: (tensor id or a weak reference to a parameter not met yet, root index, path below the root)
        self.params: list[tuple[Any, int, str]] = []

    def __enter__(self) -> ModuleStack:
        """Follow the module calls of the calling thread."""
        if self._thread is not None:
            return self
        self._thread = tid = _get_ident()
        with _lock:
            if not _running:
                _install()
            _running.setdefault(tid, []).append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        tid, self._thread = self._thread, None
        if tid is not None:
            with _lock:
                stacks = _running.get(tid, [])
                if self in stacks:
                    stacks.remove(self)
                if not stacks:
                    _running.pop(tid, None)
                if not _running:
                    _uninstall()
        self._stack.clear()
        self.current = None

    def _path_of(self, mod: Any) -> str:
        # Runs at every module call: the path strings are made (and interned) once, then looked up.
        if not self._stack:
            idx = self._root_index.get(id(mod))
            if idx is None or self.roots[idx]() is not mod:
                idx = len(self.roots)
                self.roots.append(weakref.ref(mod))
                self._root_paths.append(sys.intern(f"{ROOT_MARK}{idx}"))
                self._root_types.append(type(mod).__name__)
                self._root_index[id(mod)] = idx
                self._note_local(idx, mod)
            return self._root_paths[idx]
        parent, ppath = self._stack[-1]
        key = (id(parent), id(mod))
        got = self._child_paths.get(key)
        if got is not None and got[0] is ppath:
            return got[1]
        name = next((n for n, c in parent._modules.items() if c is mod), None)
        if name is None:  # not a child: a module of a container the parent iterates (self.h[i]), or none
            name = descendant_path(parent, mod) or type(mod).__name__
        path = sys.intern(f"{ppath}.{name}")  # one string per path, not one per call
        self._child_paths[key] = (ppath, path)
        return path

    def _note_local(self, idx: int, mod: Any) -> None:
        """A top-level module first called in this block from a function that holds it in a local
        variable (``model = nn.Sequential(…)`` inside ``train()``) keeps that name and its
        parameters' paths below it: the module may be gone when the block ends, and no namespace
        name reaches it.  Once per top-level module and block; a call from a module's top level
        (a cell's, where the namespace names what it holds) costs a few frame hops."""
        try:
            found = _caller_local(mod)
            if found is None:
                return
            self.locals[idx] = found
            params = self.params
            for path, p in _parameter_paths(mod, MAX_PARAMS - len(params)):
                ref = _ids.get(id(p))
                # a parameter no op met yet gets its id at its first op: looked up at the block's end
                params.append((ref.tid if ref is not None and ref() is p else weakref.ref(p), idx, path))
        except Exception:  # noqa: BLE001 - a user module whose attributes raise is named by its class
            return

    def local_params(self) -> list[tuple[int, int, str]]:
        """(tensor id, root index, path below the root) for the parameters of the modules
        ``_note_local`` kept, that have an id by now."""
        out = []
        for key, idx, path in self.params:
            if type(key) is not int:
                p = key()
                ref = _ids.get(id(p)) if p is not None else None
                if ref is None or ref() is not p:
                    continue
                key = ref.tid
            out.append((key, idx, path))
        return out

    def root_names(self, namer: Any, taken: Any = ()) -> dict[str, str]:
        """Placeholder -> variable name (or class name) for each top-level module seen: the
        namespace's, else the local variable of the function that first called it (as
        ``train.<locals>.model`` where the namespace holds a ``model`` of its own: ``taken``, or
        where locals of that name in two functions held modules)."""
        out: dict[str, str] = {}
        functions: dict[str, set[str]] = {}
        for local, func in self.locals.values():
            functions.setdefault(local, set()).add(func)
        for idx, ref in enumerate(self.roots):
            mod = ref()
            name = namer(mod) if mod is not None else None
            if name is None and idx in self.locals:
                local, func = self.locals[idx]
                name = f"{func}.<locals>.{local}" if local in taken or len(functions[local]) > 1 else local
            if name is None:
                name = type(mod).__name__ if mod is not None else self._root_types[idx]
            out[f"{ROOT_MARK}{idx}"] = name
        return out


_HERE = os.path.dirname(os.path.abspath(__file__)).rsplit(os.sep, 1)[0] + os.sep  # tensormagic/
#: parameters named below the top-level modules a block first calls from a function (bounded)
MAX_PARAMS = 10_000
_TORCH = os.path.dirname(os.path.abspath(_nn.__file__)).rsplit(os.sep, 2)[0] + os.sep  # torch/


def _caller_local(mod: Any) -> tuple[str, str] | None:
    """(the local variable holding ``mod``, its function's name) in the first frame outside
    tensormagic and torch that called it (past the hooks, ``Module.__call__``, and a torch
    function the user's line handed it to: ``checkpoint(model, x)``), or None: a module's top
    level, or no local holds it."""
    f: Any = sys._getframe(1)
    while f is not None and f.f_code.co_filename.startswith((_HERE, _TORCH)):
        f = f.f_back
    return None if f is None else local_holding(f, mod)


def _parameter_paths(root: Any, most: int) -> list[tuple[str, Any]]:
    """``0.weight``: each parameter below ``root`` by the name torch's ``named_parameters()``
    gives it (depth first, each module and parameter once), read from the modules' own dicts:
    no user ``named_parameters`` runs.  At most ``most``."""
    out: list[tuple[str, Any]] = []
    memo: set[int] = set()
    modules: set[int] = set()
    stack: list[tuple[str, Any]] = [("", root)]
    while stack and len(out) < most:
        prefix, m = stack.pop()
        if id(m) in modules:
            continue
        modules.add(id(m))
        for k, p in (getattr(m, "_parameters", None) or {}).items():
            if p is not None and id(p) not in memo:
                memo.add(id(p))
                out.append((prefix + k, p))
        children = [(f"{prefix}{n}.", c) for n, c in (getattr(m, "_modules", None) or {}).items() if c is not None]
        children.reverse()  # popped in order: each module before its children, as torch walks
        stack.extend(children)
    return out[:most]


def resolve_path(path: str | None, roots: dict[str, str]) -> str | None:
    if path is None or not path.startswith(ROOT_MARK):
        return path
    head, _, rest = path.partition(".")
    name = roots.get(head, "module")
    return f"{name}.{rest}" if rest else name
