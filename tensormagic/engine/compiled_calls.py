"""The tracker's part for compiled calls: one "compiled" record per call (``compiled.py`` says
what is seen and why).  Shared by both engines: the compiled one reaches it through the same
Python line finder (``csrc/lookup.c`` hands a compiled graph's frame to ``LineFinder.find``)."""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from .compiled import INSIDE_COMPILED, callee_frame, compiled_name, graphs_and_ops, tensors_of, wrapper_frame
from .identity import _ids, assign_ref

if TYPE_CHECKING:
    from .tracker import Tracker

#: compiled calls whose outputs are not read yet, at most (each holds one frame: see ``compiled.py``)
MAX_OPEN = 8
#: compiled functions a block keeps the name and graphs of
MAX_INFOS = 64


class CompiledCalls:
    """Mixin of ``Tracker``: opens a compiled call at its graph's first recorded torch call and
    reads its outputs once it has returned.

    The raw record (``raw.py``'s layout): kind "compiled", op the compiled function's or module's
    name, tid/meta the first output (the first input until the outputs are read), extra
    ``(inputs, outputs, graphs, ops)``, where inputs and outputs are ``(tid, meta)`` pairs taken
    when the call began and when it was read."""

    #: (raw index, -1 when not recorded yet or -2 when folded, the ``compile_wrapper`` frame, the pending record's parts)
    _open_calls: list[tuple[int, FrameType, tuple[Any, ...]]]
    #: (id(fn), id(compiled code)) -> (fn, code, (name, graphs, ops))
    _compiled_infos: dict[tuple[int, int], tuple[Any, Any, tuple[str, int | None, tuple[str, ...]]]]

    def open_compiled(self: Tracker, graph_frame: FrameType) -> FrameType | None:
        """A torch call from a compiled graph's frame: the ``compile_wrapper`` frame it runs
        under (None: an FX module run without torch.compile), recording the call the first time."""
        opened = tuple(f for _idx, f, _parts in self._open_calls)
        w = wrapper_frame(graph_frame, opened)
        if w is None or w in opened:
            return w  # not compiled, or a call already open (its graph's second op, say)
        if self._open_calls:  # calls that have returned: their outputs before this call's inputs
            outer = set()
            f = w.f_back
            while f is not None:
                outer.add(id(f))
                f = f.f_back
            # one not around this call has ended, with a result or an exception (then it has none)
            self.close_compiled(ended=[f for _i, f, _p in self._open_calls if id(f) not in outer])
        where = self.lines.find(w.f_back)
        if where is INSIDE_COMPILED:
            return w  # a compiled call inside another's graph: part of the outer call's event
        if len(self._open_calls) >= MAX_OPEN:
            self.close_compiled(final=True)
        loc = w.f_locals
        ins: list[torch.Tensor] = []
        tensors_of(loc.get("args", ()), ins)
        tensors_of(loc.get("kwargs", None) or {}, ins)
        in_refs = tuple((self.see(t, where), self.meta(t)) for t in ins)
        name, graphs, ops = self._compiled_info(loc.get("fn"), callee_frame(w, graph_frame))
        parts = (name, where, in_refs, graphs, ops, self._outer_module())
        idx = -1
        if in_refs:
            idx = self._put_compiled(parts, in_refs[0], ())
            if idx < 0:
                idx = -2
        self._open_calls.append((idx, w, parts))
        return w

    def _compiled_info(self: Tracker, fn: Any, callee: FrameType | None) -> tuple[str, int | None, tuple[str, ...]]:
        """(name, graphs, ops) of a compiled function and the compiled code it runs, once per block
        (a training loop calls the same compiled step again and again)."""
        code = callee.f_code if callee is not None else None
        key = (id(fn), id(code))
        got = self._compiled_infos.get(key)
        if got is not None and got[0] is fn and got[1] is code:
            return got[2]
        info = (compiled_name(fn), *graphs_and_ops(callee))
        if len(self._compiled_infos) < MAX_INFOS:  # the entries hold fn and code: alive until the block ends
            self._compiled_infos[key] = (fn, code, info)
        return info

    def _put_compiled(self: Tracker, parts: tuple[Any, ...], first: tuple[int, Any], outs: tuple[Any, ...]) -> int:
        """Append the record; its index, or -1 when folding past ``max_events`` left it out."""
        name, where, in_refs, graphs, ops, module = parts
        raw = self.raw
        n = len(raw)
        self._add("compiled", name, first[0], first[1], where, (in_refs, outs, graphs, ops), ())
        if len(raw) == n:
            return -1
        r = raw[n]
        raw[n] = (*r[:5], module, *r[6:])  # the module the call was made in, not the graph's own
        return n

    def _outer_module(self: Tracker) -> str | None:
        """The module path the compiled call was made in: the module stack up to the compiled
        module (an ``OptimizedModule``) or the graph's own ``GraphModule``."""
        fx = sys.modules.get("torch.fx")
        skip = tuple(t for t in (_optimized_module(), getattr(fx, "GraphModule", None)) if t is not None)
        path = None
        for mod, p in self.modules._stack:
            if skip and isinstance(mod, skip):
                break
            path = p
        return path

    def close_compiled(self: Tracker, final: bool = False, ended: list[FrameType] | None = None) -> bool:
        """Read the outputs of every open call that has returned (``final``: drop them all, the
        block is ending; ``ended``: these calls are known to have ended); whether a tensor was
        registered."""
        added = False
        keep = []
        for idx, w, parts in self._open_calls:
            loc = w.f_locals
            if "result" not in loc and not final and not (ended and w in ended):
                keep.append((idx, w, parts))
                continue
            outs: list[torch.Tensor] = []
            tensors_of(loc.get("result"), outs)
            del loc
            added = self._fill_compiled(idx, parts, outs) or added
        self._open_calls = keep
        return added

    def _fill_compiled(self: Tracker, idx: int, parts: tuple[Any, ...], outs: list[torch.Tensor]) -> bool:
        name, where, in_refs, graphs, ops, _module = parts
        if idx == -2:
            return False  # folded past max_events: its outputs are counted like any folded record's
        if idx < 0 and not outs:
            return False  # no tensor in, none out: nothing to describe
        if idx < 0:
            idx = len(self.raw)
        out_refs = []
        added = False
        for o in outs:
            ref = _ids.get(id(o))
            if ref is not None and ref() is o and ref.tid in self.tensors:
                out_refs.append((ref.tid, self.meta(o)))  # an input handed back, say
                continue
            tid = assign_ref(o).tid
            meta = self.meta(o)
            self.tensors[tid] = (id(o), meta, self._storage(o, tid, new=True), idx)
            out_refs.append((tid, meta))
            added = True
        if idx == len(self.raw):
            if self._put_compiled(parts, out_refs[0], tuple(out_refs)) < 0:
                return added
        elif idx < len(self.raw) and self.raw[idx][0] == "compiled":
            r = self.raw[idx]
            first = out_refs[0] if out_refs else (r[2], r[3])
            self.raw[idx] = (r[0], r[1], first[0], first[1], r[4], r[5], r[6], (in_refs, tuple(out_refs), graphs, ops))
        return added


def _optimized_module() -> Any:
    ev = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(ev, "OptimizedModule", None)
