"""The ``nn.Module`` an op runs in, as a dotted path (``model.fc1``), for the block's duration.

Global forward hooks are registered when a block starts and removed when it ends, so nothing
stays installed between cells.  A top-level module's name is only known when the block ends
(from the namespace), so paths start with a placeholder ``\\x00<index>`` that the recording
replaces by the variable name.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

ROOT_MARK = "\x00"


class ModuleStack:
    """Keeps the path of the innermost running module; ``current`` is read on the hot path."""

    # slots: the compiled engine reads ``current`` at its offset, once per recorded op
    __slots__ = ("current", "_stack", "_child_paths", "roots", "_root_paths", "_root_index", "_handles")

    def __init__(self) -> None:
        self.current: str | None = None
        self._stack: list[tuple[Any, str]] = []
        self._child_paths: dict[tuple[int, int], tuple[str, str]] = {}  # -> (parent's path, path)
        self.roots: list[weakref.ref[Any]] = []
        self._root_paths: list[str] = []
        self._root_index: dict[int, int] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> ModuleStack:
        from torch.nn.modules import module as m

        self._handles = [
            m.register_module_forward_pre_hook(self._pre),
            m.register_module_forward_hook(self._post, always_call=True),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
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
                self._root_index[id(mod)] = idx
            return self._root_paths[idx]
        parent, ppath = self._stack[-1]
        key = (id(parent), id(mod))
        got = self._child_paths.get(key)
        if got is not None and got[0] is ppath:
            return got[1]
        name = next((n for n, c in parent._modules.items() if c is mod), None)
        if name is None:  # called from the parent's forward without being its child
            name = type(mod).__name__
        path = sys.intern(f"{ppath}.{name}")  # one string per path, not one per call
        self._child_paths[key] = (ppath, path)
        return path

    def _pre(self, mod: Any, args: Any) -> None:
        path = self._path_of(mod)
        self._stack.append((mod, path))
        self.current = path

    def _post(self, mod: Any, args: Any, out: Any) -> None:
        # always_call=True runs this on exceptions too, keeping the stack balanced
        if self._stack and self._stack[-1][0] is mod:
            self._stack.pop()
        self.current = self._stack[-1][1] if self._stack else None

    def root_names(self, namer: Any) -> dict[str, str]:
        """Placeholder -> variable name (or class name) for each top-level module seen."""
        out: dict[str, str] = {}
        for idx, ref in enumerate(self.roots):
            mod = ref()
            name = namer(mod) if mod is not None else None
            if name is None:
                name = type(mod).__name__ if mod is not None else "module"
            out[f"{ROOT_MARK}{idx}"] = name
        return out


def resolve_path(path: str | None, roots: dict[str, str]) -> str | None:
    if path is None or not path.startswith(ROOT_MARK):
        return path
    head, _, rest = path.partition(".")
    name = roots.get(head, "module")
    return f"{name}.{rest}" if rest else name
