"""What each torch call records: the tensors an op made, the tensor it wrote in place, a
``.data`` replacement, a NumPy view.

A mixin of ``Tracker`` (``tracker.py``), which holds the tables these methods fill; the compiled
engine runs the common cases of ``record_outputs``/``_created`` and ``record_write`` in C
(``csrc/record.c``) and hands everything else to these.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from . import describe, identity
from .compiled import INSIDE_COMPILED
from .describe import NO_VERSION, PLAIN
from .identity import Ref, _counter, _ids, storage_id, storage_key
from .ops import ALIAS, GENERAL, MOVE, _names, op_name
from .raw import TID, _gf_name, _gf_names, _tensors_in, per_item_inputs, quiet
from .rebuilt import _EMPTY, MAX_SUSPECTS

Tensor = torch.Tensor
_now = time.perf_counter_ns


class OpRecords:
    """``Tracker``'s records of torch calls (the mixin's state lives on the Tracker)."""

    def record_outputs(self, func: Any, action: int, args: Any, kwargs: Any, r: Any,
                       where: Any, t: int = 0) -> None:  # fmt: skip
        if where is INSIDE_COMPILED:
            return  # made by a compiled graph: its call is one event (compiled_calls.py)
        if self.suspects:
            self._recheck(args, kwargs)
        if action == GENERAL and isinstance(r, Tensor) and self._created(func, args, kwargs, r, where, t):
            return
        inputs = _tensors_in(args, kwargs)
        n0 = len(self.raw)
        if isinstance(r, Tensor):
            self._output(func, action, inputs, r, where)
        else:
            per = per_item_inputs(func, args, kwargs, len(r)) if isinstance(r, (list, tuple)) else None
            for k, o in enumerate(r):
                if isinstance(o, Tensor):
                    self._output(func, action, inputs if per is None else per[k], o, where)
        self.one_call(n0)

    def one_call(self, n0: int) -> None:
        """Give the records from ``n0`` on (made by one call: a split's views, first sights of its
        inputs, backward's gradients) the time of the first: the Lines view counts a call as the
        records of one op on one line that share a time.  Calls never share one: each begins at
        least a clock tick after the last."""
        times = self.times
        n = len(times)
        if n - n0 > 1:
            t = times[n0]
            for i in range(n0 + 1, n):
                times[i] = t

    def _created(self, func: Any, args: Any, kwargs: Any, o: Tensor, where: Any, t: int = 0) -> bool:
        """The common case in one function: an op made one new, non-view tensor from tensors this
        block already knows.  Records exactly what ``_output`` would and returns True; returns
        False, having changed nothing, for anything else (the general path then handles it).
        ``t`` is when the call began.  Every line here runs once per recorded op: keep it short."""
        if self.suspects:
            self._recheck(args, kwargs)
        raw = self.raw
        n = len(raw)
        if n >= self._fast_cap:
            return False
        tensors = self.tensors
        get = _ids.get
        in_ids = []
        made = False  # whether an input was made in this block (else: weights, a fixed batch)
        for a in args:
            if isinstance(a, Tensor):
                ref = get(id(a))
                if ref is None or ref() is not a:
                    return False  # first sight of this input: see() records it
                tid = ref.tid
                info = tensors.get(tid)
                if info is None:
                    return False
                made = made or info[3] is not None
                in_ids.append(tid)
            elif isinstance(a, (list, tuple)):
                return False
        if kwargs:
            for a in kwargs.values():
                if isinstance(a, Tensor):
                    return False
        key = id(o)
        ref = get(key)
        # an input handed back, or a tensor another (outer) block registered, or a view, or a
        # subclass (read through ``describe``): the general path says which
        if (ref is not None and ref() is o) or type(o) not in PLAIN or o._is_view():
            return False
        try:
            skey = storage_id(o)
        except identity.NO_STORAGE:
            return False
        try:
            gf = o.grad_fn
            meta = (o.shape, o.dtype, o.device, o.requires_grad,
                    None if gf is None else (_gf_names.get(type(gf)) or _gf_name(gf)), o._version)  # fmt: skip
        except Exception:  # noqa: BLE001 - an inference tensor's version, a nested tensor's shape
            meta = describe.meta(o)
        ref = _ids[key] = Ref(o)
        tid = ref.tid = next(_counter)
        meta = self._metas.get(meta) or self._intern(meta)
        self.sid_of_key[skey] = tid  # its storage is named after it: see _storage
        tensors[tid] = (key, meta, tid, n)
        if not in_ids and meta[0] == _EMPTY and len(self.suspects) < MAX_SUSPECTS:
            self.suspects.add(tid)  # torch.empty(0) that set_() may fill unseen: see recheck
        ins = tuple(in_ids)
        if not made:  # a loop passes the same weights again: one tuple for all its records
            ins = self._inputs.setdefault(ins, ins)
        name = _names[func]
        raw.append(("create", name, tid, meta, where, self.modules.current, self.lines.lasti, ins))
        self.times.append((t or _now()) - self.t0)
        if self.record_hooks and not quiet(self.quiet_creates.get(name), ins, meta, tensors):
            objs = (o,)
            for hook in self.record_hooks:
                hook(self, n, objs)
        return True

    def _output(self, func: Any, action: int, inputs: list[Tensor], o: Tensor, where: Any) -> None:
        for a in inputs:
            if o is a:
                return  # not new: an input handed back
        ref = _ids.get(id(o))
        if ref is not None and ref() is o and ref.tid in self.tensors:
            return  # not new: a tensor this block has seen before (an outer block's is new here)
        if action == MOVE and inputs:
            src = inputs[0]
            stid = self.see(src, where)
            tid, meta = self._new(o, alias=False)
            self._last_move[tid] = len(self.raw)
            self._add("move", func, tid, meta, where, (stid, self.meta(src), False), (o,))
            return
        base = None
        if action == ALIAS or describe.is_view(o):
            okey = storage_key(o)
            base = next((a for a in inputs if storage_key(a) == okey), None)
        if base is not None:
            btid = self.see(base, where)
            tid, meta = self._new(o, alias=True)
            self._add("view", func, tid, meta, where, btid, (o,))
        else:
            in_ids = tuple([self.see(a, where) for a in inputs])
            tid, meta = self._new(o, alias=False)
            if not in_ids and meta[0] == _EMPTY and len(self.suspects) < MAX_SUSPECTS:
                self.suspects.add(tid)
            self._add("create", func, tid, meta, where, in_ids, (o,))

    def record_write(self, func: Any, written: Tensor, v0: int, args: Any, kwargs: Any,
                     where: Any) -> None:  # fmt: skip
        if where is INSIDE_COMPILED:
            return  # written by a compiled graph: its call is one event (compiled_calls.py)
        if self.suspects:
            self._recheck(args, kwargs, written, v0)
        name = op_name(func)
        # a tensor without a version counter (inference) is written whenever a writing op ran
        v1 = describe.version(written)
        if v1 == v0 and v1 != NO_VERSION and name != "torch.Tensor.__setitem__":
            return
        tid = self.see(written, where)
        inputs = [a for a in _tensors_in(args, kwargs) if a is not written]
        if name == "torch.Tensor.copy_" and inputs:
            src = inputs[0]
            smeta, wmeta = self.meta(src), self.meta(written)
            if smeta[2] != wmeta[2] or smeta[1] != wmeta[1]:
                stid = self.see(src, where)
                self._add("move", func, tid, wmeta, where, (stid, smeta, True, v0), (written,))
                return
        in_ids = tuple(self.see(a, where) for a in inputs)
        self._add("inplace", func, tid, self.meta(written), where, (v0, *in_ids), (written,))

    def record_data_set(self, func: Any, target: Tensor, new: Tensor, before: Any, where: Any) -> None:
        """``param.data = t``: Module.to swaps parameter data this way, with no version bump."""
        tid = self.see(target, where)
        self.suspects.discard(tid)  # its new data has a record of its own
        ntid = identity.lookup(new)
        idx = self._last_move.get(ntid) if ntid is not None else None
        if idx is not None and idx < len(self.raw) and self.raw[idx][TID] == ntid:
            kind, mfunc, _, _, mwhere, module, lasti, extra = self.raw[idx]
            self.raw[idx] = (kind, mfunc, tid, self.meta(target), mwhere, module, lasti, (tid, extra[1], True))
            self.merged.add(ntid)
            return
        after = self.meta(target)
        if after[1] != before[1] or after[2] != before[2]:
            self._add("move", func, tid, after, where, (tid, before, True), (target,))
        else:
            self._add("inplace", func, tid, after, where, (before[5], ()), (target,))

    def record_numpy(self, func: Any, t: Tensor, where: Any) -> None:
        tid = self.see(t, where)
        self._add("numpy", func, tid, self.meta(t), where, None, (t,))
