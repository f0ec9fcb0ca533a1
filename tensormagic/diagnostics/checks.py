"""The checks that run during a tracked block: one record hook, one error hook, a few call watches.

Everything here runs on the tracker's hot path, only for calls that produce a record (or fail,
or are watched): a few dict lookups per record, nothing formatted, no tensor kept.  Messages are
written at the end of the block by ``messages.render`` from what is stored here.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..engine.ops import op_name
from ..engine.raw import QUIET_ANY, QUIET_FIT, QUIET_ONE, _tensors_in, create_parts
from ..engine.source import Locator
from ..engine.tracker import Tracker
from ..model.events import Diagnostic
from ..model.recording import Recording
from .catalog import Settings
from .context import Context, Finding
from .inplace import SavedWrites

Tensor = torch.Tensor
F64 = torch.float64
LOW_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
ELEMENTWISE, REDUCTION, SHAPE_LOSS, FLOAT_LOSS, SHAPING = 1, 2, 4, 8, 16
#: roles whose creates from several inputs are checked (broadcasts, losses, shapes)
_SEVERAL = ELEMENTWISE | SHAPE_LOSS | FLOAT_LOSS | SHAPING

_ELEMENTWISE = {
    "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "floor_divide",
    "pow", "rsub", "remainder", "fmod", "atan2", "arctan2", "maximum", "minimum", "fmax", "fmin",
    "hypot", "where", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or",
    "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "copysign", "xlogy", "lerp",
    "addcmul", "addcdiv", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
    "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__pow__", "__rpow__",
    "__mod__", "__and__", "__or__", "__xor__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
    "__ge__",
}  # fmt: skip
_REDUCTIONS = {
    "sum", "mean", "nansum", "nanmean", "norm", "std", "var", "prod", "amax", "amin", "max", "min",
    "logsumexp", "median", "nanmedian", "std_mean", "var_mean", "count_nonzero", "dist",
    "vector_norm", "matrix_norm", "cross_entropy", "binary_cross_entropy", "kl_div",
}  # fmt: skip
_SHAPE_LOSSES = {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "poisson_nll_loss",
                 "soft_margin_loss"}  # fmt: skip
_FLOAT_LOSSES = {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy",
                 "binary_cross_entropy_with_logits", "soft_margin_loss", "kl_div", "poisson_nll_loss",
                 "gaussian_nll_loss"}  # fmt: skip
_SHAPING = {"unsqueeze", "__getitem__", "view", "reshape", "expand", "expand_as", "broadcast_to",
            "repeat", "tile", "view_as", "reshape_as", "unflatten", "atleast_2d", "atleast_3d"}  # fmt: skip
_BACKWARDS = {"torch.Tensor.backward", "torch.autograd.backward", "torch.autograd.grad"}
SYNC_CALLS = ("torch.Tensor.item", "torch.Tensor.tolist", "torch.Tensor.__bool__", "torch.Tensor.__float__",
              "torch.Tensor.__int__", "torch.Tensor.__index__", "torch.Tensor.__repr__",
              "torch.Tensor.__format__")  # fmt: skip


def role_of(func: Any) -> int:
    """What a function means to the shape and dtype checks, as bit flags (cached per function)."""
    short = op_name(func).rsplit(".", 1)[-1]
    role = 0
    if short in _ELEMENTWISE:
        role |= ELEMENTWISE
    if short in _REDUCTIONS or short.endswith("_loss"):
        role |= REDUCTION
    if short in _SHAPE_LOSSES:
        role |= SHAPE_LOSS
    if short in _FLOAT_LOSSES:
        role |= FLOAT_LOSS
    if short in _SHAPING:
        role |= SHAPING
    return role


def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape two shapes broadcast to, or None when they cannot (or are not plain sizes: a
    nested tensor's irregular dimension is None)."""
    if not all(type(s) is int for s in a) or not all(type(s) is int for s in b):
        return None
    out: list[int] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            return None
        out.append(max(x, y) if x != 1 and y != 1 else x * y)
    return tuple(reversed(out))


def _numel(shape: tuple[int, ...]) -> int:
    """The elements of a shape; 0 for a nested tensor's (an irregular dimension is None), which
    the size checks then leave alone."""
    n = 1
    for s in shape:
        if s is None:
            return 0
        n *= s
    return n


class Checks:
    """The diagnostics of one block: installed on its Tracker, finished into ``Diagnostic``s."""

    def __init__(self, tr: Tracker, settings: Settings, *, compiled: bool = False) -> None:
        self.tr = tr
        self.settings = settings
        ids = settings.ids
        self.findings: dict[tuple[Any, ...], Finding] = {}
        self.saved = SavedWrites(tr, self.add, compiled=compiled) if "inplace-saved" in ids else None
        self.broadcast = "broadcast" in ids
        self.leaf_moved = "leaf-moved" in ids
        self.f64 = "dtype-float64" in ids
        self.int_target = "dtype-int-target" in ids
        self.nonfinite = "non-finite" in ids and tr.stats  # never a device sync without stats
        self.device = "device-mismatch" in ids
        self.sync = "sync-in-loop" in ids
        self.accumulation = "grad-accumulation" in ids
        self._roles: dict[Any, int] = {}
        self._blown: dict[int, list[Any]] = {}  # tid -> [elementwise raw idx, out numel, confirmed]
        self._shaped: set[int] = set()  # tids made by unsqueeze/[:, None]/expand…: deliberate shapes
        self._finite: dict[int, bool] = {}
        self._bad_storages: set[Any] = set()
        self._nonfinite_done = False
        self.syncs: dict[Any, list[Any]] = {}  # where -> [count, op names, first tid]
        if self.saved or self.broadcast or self.leaf_moved or self.f64 or self.int_target or \
                self.nonfinite or self.sync:  # fmt: skip
            tr.record_hooks.append(self.on_record)
            # on_record looks at an in-place record for these two only; inplace-saved's index
            # says which writes have a graph to inspect (most of an optimizer step's do not)
            tr.write_gate = None if self.nonfinite else self.saved.index if self.saved else False
        if self.saved or self.device or self.f64 or self.int_target:
            tr.error_hooks.append(self.on_error)
        if self.sync:
            for name in SYNC_CALLS:
                tr.call_watch[name] = self._on_sync_call
        if "grad-unfilled" in ids:
            tr.call_watch["torch.Tensor.grad.__get__"] = self._on_grad_read

    def add(self, diag_id: str, where: Any, tids: tuple[int, ...], *, key: Any = (), latest: bool = False,
            **data: Any) -> Finding:  # fmt: skip
        """Record a finding; a repeat (same id, line and key: a loop) only counts."""
        k = (diag_id, where, key)
        f = self.findings.get(k)
        if f is None:
            f = self.findings[k] = Finding(diag_id, where, tids, data)
        else:
            f.count += 1
            if latest:
                f.tids, f.data = tids, data
        return f

    # -- records -----------------------------------------------------------------------------
    def on_record(self, tr: Tracker, idx: int, objs: tuple[Tensor, ...]) -> None:
        r = tr.raw[idx]
        kind = r[0]
        if kind == "create":
            # Most creates need no check: one input (or none), no grad_fn, a role that looks at
            # one input only when it shapes it.  Decided here, without another call.
            meta, extra = r[3], r[7]
            if not self.nonfinite:
                if r[1] is None:  # appeared without an op (a gradient, a NumPy bridge): no input to check
                    return
                if not self._blown:
                    role = self._roles.get(r[1])
                    if role is not None:
                        # a first sight ("seen": a gradient filled in by backward) has its inputs first
                        ins = extra[0] if extra and type(extra[0]) is tuple else extra
                        if self._quiet(role, len(ins), meta):
                            return
            self._on_create(r, idx)
        elif kind == "inplace":
            v0, in_ids = r[7][0], r[7][1:]
            if self.saved is not None and objs and r[3][5] != v0:
                self.saved.on_write(idx, r[2], objs[0], v0)
            if self.nonfinite:
                self._check_finite(idx, r[2], in_ids, prior=True)
        elif kind == "view":
            self._on_view(r, idx)
        elif kind == "move":
            self._on_move(r, idx, objs)

    @staticmethod
    def _quiet(role: int, n_in: int, meta: Any) -> bool:
        """Whether a create of an op with this role needs no check (what QUIET_ONE / QUIET_ANY promise)."""
        if n_in < 2:
            return not role & SHAPING
        return not role & _SEVERAL and meta[1] is not F64

    def _on_create(self, r: tuple[Any, ...], idx: int) -> None:
        # inplace-saved files the creates with a grad_fn itself, from the records (catch_up)
        func, tid, meta = r[1], r[2], r[3]
        in_ids, origin, _note = create_parts(r[7])
        if self.nonfinite:
            self._check_finite(idx, tid, in_ids if origin == "op" else (), prior=False)
        if not in_ids or func is None:
            return
        role = self._roles.get(func)
        if role is None:
            role = self._roles[func] = role_of(func)
            if not role & SHAPING and not self.nonfinite and not self._blown:
                # what on_record's first test decides for this op: the hot path may skip the call
                # an elementwise op from several inputs only needs the broadcast check when its
                # result outgrows every input (_candidate): QUIET_FIT lets the hot path tell
                several = role & _SEVERAL
                self.tr.quiet_creates[func] = QUIET_FIT if several == ELEMENTWISE else QUIET_ONE if several else QUIET_ANY
        if self._blown:
            self._follow(idx, tid, meta, in_ids, role)
        if role:
            tensors = self.tr.tensors
            if role & ELEMENTWISE and self.broadcast and len(in_ids) > 1:
                self._candidate(idx, tid, meta, in_ids)
            if role & SHAPING:
                s_in = tensors[in_ids[0]][1][0]
                if len(meta[0]) > len(s_in) or _numel(meta[0]) > _numel(s_in):
                    self._shaped.add(tid)
            if len(in_ids) > 1 and role & (SHAPE_LOSS | FLOAT_LOSS):
                self._loss(r, idx, role, in_ids[0], in_ids[1])
        if self.f64 and meta[1] is F64 and len(in_ids) > 1:
            self._mixed_floats(r[4], in_ids, idx, error=False)

    def _on_view(self, r: tuple[Any, ...], idx: int) -> None:
        tid, meta, btid = r[2], r[3], r[7]
        s_base = self.tr.tensors[btid][1][0]
        if len(meta[0]) > len(s_base) or _numel(meta[0]) > _numel(s_base):
            self._shaped.add(tid)
        elif self._blown:
            c = self._blown.get(btid)
            if c is not None and _numel(meta[0]) == c[1]:
                self._blown[tid] = c
        if self.nonfinite:
            s = self.tr.stats_at.get(idx)
            self._finite[tid] = s is None or not (s.nan or s.inf)

    def _on_move(self, r: tuple[Any, ...], idx: int, objs: tuple[Tensor, ...]) -> None:
        tid, meta, where, extra = r[2], r[3], r[4], r[7]
        stid, smeta, inplace = extra[0], extra[1], extra[2]
        if inplace:
            if self.saved is not None and len(extra) > 3 and objs and meta[5] != extra[3]:
                self.saved.on_write(idx, tid, objs[0], extra[3])
        else:
            if self.leaf_moved and smeta[3] and smeta[4] is None and meta[4] is not None:
                self.add("leaf-moved", where, (tid, stid), latest=True, idx=idx)
        if self.sync and smeta[2].type in self.settings.sync_devices and meta[2].type == "cpu":
            self._count_sync(where, op_name(r[1]) if r[1] is not None else "copy to cpu", tid)
        if self.nonfinite:
            self._check_finite(idx, tid, (stid,), prior=inplace)

    # -- broadcast ---------------------------------------------------------------------------
    def _candidate(self, idx: int, tid: int, meta: Any, in_ids: tuple[int, ...]) -> None:
        n_out = _numel(meta[0])
        tensors = self.tr.tensors
        for i in in_ids:
            if i in self._shaped or _numel(tensors[i][1][0]) >= n_out:
                return
        if len(self._blown) > 4096:  # a loop of deliberate outer products: keep the live ones
            self._blown = {k: v for k, v in self._blown.items() if self.tr.alive(k) is not None}
        self._blown[tid] = [idx, n_out, False]
        self.tr.quiet_creates.clear()  # every create may now continue a blown-up tensor's flow

    def _follow(self, idx: int, tid: int, meta: Any, in_ids: tuple[int, ...], role: int) -> None:
        """A blown-up tensor flows on through same-sized ops; a reduction or loss confirms it."""
        for i in in_ids:
            c = self._blown.get(i)
            if c is None:
                continue
            if role & REDUCTION:
                if not c[2]:
                    c[2] = True
                    src = self.tr.raw[c[0]]
                    self.add("broadcast", src[4], (src[2], *create_parts(src[7])[0]), idx=c[0], reduce=idx)
            elif _numel(meta[0]) == c[1]:
                self._blown[tid] = c
            return

    def _loss(self, r: tuple[Any, ...], idx: int, role: int, a: int, b: int) -> None:
        tensors = self.tr.tensors
        ma, mb = tensors[a][1], tensors[b][1]
        if role & SHAPE_LOSS and self.broadcast and ma[0] != mb[0] and not ({a, b} & self._shaped):
            shape = broadcast_shape(tuple(ma[0]), tuple(mb[0]))
            if shape is not None and _numel(shape) > max(_numel(ma[0]), _numel(mb[0])):
                self.add("broadcast", r[4], (a, b), key="loss", idx=idx, shape=shape)
        if role & FLOAT_LOSS and self.int_target:
            self._int_target(r[4], idx, a, b, ma[1], mb[1], error=False)

    # -- dtypes ------------------------------------------------------------------------------
    def _mixed_floats(self, where: Any, in_ids: tuple[int, ...], idx: int | None, *, error: bool) -> bool:
        wide: list[int] = []
        narrow: list[int] = []
        for i in in_ids:
            t = self.tr.alive(i)
            if t is None or t.dim() == 0:
                continue  # 0-dim tensors do not decide the result's dtype
            if t.dtype is F64:
                wide.append(i)
            elif t.dtype in LOW_FLOATS:
                narrow.append(i)
        if wide and narrow:
            self.add("dtype-float64", where, (*wide, *narrow), wide=wide, narrow=narrow, idx=idx, error=error)
            return True
        return False

    def _int_target(self, where: Any, idx: int | None, a: int, b: int, da: Any, db: Any, *,
                    error: bool) -> None:  # fmt: skip
        if da.is_floating_point and not db.is_floating_point and not db.is_complex:
            dtype = str(db).removeprefix("torch.")
            self.add("dtype-int-target", where, (b, a), idx=idx, error=error, dtype=dtype)

    # -- non-finite (stats=True only) --------------------------------------------------------
    def _is_finite(self, tid: int) -> bool:
        info = self.tr.tensors.get(tid)
        if info is not None and info[2] in self._bad_storages:
            return False
        v = self._finite.get(tid)
        if v is None:
            t = self.tr.alive(tid)
            v = True
            if t is not None and (t.is_floating_point() or t.is_complex()) and t.device.type != "meta":
                v = bool(torch.isfinite(t).all())  # stats=True: a device sync is allowed
            self._finite[tid] = v
        return v

    def _check_finite(self, idx: int, tid: int, in_ids: tuple[int, ...], *, prior: bool) -> None:
        s = self.tr.stats_at.get(idx)
        bad = s is not None and bool(s.nan or s.inf)
        was = self._finite.get(tid) if prior else None
        self._finite[tid] = not bad
        if not bad:
            return
        info = self.tr.tensors.get(tid)
        if info is not None:
            self._bad_storages.add(info[2])
        if self._nonfinite_done or (prior and was is not True) or (not prior and not in_ids):
            return
        if all(self._is_finite(i) for i in in_ids if i != tid):
            self._nonfinite_done = True
            r = self.tr.raw[idx]
            self.add("non-finite", r[4], (tid, *in_ids), idx=idx, nan=s.nan, inf=s.inf)

    # -- calls watched before they run -------------------------------------------------------
    def _count_sync(self, where: Any, name: str, tid: int | None) -> None:
        c = self.syncs.get(where)
        if c is None:
            self.syncs[where] = [1, {name}, tid]
        else:
            c[0] += 1
            c[1].add(name)

    def _on_sync_call(self, tr: Tracker, func: Any, args: tuple[Any, ...], where: Any) -> None:
        t = args[0] if args else None
        if isinstance(t, Tensor) and t.device.type in self.settings.sync_devices:
            w = where()
            self._count_sync(w, op_name(func), tr.see(t, w) if w not in self.syncs else None)

    def _on_grad_read(self, tr: Tracker, func: Any, args: tuple[Any, ...], where: Any) -> None:
        t = args[0] if args else None
        if isinstance(t, Tensor) and not t.is_leaf and not t.retains_grad:
            w = where()
            self.add("grad-unfilled", w, (tr.see(t, w),))

    # the engines skip the call for the other reads (an optimizer step reads every leaf's .grad)
    _on_grad_read.non_leaf_only = True  # type: ignore[attr-defined]

    # -- failures ----------------------------------------------------------------------------
    def on_error(self, tr: Tracker, func: Any, args: Any, kwargs: Any, exc: BaseException,
                 where: Any) -> None:  # fmt: skip
        name = op_name(func)
        if name in _BACKWARDS:
            if self.saved is not None:
                self.saved.backward_failed(where, str(exc))
            return
        ts = _tensors_in(args, kwargs or {})
        if len(ts) < 2:
            return
        if self.device:
            placed: dict[str, list[Tensor]] = {}
            for t in ts:
                if t.device.type == "cpu" and t.dim() == 0:
                    continue  # a cpu scalar tensor may meet any device
                placed.setdefault(str(t.device), []).append(t)
            if len(placed) > 1:
                devices = {tr.see(t, where): dev for dev, group in placed.items() for t in group[:3]}
                self.add("device-mismatch", where, tuple(devices), key=tuple(sorted(placed)),
                         devices=devices, func=name)  # fmt: skip
                return
        in_ids = tuple(tr.see(t, where) for t in ts)
        if self.f64 and self._mixed_floats(where, in_ids, None, error=True):
            return
        role = self._roles.get(func)
        if role is None:
            role = self._roles[func] = role_of(func)
        if self.int_target and role & FLOAT_LOSS:
            self._int_target(where, None, in_ids[0], in_ids[1], ts[0].dtype, ts[1].dtype, error=True)

    # -- the end of the block ----------------------------------------------------------------
    def close(self) -> None:
        """Drop the tracker and the in-place index (they hold each other through bound methods):
        a finished block's records are then freed by reference counting, not a full collection."""
        self.saved = None
        self.tr = None  # type: ignore[assignment]

    def finish(self, rec: Recording, *, namespace: Mapping[str, Any] | None = None,
               locator: Locator | None = None) -> list[Diagnostic]:  # fmt: skip
        """The block's diagnostics, in words, once the Recording has its names and lines."""
        from .messages import render_all

        ctx = Context(rec, self.tr.raw, locator, namespace)
        return render_all(ctx, self)
