"""Names for tensors, resolved when a block ends: namespace, module parameters, containers.

Names taken from the assignment on the line that made a tensor are ``bound_names.py``'s, from
what ``statements.py`` reads of that line."""

from __future__ import annotations

import types
from typing import Any, Iterable, Iterator, Mapping

import torch

from . import describe, identity

try:
    from . import _hotpath
except ImportError:  # built without a C compiler: the Python filter below
    _hotpath = None  # type: ignore[assignment]
from .modules import descendant_path

_SKIP_PREFIXES = ("_",)  # csrc/blockend.c's user_names skips the same one prefix
_SKIP_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}
MAX_CONTAINER = 64
_DATA_TYPES = (torch.utils.data.DataLoader, torch.utils.data.Dataset)
_PLAIN = describe.PLAIN
_is_leaf, _grad = describe.getter("is_leaf"), describe.getter("grad")


def _user_names(ns: Mapping[str, Any]) -> list[tuple[str, Any]]:
    # a shell's namespace holds mostly ``_i12``, ``_12``… (one per cell run): read three times a
    # tracked cell, so in C where it was built (csrc/blockend.c's user_names, the same filter)
    items = list(ns.items())
    if _hotpath is not None:
        got = _hotpath.user_names(items, _SKIP_NAMES)
        if got is not None:  # None: a key that is not a str, for which startswith decides below
            return got  # type: ignore[no-any-return]
    return [(k, v) for k, v in items if not (k.startswith(_SKIP_PREFIXES) or k in _SKIP_NAMES)]


def named_tensors(ns: Mapping[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor reachable by a short expression: ``x``, ``model.fc1.weight``, ``params[0]``,
    ``d["w"]``, and ``x.grad`` for leaves."""
    optimizers, datasets = [], []
    label: dict[int, str] = {}  # id(tensor) -> its first name: an optimizer's state is named by its parameter
    tensor, module, optimizer = torch.Tensor, torch.nn.Module, torch.optim.Optimizer
    for name, v in _user_names(ns):
        found: list[tuple[str, torch.Tensor]] = []
        plain = _PLAIN_FIRST and type(v) in _PLAIN  # a plain tensor is no optimizer, loader or dataset
        if not plain:
            if _PLAIN_FIRST and type(v) in _HOLDS_NONE:  # ``torch``, ``F``, ``step``: no test below names any
                continue
            if isinstance(v, optimizer):
                optimizers.append((name, v))
                continue
            if isinstance(v, _DATA):  # after every shorter name: ``X`` before ``loader.dataset.tensors[0]``
                datasets.append((name, v))
                continue
        try:
            if plain or isinstance(v, tensor):  # _expand's common cases, without a generator each
                _add_tensor(found, name, v)
            elif isinstance(v, module):
                _add_module(found, name, v)
            else:
                found = list(_expand(name, v, depth=0))
        except Exception:  # noqa: BLE001 - a user object whose attributes raise is simply not a tensor
            continue
        for n, t in found:
            label.setdefault(id(t), n)
        yield from found
    for name, data in datasets:
        try:
            yield from list(_dataset(name, data))
        except Exception:  # noqa: BLE001 - a user dataset whose attributes raise holds nothing we can name
            continue
    for name, opt in optimizers:
        try:
            found = list(_optimizer_state(name, opt, label))
        except Exception:  # noqa: BLE001 - a user optimizer with an unusual state
            continue
        yield from found


#: Whether isinstance() of a plain tensor against an optimizer, loader or dataset class is decided by
#: the tensor's type alone (their metaclass is ``type``: no ``__instancecheck__`` of their own), so a
#: plain tensor may skip those tests: ``named_tensors`` then tests the common value first.
_PLAIN_FIRST = all(type(c) is type for c in (torch.optim.Optimizer, *_DATA_TYPES))
#: Exact types whose values hold no tensor ``named_tensors`` would name (no optimizer, loader, dataset,
#: tensor or module; ``_expand`` finds nothing in them): modules, functions, classes, scalars, text
_HOLDS_NONE = frozenset({types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type,
                         int, float, complex, bool, str, bytes, type(None)})  # fmt: skip


def _add_tensor(out: list[tuple[str, torch.Tensor]], name: str, v: torch.Tensor) -> None:
    """A tensor's names: its own, and ``<name>.grad`` where it is a leaf that has one."""
    out.append((name, v))
    if type(v) in _PLAIN:  # describe.flag and describe.attr's own fast case, inline: no subclass code runs
        try:
            g = _grad(v) if _is_leaf(v) else None
        except Exception:  # noqa: BLE001 - as below
            g = None
    elif describe.flag(v, "is_leaf"):  # read without a subclass's __torch_function__
        try:
            g = describe.attr(v, "grad")
        except Exception:  # noqa: BLE001 - a gradient that cannot be read is not named
            g = None
    else:
        g = None
    if g is not None:
        out.append((f"{name}.grad", g))


def _add_module(out: list[tuple[str, torch.Tensor]], name: str, v: torch.nn.Module) -> None:
    """A module's tensors: its parameters (with their gradients) and its buffers."""
    start = len(out)
    try:
        if _plain_module(type(v)):
            try:
                _walk(out, f"{name}.", v, "_parameters")
                _walk(out, f"{name}.", v, "_buffers")
                return
            except _NotPlain:  # a module below walks its own way: torch's walk, from the start
                del out[start:]
        for pn, p in v.named_parameters():
            if isinstance(p, torch.Tensor):
                _add_tensor(out, f"{name}.{pn}", p)
            else:  # a module whose own named_parameters yields something else
                out.extend(_expand(f"{name}.{pn}", p, 1))
        for bn, b in v.named_buffers():
            if b is not None:
                out.append((f"{name}.{bn}", b))
    except Exception:  # noqa: BLE001 - a user module with a broken named_parameters
        return


_Module = torch.nn.Module
_TORCH_WALK = (_Module.named_parameters, _Module.named_buffers, _Module._named_members, _Module.named_modules)


def _plain_module(cls: type) -> bool:
    """Whether ``cls`` lists its parameters and buffers with torch's own methods."""
    return (cls.named_parameters, cls.named_buffers, cls._named_members, cls.named_modules) == _TORCH_WALK


class _NotPlain(Exception):
    """A module in the tree walks its children with a ``named_modules`` of its own."""


#: TensorBase's getset descriptors the compiled walk calls (describe's getters are their __get__)
_LEAF_DESCR, _GRAD_DESCR = torch._C.TensorBase.__dict__["is_leaf"], torch._C.TensorBase.__dict__["grad"]


def _expand_into(out: list[tuple[str, torch.Tensor]], name: str, v: Any) -> None:
    out.extend(_expand(name, v, 1))


def _walk(out: list[tuple[str, torch.Tensor]], prefix: str, root: torch.nn.Module, table: str) -> None:
    """What ``_add_module`` adds from torch's ``root.named_parameters()`` (``table="_parameters"``)
    or ``named_buffers()`` (``"_buffers"``): ``_walk_py``, or its compiled twin
    (``csrc/walk.c``, the same pairs; ``_PLAIN[0]`` is ``torch.Tensor`` there) where it was built.
    It runs at every tracked cell's start and end."""
    if _hotpath is None:
        _walk_py(out, prefix, root, table)
    elif not _hotpath.walk_modules(out, prefix, root, table, table == "_parameters", _PLAIN, _LEAF_DESCR,
                                   _GRAD_DESCR, _TORCH_WALK[3], _add_tensor, _expand_into):  # fmt: skip
        raise _NotPlain


def _walk_py(out: list[tuple[str, torch.Tensor]], prefix: str, root: torch.nn.Module, table: str) -> None:
    """What ``_add_module`` adds from torch's ``root.named_parameters()`` (``table="_parameters"``)
    or ``named_buffers()`` (``"_buffers"``), read from the modules' own dicts: the same names in
    the same order, each shared tensor or module once (sets as torch's ``_named_members`` and
    ``named_modules`` keep), without a generator per module.  Raises ``_NotPlain`` where a module
    below has a ``named_modules`` of its own."""
    params = table == "_parameters"
    memo: set[Any] = set()
    modules: set[Any] = set()
    stack: list[tuple[str, Any]] = [(prefix, root)]
    while stack:
        prefix, module = stack.pop()
        if module in modules:  # checked when reached, as torch's recursion does
            continue
        modules.add(module)
        for k, v in getattr(module, table).items():
            if v is None or v in memo:
                continue
            memo.add(v)
            if not params:
                out.append((prefix + k, v))
            elif isinstance(v, torch.Tensor):
                _add_tensor(out, prefix + k, v)
            else:  # something else in a module's _parameters
                _expand_into(out, prefix + k, v)
        children = []
        for n, c in module._modules.items():
            if c is None:
                continue
            if type(c).named_modules is not _TORCH_WALK[3]:
                raise _NotPlain
            children.append((f"{prefix}{n}.", c))
        children.reverse()  # popped in order: torch's depth-first walk, each module before its children
        stack.extend(children)


MAX_STATE = 4096  # parameters whose optimizer state is named (bounded: a walk per block end)


def _optimizer_state(name: str, opt: Any, label: dict[int, str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``opt.state[model.0.weight].exp_avg``: each parameter's state tensors, by the parameter's name."""
    for i, (p, st) in enumerate(list(opt.state.items())[:MAX_STATE]):
        if not isinstance(st, dict):
            continue
        pname = label.get(id(p)) or f"param {i}"
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and isinstance(k, str):
                yield f"{name}.state[{pname}].{k}", v


def _expand(name: str, v: Any, depth: int) -> Iterator[tuple[str, torch.Tensor]]:
    found: list[tuple[str, torch.Tensor]] = []
    if isinstance(v, torch.Tensor):
        _add_tensor(found, name, v)
        yield from found
    elif isinstance(v, torch.nn.Module):
        _add_module(found, name, v)
        yield from found
    elif depth == 0 and isinstance(v, (list, tuple)) and len(v) <= MAX_CONTAINER:
        for i, x in enumerate(v):
            if isinstance(x, torch.Tensor):
                yield from _expand(f"{name}[{i}]", x, depth + 1)
    elif depth == 0 and isinstance(v, dict) and len(v) <= MAX_CONTAINER:
        for k, x in list(v.items()):
            if isinstance(x, torch.Tensor) and isinstance(k, (str, int)):
                yield from _expand(f"{name}[{k!r}]", x, depth + 1)


_DATA = _DATA_TYPES


def _dataset(name: str, v: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``loader.dataset.tensors[0]``: the tensors of a ``TensorDataset`` a loader or a
    ``Subset`` reads, through at most three ``.dataset`` links (attributes, not properties)."""
    for _ in range(4):
        if isinstance(v, torch.utils.data.TensorDataset):
            tensors = vars(v).get("tensors")
            if isinstance(tensors, tuple) and len(tensors) <= MAX_CONTAINER:
                for i, t in enumerate(tensors):
                    if isinstance(t, torch.Tensor):
                        yield f"{name}.tensors[{i}]", t
            return
        inner = vars(v).get("dataset") if hasattr(v, "__dict__") else None
        if inner is None:
            return
        name, v = f"{name}.dataset", inner


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
    """The variable that holds ``mod``, or the attribute path to it below a module a variable
    holds (``net.0``: ``net.forward(x)`` calls ``net``'s children without calling ``net``, so
    they are the first modules the block sees); the shortest such path, None if there is none."""
    if ns is None:
        return None
    holders = []
    for name, v in _user_names(ns):
        if v is mod:
            return name
        if isinstance(v, torch.nn.Module):
            holders.append((name, v))
    best: str | None = None
    for name, v in holders:
        try:
            below = descendant_path(v, mod)
        except Exception:  # noqa: BLE001 - a user module whose ``_modules`` raises holds nothing we can name
            continue
        if below is not None and (best is None or len(name) + 1 + len(below) < len(best)):
            best = f"{name}.{below}"
    return best
