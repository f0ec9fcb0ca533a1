"""The hot path's bookkeeping: torch calls (routed here by ``mode.TrackMode``) become compact raw records.

Nothing here formats strings or builds event objects: a raw record is a tuple of the objects
at hand (the op's name, a metadata tuple, the frame's filename and line), and ``build.py``
turns them into events when the block ends.  An op that makes one new tensor from tensors the
block knows (most of them) takes one straight function, ``Tracker._created``.
"""

from __future__ import annotations

import time
from array import array
from typing import Any, Callable

import torch

from . import describe, identity
from .backward import BackwardRecords, note_retained
from .compiled import INSIDE_COMPILED
from .compiled_calls import CompiledCalls
from .describe import PLAIN
from .identity import Ref, _ids, assign_ref, ref_of, storage_key
from .modules import ModuleStack
from .op_records import OpRecords
from .raw import EXTRA, FUNC, HOOKED_KINDS, KIND, TID, WHERE, _gf_name, _name, create_parts, quiet
from .rebuilt import RebuiltTensors
from .source import LineFinder, called_directly, local_holding

Tensor = torch.Tensor
_now = time.perf_counter_ns


def _on(t: Tensor | None, key: int) -> bool:
    """Whether ``t`` is alive and on the storage at ``key`` (``set_`` moves a tensor to another)."""
    return t is not None and storage_key(t) == key


FOLD_AFTER = 3  # past max_events, a (line, op, kind) seen this often is counted, not stored
#: folded records between two sweeps of the tables (at least; ``max_events`` if larger): what a
#: long folded block holds beyond its kept records is about this many dead tensors' entries
SWEEP_EVERY = 10_000
#: tensors first met in a function named by the local holding them (bounded, as module paths are)
MAX_SEEN_LOCALS = 10_000


class Tracker(OpRecords, BackwardRecords, RebuiltTensors, CompiledCalls):
    """Collects raw records for one block; ``build.build`` turns them into a Recording."""

    def __init__(self, *, stats: bool = False, max_events: int = 20_000) -> None:
        self.stats = stats
        self.max_events = max_events
        # _created stores records only below this length: past it, folding (or stats) decides
        self._fast_cap = 0 if stats else max_events
        self.raw: list[tuple[Any, ...]] = []
        self.times = array("q")  # raw[i] began at times[i] ns after t0
        #: tid -> (id() key, first meta, storage id, first raw index or None); see ``ref``
        self.tensors: dict[int, tuple[Any, ...]] = {}
        self.sid_of_key: dict[int, int] = {}
        self.preexisting: set[int] = set()
        #: tid -> (local variable, function) holding a tensor first met as an input of an op its
        #: function's line called (``g`` in a custom Function's ``backward``): its name where no
        #: other says one (``snapshot._name_seen_locals``)
        self.seen_locals: dict[int, tuple[str, str]] = {}
        self.merged: set[int] = set()  # temporaries whose move was re-targeted to a parameter
        self.folds: dict[tuple[Any, ...], int] = {}
        self._fold_counts: dict[tuple[Any, ...], int] | None = None
        #: tensors whose every record was folded and that died: counted, no longer held (see ``sweep``)
        self.folded_tensors = 0
        self._folded_since_sweep = 0
        self._metas: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._grad_extras: dict[int, tuple[Any, ...]] = {}
        self._inputs: dict[tuple[int, ...], tuple[int, ...]] = {}  # input ids that no op of the block made
        self.stats_at: dict[int, Any] = {}
        self.lines = LineFinder()
        self._open_calls = []  # compiled calls whose outputs are not read yet (CompiledCalls)
        self._compiled_infos = {}
        self._compiled_fns = {}
        self.lines.on_graph = self.open_compiled
        self.modules = ModuleStack(max_outputs=max_events)
        self.t0 = time.perf_counter_ns()
        self._last_move: dict[int, int] = {}
        self.backwards: list[int] = []  # raw indices of the backward records (the end of block looks)
        #: (first, end) raw indices of records made while backward's engine ran, the call's op and place
        self.backward_spans: list[tuple[int, int, str, Any]] = []
        #: ids of tensors a factory made empty, (0,): unpickling, ``torch.load`` and DataLoader
        #: workers' batches fill such a tensor by ``set_``, which no function mode sees.  The
        #: next op the block records, or the block's end, looks again (``recheck``).
        self.suspects: set[int] = set()
        self.internal_error: BaseException | None = None
        #: whether the block's end adds to each live tensor's history across blocks (``history.py``)
        self.keep_history = False
        # Extension points (diagnostics): called only when non-empty.  A record hook sees the
        # records ops make while they run (HOOKED_KINDS), not the backward or NumPy-bridge ones.
        self.record_hooks: list[Callable[[Tracker, int, tuple[Tensor, ...]], None]] = []
        #: op name -> QUIET_ONE or QUIET_ANY: the create records of that op the record hooks have
        #: said they need not see (see ``quiet``); the hot path then skips the call.  Filled and
        #: cleared by the hooks' owner (diagnostics), never replaced while recording (the compiled
        #: engine holds it).
        self.quiet_creates: dict[str, int] = {}
        #: which in-place records the record hooks need: None every one, False none, else an object
        #: whose ``needs(raw index, tid, tensor)`` says (both engines ask it; the compiled one
        #: takes it at construction, so it is set before the block starts).
        self.write_gate: Any = None
        self.error_hooks: list[Callable[..., None]] = []
        # call_watch: op name -> watch(tracker, func, args, where), called before the op runs;
        # ``where`` is a zero-argument callable (the frame walk costs µs: only pay it when needed).
        # A watch with ``non_leaf_only = True`` is called only when the first argument is a tensor
        # that is neither a leaf nor retains its grad (both engines test that themselves).
        self.call_watch: dict[str, Callable[[Tracker, Any, tuple[Any, ...], Callable[[], Any]], None]] = {
            "torch.Tensor.retain_grad": note_retained}  # fmt: skip
        self.retained: list[Any] = []  # weak references to the tensors retain_grad() was called on

    def finish(self) -> None:
        """The block has ended: drop what only recording needed (the recording keeps this
        tracker's records and tensors for its lazy events, not its lookup tables and hooks)."""
        self.record_hooks.clear()
        self.error_hooks.clear()
        self.lines.on_graph = None
        self._open_calls = []
        self._compiled_infos = {}
        self._compiled_fns = {}
        self.call_watch.clear()
        self.sid_of_key = {}
        self._metas = {}
        self._shapes = {}
        self._grad_extras = {}
        self._inputs = {}
        self._fold_counts = None
        self.quiet_creates = {}
        self.write_gate = None
        self._last_move = {}
        self.preexisting = set()
        self.seen_locals = {}
        self.retained = []

    # -- tensors -----------------------------------------------------------------------------
    def ref(self, tid: int) -> Ref | None:
        """The weak reference of a tensor this block knows; None if it is unknown or has died."""
        info = self.tensors.get(tid)
        return None if info is None else ref_of(info[0], tid)

    def alive(self, tid: int) -> Tensor | None:
        """A tensor this block knows, if it is still alive."""
        ref = self.ref(tid)
        return None if ref is None else ref()

    def live_tensors(self) -> list[tuple[int, Tensor]]:
        """The block's tensors still alive at its end, (tid, tensor), without the merged ones.

        A dead tensor's entry drops its ``id()`` key on the way (that key can find nothing any
        more: 32 B a tensor).  The compiled engine replaces this method with the same loop in C
        (``_hotpath.live_tensors``): a long block ends with 10,000s of tensors here."""
        live: list[tuple[int, Tensor]] = []
        get, tensors, merged = identity._ids.get, self.tensors, self.merged
        for tid, info in tensors.items():
            ref = get(info[0])  # ``ref_of`` inline
            if ref is not None and ref.tid == tid:
                t = ref()
                if t is not None:
                    if tid not in merged:
                        live.append((tid, t))
                    continue
            if info[0] is not None:
                tensors[tid] = (None, *info[1:])
        return live

    def meta(self, t: Tensor) -> tuple[Any, ...]:
        """``t``'s metadata, interned: equal snapshots share one tuple.  A tensor whose reads
        could fail or run a subclass's code is read by ``describe.meta`` (never raises)."""
        if type(t) in PLAIN:
            try:
                gf = t.grad_fn
                m = (t.shape, t.dtype, t.device, t.requires_grad, None if gf is None else _gf_name(gf), t._version)
            except Exception:  # noqa: BLE001 - an inference tensor's version, a nested tensor's shape
                m = describe.meta(t)
        else:
            m = describe.meta(t)
        got = self._metas.get(m)
        return got if got is not None else self._intern(m)

    def _intern(self, m: tuple[Any, ...]) -> tuple[Any, ...]:
        # The stored copy holds a plain tuple for the shape, not the torch.Size (equal, same hash):
        # the collector then stops tracking every record that holds it.
        # Shapes are shared too: a parameter gets a new meta at each optimizer step (its version).
        shape = self._shapes.get(m[0])  # a torch.Size finds its equal tuple
        if shape is None:
            shape = tuple(m[0])
            self._shapes[shape] = shape
        got = (shape, *m[1:])
        self._metas[got] = got
        return got

    def grad_extra(self, ltid: int) -> tuple[Any, ...]:
        """The extra of a gradient's "seen" create record, one per leaf (a loop makes many)."""
        extra = self._grad_extras.get(ltid)
        if extra is None:
            extra = self._grad_extras[ltid] = ((ltid,), "seen", "grad")
        return extra

    def mark_preexisting(self, t: Tensor) -> None:
        self.preexisting.add(assign_ref(t).tid)

    def see(self, t: Tensor, where: Any, at_end: bool = False) -> int:
        """The id of an input tensor; its first sight in the block is remembered (``at_end``: by
        the block's end, bound to a name, with no line of its own)."""
        ref = _ids.get(id(t))
        if ref is not None and ref() is t:
            tid = ref.tid
            if tid in self.tensors:
                return tid  # the common case: an input this block already knows
            fresh = False
        elif self._open_calls and self.close_compiled():
            return self.see(t, where)  # a compiled call's output, registered now (or still unknown)
        else:
            tid = assign_ref(t).tid
            fresh = True
        meta = self.meta(t)
        self.tensors[tid] = (id(t), meta, self._storage(t, tid, new=False, fresh=fresh), None)
        if fresh and tid not in self.preexisting:
            # appeared without an op the mode can see (from_numpy, Parameter(t), torch.load…);
            # "direct": handed to the op by the line itself, so the line's source may name it
            f = None if at_end else called_directly(where)
            note = "end" if at_end else "direct" if f is not None else None
            if f is not None and len(self.seen_locals) < MAX_SEEN_LOCALS:
                # a gradient handed to a hook or a Function's backward has no line of its own
                local = local_holding(f, t)
                if local is not None:
                    self.seen_locals[tid] = local
            del f
            self._add("create", None, tid, meta, where, ((), "seen", note), (t,))
        return tid

    def _storage(self, t: Tensor, tid: int, new: bool, fresh: bool = False) -> int | None:
        """The id of ``t``'s storage: a storage is named after the first tensor seen on it
        (``s7``: the memory ``t7`` brought), which also spares an int object per storage.

        A storage is known by its address, and a dead storage's address is soon another's.  Every
        storage an op makes is named anew (``new``), and one a known tensor is on has been alive
        since that tensor was registered, so only a ``fresh`` tensor (one that appeared without an
        op: ``from_numpy``, ``torch.load``) can meet an address that belonged to a dead storage."""
        key = storage_key(t)
        if key is None:
            return None
        if not new:
            sid = self.sid_of_key.get(key)
            if sid is not None and (not fresh or self._storage_alive(sid, key)):
                return sid
        sid = self.sid_of_key[key] = tid
        return sid

    def _storage_alive(self, sid: int, key: int) -> bool:
        """Whether storage ``sid`` (named at address ``key``) is still the one there: a tensor
        this block registered on it is alive.  Rare (a fresh tensor on a known address)."""
        if _on(self.alive(sid), key):
            return True  # the tensor it is named after (a view keeps its base alive too)
        if identity.storage_users is not None and identity.storage_users(key) <= 1:
            return False  # the fresh tensor is its only user: nothing known shares it
        return any(info[2] == sid and _on(self.alive(tid), key) for tid, info in self.tensors.items())

    def _new(self, t: Tensor, *, alias: bool) -> tuple[int, Any]:
        """Register a tensor an op just made; returns its id and its metadata snapshot."""
        tid = assign_ref(t).tid
        meta = self.meta(t)
        self.tensors[tid] = (id(t), meta, self._storage(t, tid, new=not alias), len(self.raw))
        return tid, meta

    # -- records -----------------------------------------------------------------------------
    def _add(self, kind: str, func: Any, tid: int, meta: Any, where: Any, extra: Any,
             objs: tuple[Tensor, ...]) -> None:  # fmt: skip
        raw = self.raw
        if where is INSIDE_COMPILED or len(raw) >= self.max_events and self._fold(kind, func, where):
            return
        raw.append((kind, _name(func), tid, meta, where, self.modules.current, self.lines.lasti, extra))
        self.times.append(_now() - self.t0)
        if self.stats and objs:
            from .stats import compute_stats

            self.stats_at[len(raw) - 1] = compute_stats(objs[0])
        if self.record_hooks and kind in HOOKED_KINDS:
            if objs and type(objs[0]) not in PLAIN:  # the hooks read it without its subclass's code
                describe.call_unwrapped(self._hooks, kind, tid, meta, extra, objs)
                return
            self._hooks(kind, tid, meta, extra, objs)

    def _hooks(self, kind: str, tid: int, meta: Any, extra: Any, objs: tuple[Tensor, ...]) -> None:
        """The record hooks on the record just added (``_add``), unless quiet or gated."""
        raw = self.raw
        if kind == "create":  # a gradient backward filled in, say: the hooks judged its op already
            if quiet(self.quiet_creates.get(raw[-1][1]), create_parts(extra)[0], meta, self.tensors):
                return
        elif kind == "inplace":
            gate = self.write_gate
            if gate is not None and (gate is False or not gate.needs(len(raw) - 1, tid, objs[0])):
                return
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
            self._folded_since_sweep += 1
            if self._folded_since_sweep >= max(SWEEP_EVERY, self.max_events):
                self.sweep()
            return True
        return False

    def sweep(self) -> None:
        """Past ``max_events``, forget what only folded records knew: a dead tensor that no kept
        record names leaves the tensor table (and becomes a count, ``folded_tensors``), the
        process's id table drops its dead entries, and the lookup tables that only speed up
        recording start over.  Tables are changed in place: the compiled engine holds them.
        Whatever the number of ops, a block then holds its kept records, its live tensors and
        at most one sweep interval of dead ones."""
        self._folded_since_sweep = 0
        named = self._named_by_records()
        identity.prune()
        tensors, get = self.tensors, identity._ids.get
        gone = []
        for tid, info in tensors.items():
            if tid in named or tid in self.preexisting:
                continue
            ref = get(info[0]) if info[0] is not None else None
            if ref is None or ref.tid != tid or ref() is None:
                gone.append(tid)
        for tid in gone:
            del tensors[tid]
        self.folded_tensors += len(gone)
        sids = {info[2] for info in tensors.values()}
        for key in [k for k, sid in self.sid_of_key.items() if sid not in sids]:
            del self.sid_of_key[key]
        for table in (self._last_move, self._grad_extras):
            for tid in [t for t in table if t not in tensors]:
                del table[tid]
        self.merged.intersection_update(tensors)
        self._metas.clear()  # interning caches: the records keep what they interned
        self._shapes.clear()
        self._inputs.clear()

    def _named_by_records(self) -> set[int]:
        """Every tensor id a kept record names: its own, its inputs, base, source, gradients."""
        named: set[int] = set()
        for r in self.raw:
            named.add(r[TID])
            kind, extra = r[KIND], r[EXTRA]
            if kind == "create":
                named.update(create_parts(extra)[0])
            elif kind == "view":
                named.add(extra)
            elif kind == "inplace":
                named.update(x for x in extra[1:] if type(x) is int)  # ``.data =`` keeps a () there
            elif kind == "move":
                named.add(extra[0])
            elif kind == "backward":
                for ltid, _lmeta, _acc, gtid in extra:
                    named.add(ltid)
                    named.add(gtid)
            elif kind == "compiled":
                named.update(tid for tid, _meta in extra[0] + extra[1])
        return named
