"""Names for tensors, resolved when a block ends: namespace, module parameters, containers.

Names taken from the assignment on the line that made a tensor are ``bound_names.py``'s."""

from __future__ import annotations

import ast
import functools
from typing import Any, Iterable, Iterator, Mapping

import torch

from . import describe, identity

_SKIP_PREFIXES = ("_",)
_SKIP_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}
MAX_CONTAINER = 64


def _user_names(ns: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for k, v in list(ns.items()):
        if k.startswith(_SKIP_PREFIXES) or k in _SKIP_NAMES:
            continue
        yield k, v


def named_tensors(ns: Mapping[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor reachable by a short expression: ``x``, ``model.fc1.weight``, ``params[0]``,
    ``d["w"]``, and ``x.grad`` for leaves."""
    for name, v in _user_names(ns):
        try:
            found = list(_expand(name, v, depth=0))
        except Exception:  # noqa: BLE001 - a user object whose attributes raise is simply not a tensor
            continue
        yield from found


def _expand(name: str, v: Any, depth: int) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(v, torch.Tensor):
        yield name, v
        if describe.flag(v, "is_leaf"):  # read without a subclass's __torch_function__
            try:
                g = describe.attr(v, "grad")
            except Exception:  # noqa: BLE001 - a gradient that cannot be read is not named
                g = None
            if g is not None:
                yield f"{name}.grad", g
    elif isinstance(v, torch.nn.Module):
        try:
            for pn, p in v.named_parameters():
                yield from _expand(f"{name}.{pn}", p, depth + 1)
            for bn, b in v.named_buffers():
                if b is not None:
                    yield f"{name}.{bn}", b
        except Exception:  # noqa: BLE001 - a user module with a broken named_parameters
            return
    elif depth == 0 and isinstance(v, (list, tuple)) and len(v) <= MAX_CONTAINER:
        for i, x in enumerate(v):
            if isinstance(x, torch.Tensor):
                yield from _expand(f"{name}[{i}]", x, depth + 1)
    elif depth == 0 and isinstance(v, dict) and len(v) <= MAX_CONTAINER:
        for k, x in list(v.items()):
            if isinstance(x, torch.Tensor) and isinstance(k, (str, int)):
                yield from _expand(f"{name}[{k!r}]", x, depth + 1)


def names_by_id(pairs: Iterable[tuple[str, torch.Tensor]]) -> dict[int, list[str]]:
    """Tensor id -> names, from ``named_tensors`` pairs, for tensors the registry knows (it assigns none)."""
    out: dict[int, list[str]] = {}
    for name, t in pairs:
        tid = identity.lookup(t)
        if tid is not None:
            names = out.setdefault(tid, [])
            if name not in names:
                names.append(name)
    return out


def module_name(ns: Mapping[str, Any] | None, mod: Any) -> str | None:
    if ns is None:
        return None
    for name, v in _user_names(ns):
        if v is mod:
            return name
    return None


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def assigned_name(source_line: str | None) -> str | None:
    """``y`` for ``y = x + 2``; None where the line is not a simple single-name assignment."""
    if not source_line:
        return None
    tree = _parse(source_line.strip())
    if tree is None or len(tree.body) != 1:
        return None
    stmt = tree.body[0]
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        tgt = stmt.targets[0]
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        tgt = stmt.target
    else:
        return None
    return tgt.id if isinstance(tgt, ast.Name) else None


def call_name(source_line: str | None) -> str | None:
    """The dotted name of the outermost call on a line (``torch.from_numpy``), if there is one."""
    if not source_line:
        return None
    tree = _parse(source_line.strip())
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            return _dotted(node.func)
    return None


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else node.attr
    return None


def binding_line(source: str | None, name: str, lo: int = 1, hi: int | None = None) -> int | None:
    """The first line in ``[lo, hi]`` of ``source`` that assigns ``name`` (plain names only)."""
    if not source or not name.isidentifier():
        return None
    tree = _parse(source)
    if tree is None:
        return None
    best: int | None = None
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.For, ast.With)):
            continue
        for tgt in targets:
            for sub in ast.walk(tgt):
                if isinstance(sub, ast.Name) and sub.id == name:
                    ln = node.lineno
                    if ln >= lo and (hi is None or ln <= hi) and (best is None or ln < best):
                        best = ln
    return best


def statement_end(source: str, lineno: int) -> int | None:
    """The last line of the compound statement (the ``with`` block) that starts at ``lineno``."""
    tree = _parse(source)
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == lineno and isinstance(node, (ast.With, ast.AsyncWith)):
            return node.end_lineno
    return None
