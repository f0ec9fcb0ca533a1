"""The tracker's part for compiled calls: one "compiled" record per call (``compiled.py`` says
what is seen and why).  Shared by both engines: the compiled one reaches it through the same
Python line finder (``csrc/lookup.c`` hands a compiled graph's frame to ``LineFinder.find``) and
through Dynamo's hooks (``compiled_entry.py``)."""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from .compiled import INSIDE_COMPILED, compiled_module, compiled_name, is_disable_wrapper, tensors_of, wrapper_frame
from .compiled_graphs import entry_code, first_frame, graphs_and_ops, is_dynamo_code
from .identity import _ids, assign_ref

if TYPE_CHECKING:
    from .tracker import Tracker

#: compiled calls whose outputs are not read yet, at most (each holds one frame: see ``compiled.py``)
MAX_OPEN = 8
#: compiled code a block keeps the name and graphs of
MAX_INFOS = 64


class _Call:
    """An open compiled call: its raw record's index (-1 when not recorded yet, -2 when folded
    past ``max_events``), Dynamo's ``compile_wrapper`` frame, and the record's parts."""

    __slots__ = ("idx", "wrapper", "name", "where", "in_refs", "module", "info", "compile_id")

    def __init__(self, wrapper: FrameType, name: str, where: Any, in_refs: tuple[Any, ...], module: str | None) -> None:
        self.idx = -1
        self.wrapper = wrapper
        self.name = name
        self.where = where
        self.in_refs = in_refs
        self.module = module
        self.info: tuple[int | None, tuple[str, ...]] | None = None
        #: the compile this call's code came from, when the call compiled it (its cache entry
        #: is added after the call started: the graphs are read when the call is closed)
        self.compile_id: str | None = None

    def graphs(self) -> tuple[int | None, tuple[str, ...]]:
        return self.info if self.info is not None else (None, ())


class CompiledCalls:
    """Mixin of ``Tracker``: opens a compiled call when it starts (Dynamo's hooks) or at its
    graph's first recorded torch call, and reads its outputs once it has returned.

    The raw record (``raw.py``'s layout): kind "compiled", op the compiled function's or module's
    name, tid/meta the first output (the first input until the outputs are read), extra
    ``(inputs, outputs, graphs, ops)``, where inputs and outputs are ``(tid, meta)`` pairs taken
    when the call began and when it was read."""

    _open_calls: list[_Call]
    #: (id(fn), id(transformed code)) -> (fn, code, (graphs, ops))
    _compiled_infos: dict[tuple[int, int], tuple[Any, Any, tuple[int, tuple[str, ...]]]]
    #: id(fn) -> (fn, name, the module it calls, (code, globals) of its first compiled frame)
    _compiled_fns: dict[int, tuple[Any, str, Any, tuple[Any, dict[str, Any]] | None]]

    def open_compiled(self: Tracker, frame: FrameType, graph: bool = True, cache_hit: bool | None = None,
                      compile_id: str | None = None) -> FrameType | None:  # fmt: skip
        """A frame below Dynamo's ``compile_wrapper``: a compiled graph's frame that makes a
        recorded torch call (``graph``), or the caller of a frame Dynamo is about to run
        (``cache_hit``: its compiled code was found; ``compile_id``: it was just compiled).
        Returns the ``compile_wrapper`` frame (None: an FX module run without torch.compile),
        recording the call the first time it is met."""
        if graph and is_disable_wrapper(frame.f_code):
            caller = frame.f_back  # a graph's runtime (AOTAutograd) if Dynamo's code called it
            if caller is None or not is_dynamo_code(caller.f_code):
                return None
        opened = tuple(c.wrapper for c in self._open_calls)
        w = wrapper_frame(frame, opened)
        if w is None:
            return None
        if w in opened:  # a call already open: its graph's next op, a frame after a graph break
            if graph or compile_id is not None:
                call = self._open_calls[opened.index(w)]
                if call.info is None:
                    if graph:
                        call.info = self._graph_info(w, frame)
                    else:
                        call.compile_id = call.compile_id or compile_id
            return w
        if self._open_calls:  # calls that have returned: their outputs before this call's inputs
            # one not around this call has ended, with a result or an exception (then it has none)
            self.close_compiled(ended=[c.wrapper for c in self._open_calls if not _runs_under(w, c.wrapper)])
        where = self.lines.find(w.f_back)
        if where is INSIDE_COMPILED:
            return w  # a compiled call inside another's graph: part of the outer call's event
        if len(self._open_calls) >= MAX_OPEN:
            self.close_compiled(final=True)
        loc = w.f_locals
        fn = loc.get("fn")
        ins: list[torch.Tensor] = []
        tensors_of(loc.get("args", ()), ins)
        tensors_of(loc.get("kwargs", None) or {}, ins)
        del loc
        in_refs = tuple((self.see(t, where), self.meta(t)) for t in ins)
        name, target, _first = self._fn_info(fn)
        call = _Call(w, name, where, in_refs, self._outer_module(target) if self.modules._stack else None)
        if graph:
            call.info = self._graph_info(w, frame)
        elif cache_hit:  # Dynamo's lookup has just put the entry this call runs first
            call.info = self._entry_info(fn, None)
        else:
            call.compile_id = compile_id
        if in_refs:
            call.idx = self._put_compiled(call, in_refs[0], ())
            if call.idx < 0:
                call.idx = -2
        self._open_calls.append(call)
        return w

    def _graph_info(self: Tracker, w: FrameType, graph_frame: FrameType) -> tuple[int, tuple[str, ...]] | None:
        """(graphs, ops) of the code a running call runs: the outermost frame below ``compile_wrapper``
        that runs Dynamo's code (frames Dynamo skips, ``Module.__call__``, can come first)."""
        top = None
        f: FrameType | None = graph_frame
        while f is not None and f is not w:
            if is_dynamo_code(f.f_code):
                top = f
            f = f.f_back
        if top is None:
            return None
        return self._cached_info(w.f_locals.get("fn"), top.f_code, top.f_globals)

    def _fn_info(self: Tracker, fn: Any) -> tuple[str, Any, tuple[Any, dict[str, Any]] | None]:
        """The compiled callable's name, the module it calls (or None), and the first frame's
        (code, globals) Dynamo compiles for it: once per callable and block (a training loop calls
        the same compiled step again and again; finding the code costs µs)."""
        got = self._compiled_fns.get(id(fn))
        if got is not None and got[0] is fn and got[3] is not None:
            return got[1], got[2], got[3]
        info = (fn, compiled_name(fn), compiled_module(fn), first_frame(fn))
        if len(self._compiled_fns) < MAX_INFOS:  # the entries hold fn: alive until the block ends
            self._compiled_fns[id(fn)] = info
        return info[1], info[2], info[3]

    def _entry_info(self: Tracker, fn: Any, compile_id: str | None) -> tuple[int, tuple[str, ...]] | None:
        """(graphs, ops) from Dynamo's cache entries (``compiled_graphs.py``); None where none is found."""
        first = self._fn_info(fn)[2]
        code = None if first is None else entry_code(first[0], compile_id)
        return None if code is None else self._cached_info(fn, code, first[1])

    def _cached_info(self: Tracker, fn: Any, code: Any, globs: dict[str, Any]) -> tuple[int, tuple[str, ...]]:
        """Once per compiled code and block: a training loop calls the same compiled step again and again."""
        key = (id(fn), id(code))
        got = self._compiled_infos.get(key)
        if got is not None and got[0] is fn and got[1] is code:
            return got[2]
        info = graphs_and_ops(code, globs)
        if len(self._compiled_infos) < MAX_INFOS:  # the entries hold fn and code: alive until the block ends
            self._compiled_infos[key] = (fn, code, info)
        return info

    def _put_compiled(self: Tracker, call: _Call, first: tuple[int, Any], outs: tuple[Any, ...]) -> int:
        """Append the record; its index, or -1 when folding past ``max_events`` left it out."""
        raw = self.raw
        n = len(raw)
        graphs, ops = call.graphs()
        self._add("compiled", call.name, first[0], first[1], call.where, (call.in_refs, outs, graphs, ops), ())
        if len(raw) == n:
            return -1
        r = raw[n]
        raw[n] = (*r[:5], call.module, *r[6:])  # the module the call was made in, not the graph's own
        return n

    def _outer_module(self: Tracker, target: Any) -> str | None:
        """The module path the compiled call was made in: the module stack up to the compiled
        module ``target``, an ``OptimizedModule`` or the graph's own ``GraphModule``."""
        fx = sys.modules.get("torch.fx")
        skip = tuple(t for t in (_optimized_module(), getattr(fx, "GraphModule", None)) if t is not None)
        path = None
        for mod, p in self.modules._stack:
            if mod is target or skip and isinstance(mod, skip):
                break
            path = p
        return path

    def close_compiled(self: Tracker, final: bool = False, ended: list[FrameType] | None = None) -> bool:
        """Read the outputs of every open call that has returned (``final``: drop them all, the
        block is ending; ``ended``: these calls are known to have ended); whether a tensor was
        registered."""
        added = False
        keep = []
        for call in self._open_calls:
            loc = call.wrapper.f_locals
            if "result" not in loc and not final and not (ended and call.wrapper in ended):
                keep.append(call)
                continue
            outs: list[torch.Tensor] = []
            tensors_of(loc.get("result"), outs)
            if call.info is None and call.compile_id is not None:
                call.info = self._entry_info(loc.get("fn"), call.compile_id)
            del loc
            added = self._fill_compiled(call, outs) or added
        self._open_calls = keep
        return added

    def _fill_compiled(self: Tracker, call: _Call, outs: list[torch.Tensor]) -> bool:
        idx = call.idx
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
        graphs, ops = call.graphs()
        if idx == len(self.raw):
            if self._put_compiled(call, out_refs[0], tuple(out_refs)) < 0:
                return added
        elif idx < len(self.raw) and self.raw[idx][0] == "compiled":
            r = self.raw[idx]
            first = out_refs[0] if out_refs else (r[2], r[3])
            self.raw[idx] = (r[0], r[1], first[0], first[1], r[4], r[5], r[6], (call.in_refs, tuple(out_refs), graphs, ops))
        return added


def _runs_under(frame: FrameType, outer: FrameType) -> bool:
    """Whether ``outer`` is on ``frame``'s stack (a call still running around it)."""
    f = frame.f_back
    while f is not None:
        if f is outer:
            return True
        f = f.f_back
    return False


def _optimized_module() -> Any:
    ev = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(ev, "OptimizedModule", None)
