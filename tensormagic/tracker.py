"""The hot path: a ``TorchFunctionMode`` that turns torch calls into compact raw records.

Nothing here formats strings or builds event objects: a raw record is a tuple of the objects
at hand (the function, a metadata tuple, the frame's filename and line), and ``recording.py``
turns them into events when the block ends.  Calls that create nothing (attribute reads,
``size()``, ``item()``) take a two-lookup fast path.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from . import identity
from .identity import _ids, assign_ref, new_storage_id, storage_key
from .lines import LineFinder
from .modules import ModuleStack
from .ops import ALIAS, BACKWARD, DATA_SET, GENERAL, INPLACE, MOVE, NUMPY, SKIP, classify, op_name

Tensor = torch.Tensor
_now = time.perf_counter_ns
_name = op_name  # raw records keep the op's name (a cached lookup), not the function

# Raw record layout: (kind, op name, tid, meta, where, module, t_ns, extra, bytecode offset in the line).
# Records hold only strings, numbers, dtypes, devices and tuples of those, never functions, classes or
# torch.Size: the garbage collector then stops tracking them, and a long block does not make every
# full collection re-walk its records (nor trigger more of them).
KIND, FUNC, TID, META, WHERE, MODULE, TIME, EXTRA, LASTI = range(9)
# meta layout: (shape tuple, dtype, device, requires_grad, grad_fn class name, version)
FOLD_AFTER = 3  # past max_events, a (line, op, kind) seen this often is counted, not stored


def meta_of(t: Tensor) -> tuple[Any, ...]:
    gf = t.grad_fn
    return (tuple(t.shape), t.dtype, t.device, t.requires_grad, None if gf is None else type(gf).__name__,
            t._version)


def _tensors_in(args: Any, kwargs: dict[str, Any]) -> list[Tensor]:
    out: list[Tensor] = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Tensor))
    if kwargs:
        for a in kwargs.values():
            if isinstance(a, Tensor):
                out.append(a)
    return out


class Tracker:
    """Collects raw records for one block; ``recording.build`` turns them into a Recording."""

    def __init__(self, *, stats: bool = False, max_events: int = 20_000) -> None:
        self.stats = stats
        self.max_events = max_events
        self.raw: list[tuple[Any, ...]] = []
        #: tid -> [weakref, first meta, storage id, first raw index or None]
        self.tensors: dict[int, list[Any]] = {}
        self.sid_of_key: dict[int, int] = {}
        self.preexisting: set[int] = set()
        self.merged: set[int] = set()  # temporaries whose move was re-targeted to a parameter
        self.folds: dict[tuple[Any, ...], int] = {}
        self._fold_counts: dict[tuple[Any, ...], int] | None = None
        self.stats_at: dict[int, Any] = {}
        self.lines = LineFinder()
        self.modules = ModuleStack()
        self.t0 = time.perf_counter_ns()
        self._last_move: dict[int, int] = {}
        self.internal_error: BaseException | None = None
        # Extension points (diagnostics): called only when non-empty.
        self.record_hooks: list[Callable[[Tracker, int, tuple[Tensor, ...]], None]] = []
        self.error_hooks: list[Callable[..., None]] = []
        # call_watch: op name -> watch(tracker, func, args, where), called before the op runs;
        # ``where`` is a zero-argument callable (the frame walk costs µs: only pay it when needed).
        self.call_watch: dict[str, Callable[[Tracker, Any, tuple[Any, ...], Callable[[], Any]], None]] = {}

    # -- tensors -----------------------------------------------------------------------------
    def mark_preexisting(self, t: Tensor) -> None:
        tid = identity.assign(t)
        self.preexisting.add(tid)

    def see(self, t: Tensor, where: Any) -> int:
        """The id of an input tensor; its first sight in the block is remembered."""
        ent = _ids.get(id(t))
        if ent is not None and ent[0]() is t:
            tid = ent[1]
            if tid in self.tensors:
                return tid  # the common case: an input this block already knows
            fresh = False
        else:
            ent = identity.assign_ref(t)
            tid = ent[1]
            fresh = True
        meta = meta_of(t)
        self.tensors[tid] = [ent[0], meta, self._storage(t, new=False), None]
        if fresh and tid not in self.preexisting:
            # appeared without an op the mode can see (from_numpy, Parameter(t), torch.load…)
            self._add("create", None, tid, meta, where, ((), "seen", None), (t,))
        return tid

    def _storage(self, t: Tensor, new: bool) -> int | None:
        key = storage_key(t)
        if key is None:
            return None
        if not new:
            sid = self.sid_of_key.get(key)
            if sid is not None:
                return sid
        sid = self.sid_of_key[key] = new_storage_id()
        return sid

    def _new(self, t: Tensor, *, alias: bool) -> tuple[int, Any]:
        """Register a tensor an op just made; returns its id and its metadata snapshot."""
        ref, tid = identity.assign_ref(t)
        gf = t.grad_fn  # meta_of, inlined: this runs once per recorded op
        meta = (tuple(t.shape), t.dtype, t.device, t.requires_grad, None if gf is None else type(gf).__name__,
                t._version)
        self.tensors[tid] = [ref, meta, self._storage(t, new=not alias), len(self.raw)]
        return tid, meta

    # -- records -----------------------------------------------------------------------------
    def _add(self, kind: str, func: Any, tid: int, meta: Any, where: Any, extra: Any,
             objs: tuple[Tensor, ...]) -> None:  # fmt: skip
        raw = self.raw
        if len(raw) >= self.max_events and self._fold(kind, func, where):
            return
        raw.append((kind, _name(func), tid, meta, where, self.modules.current, _now() - self.t0, extra,
                    self.lines.lasti))  # fmt: skip
        if self.stats and objs:
            from .stats import compute_stats

            self.stats_at[len(raw) - 1] = compute_stats(objs[0])
        if self.record_hooks:
            for hook in self.record_hooks:
                hook(self, len(raw) - 1, objs)

    def _fold(self, kind: str, func: Any, where: Any) -> bool:
        counts = self._fold_counts
        if counts is None:
            counts = self._fold_counts = {}
            for r in self.raw:
                k = (r[WHERE], r[FUNC], r[KIND])
                counts[k] = counts.get(k, 0) + 1
        key = (where, _name(func), kind)
        n = counts.get(key, 0)
        counts[key] = n + 1
        if n >= FOLD_AFTER or len(self.raw) >= 2 * self.max_events:
            self.folds[key] = self.folds.get(key, 0) + 1
            return True
        return False

    def record_outputs(self, func: Any, action: int, args: Any, kwargs: Any, r: Any,
                       where: Any) -> None:  # fmt: skip
        if action == GENERAL and isinstance(r, Tensor) and self._created(func, args, kwargs, r, where):
            return
        inputs = _tensors_in(args, kwargs)
        if isinstance(r, Tensor):
            self._output(func, action, inputs, r, where)
        else:
            for o in r:
                if isinstance(o, Tensor):
                    self._output(func, action, inputs, o, where)

    def _created(self, func: Any, args: Any, kwargs: Any, o: Tensor, where: Any) -> bool:
        """The common case in one function: an op made one new, non-view tensor from tensors this
        block already knows.  Records exactly what ``_output`` would and returns True; returns
        False, having changed nothing, for anything else (the general path then handles it)."""
        raw = self.raw
        if self.stats or len(raw) >= self.max_events:
            return False
        tensors = self.tensors
        in_ids = []
        for a in args:
            if isinstance(a, Tensor):
                if a is o:
                    return False
                ent = _ids.get(id(a))
                if ent is None or ent[0]() is not a or ent[1] not in tensors:
                    return False  # first sight of this input: see() records it
                in_ids.append(ent[1])
            elif isinstance(a, (list, tuple)):
                return False
        if kwargs:
            for a in kwargs.values():
                if isinstance(a, Tensor):
                    return False
        ent = _ids.get(id(o))
        if (ent is not None and ent[0]() is o) or o._is_view():
            return False
        ref, tid = assign_ref(o)
        gf = o.grad_fn
        meta = (tuple(o.shape), o.dtype, o.device, o.requires_grad, None if gf is None else type(gf).__name__,
                o._version)
        key = storage_key(o)
        sid = None
        if key is not None:
            sid = self.sid_of_key[key] = new_storage_id()
        n = len(raw)
        tensors[tid] = [ref, meta, sid, n]
        raw.append(("create", _name(func), tid, meta, where, self.modules.current, _now() - self.t0,
                    (tuple(in_ids), "op", None), self.lines.lasti))  # fmt: skip
        if self.record_hooks:
            objs = (o,)
            for hook in self.record_hooks:
                hook(self, n, objs)
        return True

    def _output(self, func: Any, action: int, inputs: list[Tensor], o: Tensor, where: Any) -> None:
        for a in inputs:
            if o is a:
                return  # not new: an input handed back
        ent = _ids.get(id(o))
        if ent is not None and ent[0]() is o:
            return  # not new: a tensor seen before
        if action == MOVE and inputs:
            src = inputs[0]
            stid = self.see(src, where)
            tid, meta = self._new(o, alias=False)
            self._last_move[tid] = len(self.raw)
            self._add("move", func, tid, meta, where, (stid, meta_of(src), False), (o,))
            return
        base = None
        if action == ALIAS or o._is_view():
            okey = storage_key(o)
            base = next((a for a in inputs if storage_key(a) == okey), None)
        if base is not None:
            btid = self.see(base, where)
            tid, meta = self._new(o, alias=True)
            self._add("view", func, tid, meta, where, btid, (o,))
        else:
            in_ids = tuple([self.see(a, where) for a in inputs])
            tid, meta = self._new(o, alias=False)
            self._add("create", func, tid, meta, where, (in_ids, "op", None), (o,))

    def record_write(self, func: Any, written: Tensor, v0: int, args: Any, kwargs: Any,
                     where: Any) -> None:  # fmt: skip
        name = op_name(func)
        if written._version == v0 and name != "torch.Tensor.__setitem__":
            return
        tid = self.see(written, where)
        inputs = [a for a in _tensors_in(args, kwargs) if a is not written]
        if name == "torch.Tensor.copy_" and inputs:
            src = inputs[0]
            if src.device != written.device or src.dtype != written.dtype:
                stid = self.see(src, where)
                self._add("move", func, tid, meta_of(written), where,
                          (stid, meta_of(src), True, v0), (written,))  # fmt: skip
                return
        in_ids = tuple(self.see(a, where) for a in inputs)
        self._add("inplace", func, tid, meta_of(written), where, (v0, in_ids), (written,))

    def record_data_set(self, func: Any, target: Tensor, new: Tensor, before: Any, where: Any) -> None:
        """``param.data = t``: Module.to swaps parameter data this way, with no version bump."""
        tid = self.see(target, where)
        ntid = identity.lookup(new)
        idx = self._last_move.get(ntid) if ntid is not None else None
        if idx is not None and idx < len(self.raw) and self.raw[idx][TID] == ntid:
            kind, mfunc, _, _, mwhere, module, t, extra, lasti = self.raw[idx]
            self.raw[idx] = (kind, mfunc, tid, meta_of(target), mwhere, module, t,
                             (tid, extra[1], True), lasti)  # fmt: skip
            self.merged.add(ntid)
            return
        after = meta_of(target)
        if after[1] != before[1] or after[2] != before[2]:
            self._add("move", func, tid, after, where, (tid, before, True), (target,))
        else:
            self._add("inplace", func, tid, after, where, (before[5], ()), (target,))

    def record_numpy(self, func: Any, t: Tensor, where: Any) -> None:
        tid = self.see(t, where)
        self._add("numpy", func, tid, meta_of(t), where, None, (t,))

    def prepare_backward(self, func: Any, args: Any, kwargs: Any) -> tuple[Any, ...]:
        """Before backward runs: the leaves that will receive gradients and what they held."""
        from .autograd import leaves_of

        is_grad = op_name(func) == "torch.autograd.grad"
        if is_grad:
            roots = args[0] if args else kwargs.get("outputs")
            wrt = args[1] if len(args) > 1 else kwargs.get("inputs")
        else:
            roots = args[0] if args else kwargs.get("tensors")
            wrt = kwargs.get("inputs")
        roots_l = [roots] if isinstance(roots, Tensor) else list(roots or ())
        if wrt is not None:
            leaves = [wrt] if isinstance(wrt, Tensor) else list(wrt)
        else:
            leaves = leaves_of(roots_l)
        held = [_held_grad(lf) for lf in leaves]
        return is_grad, roots_l, leaves, [g is not None and _nonzero(g) for g in held]

    def finish_backward(self, func: Any, prep: tuple[Any, ...], result: Any, where: Any) -> None:
        is_grad, roots_l, leaves, prev_nonzero = prep
        grads: list[tuple[Any, ...]] = []
        if is_grad:
            for lf, g in zip(leaves, result):
                if g is None:
                    continue
                ltid = self.see(lf, where)
                gtid, gmeta = self._new(g, alias=False)
                self._add("create", func, gtid, gmeta, where, ((ltid,), "op", None), (g,))
                grads.append((ltid, meta_of(lf), tuple(g.shape), g.dtype, False, gtid))
        else:
            for lf, was in zip(leaves, prev_nonzero):
                g = _held_grad(lf)
                if g is None:
                    continue
                ltid = self.see(lf, where)
                gtid = identity.lookup(g)
                if gtid is None or gtid not in self.tensors:
                    gtid, gmeta = self._new(g, alias=False)
                    self._add("create", func, gtid, gmeta, where, ((ltid,), "seen", "grad"), (g,))
                grads.append((ltid, meta_of(lf), tuple(g.shape), g.dtype, bool(was), gtid))
        if roots_l:
            root = roots_l[0]
            rtid = self.see(root, where)
            self._add("backward", func, rtid, meta_of(root), where, tuple(grads), (root,))


def _held_grad(t: Tensor) -> Tensor | None:
    # reading .grad of a non-leaf warns; only leaves and retain_grad tensors have one
    return t.grad if (t.is_leaf or t.retains_grad) else None


def _nonzero(g: Tensor) -> bool:
    """Whether a leftover gradient holds values; never synchronises a GPU (assumed non-zero)."""
    if g.device.type in ("cpu", "meta"):
        if g.device.type == "meta":
            return True
        with torch.no_grad():
            return bool(g.ne(0).any())
    return True


class TrackMode(TorchFunctionMode):
    """The mode entered by ``track()``; routes each call by its cached classification."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker
        self._actions: dict[Any, int] = {}
        self._watched: dict[Any, tuple[Callable[..., None], int]] = {}  # func -> (watch, action)
        self.disabled = False
        self._busy = False
        self._find = tracker.lines.find  # bound once: the hot path calls it per recorded op

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if kwargs is None:
            kwargs = {}
        action = self._actions.get(func)
        if action is None:
            action = classify(func)
            watch = self.tracker.call_watch.get(op_name(func))
            if watch is not None:
                self._watched[func] = (watch, action)
                action = -1
            self._actions[func] = action
        if action == SKIP or self.disabled or self._busy:
            return func(*args, **kwargs)
        tr = self.tracker
        if action == -1:
            watch, action = self._watched[func]
            try:
                watch(tr, func, args, self._where)
            except Exception as e:  # noqa: BLE001 - a failing check must never break user code
                self._internal(e)
            if action == SKIP:
                return func(*args, **kwargs)
        written: Any = None
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
            before = meta_of(args[0])
        if isinstance(written, Tensor):
            v0: Any = written._version
        elif isinstance(written, (list, tuple)):
            v0 = [w._version for w in written]
        prep: Any = None
        if action == BACKWARD:
            try:
                prep = tr.prepare_backward(func, args, kwargs)
            except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
                self._internal(e)
        # Calls made by the function itself (e.g. inside nn.init on a Parameter) can reach the mode
        # again: they are part of this call, not events of their own.
        self._busy = True
        try:
            r = func(*args, **kwargs)
        except Exception as exc:
            if tr.error_hooks:
                self._on_error(func, args, kwargs, exc)
            raise
        finally:
            self._busy = False
        try:
            if action == GENERAL or action == ALIAS or action == MOVE:
                if written is not None and (r is written or action == GENERAL and "out" in kwargs):
                    if isinstance(written, Tensor) and written._version != v0:
                        tr.record_write(func, written, v0, args, kwargs, self._find(sys._getframe(1)))
                elif isinstance(r, (Tensor, tuple, list)):
                    tr.record_outputs(func, action, args, kwargs, r, self._find(sys._getframe(1)))
            elif action == INPLACE:
                if isinstance(written, Tensor):
                    tr.record_write(func, written, v0, args, kwargs, self._find(sys._getframe(1)))
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
        except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
            self._internal(e)
        return r

    def _where(self) -> Any:
        return self.tracker.lines.find(sys._getframe(2))

    def _on_error(self, func: Any, args: Any, kwargs: Any, exc: BaseException) -> None:
        where = self._where()
        for hook in self.tracker.error_hooks:
            try:
                hook(self.tracker, func, args, kwargs, exc, where)
            except Exception as e:  # noqa: BLE001 - the user's exception is the one that matters
                self._internal(e)

    def _internal(self, e: BaseException) -> None:
        """An internal failure: stop recording for the rest of the block, say so once."""
        if self.tracker.internal_error is None:
            self.tracker.internal_error = e
        self.disabled = True
