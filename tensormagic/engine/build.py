"""Turns a Tracker's raw records into a Recording when the block ends: names, lines, refs."""

from __future__ import annotations

import gc
from collections import Counter
from contextlib import contextmanager
from dataclasses import fields
from itertools import compress, repeat
from operator import contains, itemgetter
from typing import Any, Callable, Iterator, Mapping

import torch

from ..model.events import SEEN, Event, Fold, GradRecord, TensorRef
from ..model.fastinit import fast_constructor
from ..model.recording import Recording, Tally, TensorRecord, attach_events, set_before
from . import statements
from .aliases import AliasProof, aliases, storages_of
from .event_notes import NOT_KNOWN, note_applied, note_backward, note_grads_in_place, place_seen, seen_note
from .ops import op_name
from .raw import EXTRA, FUNC, KIND, META, MODULE, TID, WHERE, create_parts
from .snapshot import NO_OP, Snapshot, module_resolver, take_snapshot
from .source import Locator
from .tracker import Tracker

# The build makes one Event per record and a TensorRef per snapshot: half the cost of the
# frozen dataclasses' own __init__ (see fastinit), same objects.
_event = fast_constructor(Event)
_tensor_ref = fast_constructor(TensorRef)
_grad_record = fast_constructor(GradRecord)

# One string per dtype / device, shared by every TensorRef: ~90 B per event less to keep.
_dtype_names: dict[Any, str] = {}
_device_names: dict[Any, str] = {}


def _dtype(d: Any) -> str:
    name = _dtype_names.get(d)
    if name is None:
        name = _dtype_names[d] = str(d).removeprefix("torch.")
    return name


def _device(d: Any) -> str:
    name = _device_names.get(d)
    if name is None:
        name = _device_names[d] = str(d)
    return name


class _Refs:
    """Builds TensorRefs, sharing one object per (tensor, metadata snapshot) (``csrc/snapshots.c``'s
    ``tmh_b_ref`` is the compiled twin)."""

    def __init__(self, tr: Tracker, names: dict[int, tuple[str, ...]]) -> None:
        self.tr = tr
        self.names = names
        # tid -> (meta, its TensorRef): metas are interned, and a tensor is mostly looked up with
        # the snapshot it was last seen with
        self.cache: dict[int, tuple[Any, TensorRef]] = {}
        self.older: dict[tuple[int, int], TensorRef] = {}

    def ref(self, tid: int, meta: Any) -> TensorRef:
        ent = self.cache.get(tid)
        if ent is not None and ent[0] is meta:
            return ent[1]
        key = (tid, id(meta))
        r = self.older.get(key)
        if r is None:
            info = self.tr.tensors.get(tid)
            sid = info[2] if info is not None else None
            gf = meta[4]
            dtype = _dtype_names.get(meta[1]) or _dtype(meta[1])
            device = _device_names.get(meta[2]) or _device(meta[2])
            # positional, in TensorRef's field order: id, storage_id, names, shape, dtype, device,
            # requires_grad, is_leaf, grad_fn, version
            r = _tensor_ref(f"t{tid}", None if sid is None else f"s{sid}", self.names.get(tid, ()),
                            tuple(meta[0]), dtype, device, bool(meta[3]), gf is None, gf, int(meta[5]))  # fmt: skip
            self.older[key] = r
        self.cache[tid] = (meta, r)
        return r


def build(tr: Tracker, rec: Recording, *, namespace: Mapping[str, Any] | None,
          locator: Locator | None, block: tuple[str, int, int | None] | None,
          compiled: bool = False) -> Recording:  # fmt: skip
    """Fill ``rec`` from the tracker's records (``compiled``: the events are made by
    ``csrc/build.c``'s twin of the Python loop; the engine's choice).

    What depends on the moment the block ends is taken now: names from the namespace, the live
    tensors' final metadata, their autograd graphs and provenance.  The events themselves (about
    10 µs each to build) are made the first time someone reads them, from the raw records."""
    if tr.folds:  # a block past max_events keeps, of the tensors no kept event names, the live ones
        tr.sweep()
    rec.folded_tensors = tr.folded_tensors
    with _gc_paused():
        snap = take_snapshot(tr, rec, namespace=namespace, locator=locator, compiled=compiled)
    rec._pending = Pending(tr, snap, block, compiled)
    return rec


class Pending:
    """A recording's events, made when first read (``Recording._pending``).  ``compiled`` picks
    the builder: tests make one block's events with each and compare them."""

    def __init__(self, tr: Tracker, snap: Snapshot, block: tuple[str, int, int | None] | None,
                 compiled: bool) -> None:  # fmt: skip
        self.tr = tr
        self.snap = snap
        self.block = block
        self.compiled = compiled
        self._tally: Tally | None = None
        #: what a failed build does instead of raising (``api`` says it once, as a warning): the
        #: events are read by whoever looks at the report, in their own code
        self.on_error: Callable[[Recording, Exception], None] | None = None
        self.failed = False

    def __call__(self, rec: Recording) -> None:
        if self.failed:
            rec._pending = self  # still the counts' source (a read of a field takes it off)
            return
        try:
            _materialize(self.tr, rec, self.snap, self.block, self.compiled)
        except Exception as e:
            if self.on_error is None:
                raise
            # the counts still come from the records (tally), and the build is not tried again
            self.failed = True
            rec._pending = self
            self.on_error(rec, e)

    def tally(self) -> Tally:
        """What the summary line counts, from the raw records without making the events (one
        event per record, of the record's kind; a terminal's %trackgrad on line needs no more).
        Counted once: the records no longer change after the block."""
        if self._tally is None:
            self._tally = self._count()
        return self._tally

    def _count(self) -> Tally:
        raw = self.tr.raw
        # every cell pays this for its summary line: the kinds counted (first-seen order, as a
        # loop would make), the rare moves looked at only where there are some
        counts: dict[str, int]
        if self.compiled:  # csrc/blockend.c: the same pass in C
            from . import _hotpath

            counts, seen = _hotpath.kind_counts(raw, _first_seen_extra)
        else:
            counts, seen = _kind_counts(raw)
        if seen:  # as Recording.counts: a tensor no op made is first seen, not created
            counts["create"] -= seen
            counts[SEEN] = seen
        moves = casts = moved = 0
        if "move" in counts:
            for r in raw:
                if r[KIND] != "move":
                    continue
                meta, smeta = r[META], r[EXTRA][1]
                if _device(smeta[2]) != _device(meta[2]):
                    moves += 1
                    moved += _nbytes(meta) or 0
                else:
                    casts += 1
        folded_moves = 0
        for (_w, _f, kind), n in self.tr.folds.items():
            counts[kind] = counts.get(kind, 0) + n
            folded_moves += n if kind == "move" else 0
        return Tally(counts, moves, casts, folded_moves, moved)


def _kind_counts(raw: list[Any]) -> tuple[dict[str, int], int]:
    """Each kind's records, in first-met order, and how many creates are first sightings
    (``csrc/blockend.c``'s ``kind_counts`` is the compiled twin)."""
    kinds = list(map(itemgetter(KIND), raw))
    counts: dict[str, int] = dict(Counter(kinds))
    seen = 0
    if counts.get("create"):
        extras = list(map(itemgetter(EXTRA), compress(raw, map("create".__eq__, kinds))))
        # an op's create holds only input ids, a first-seen one (ids, "seen", note): the test at
        # C speed, create_parts' look only at the extras that hold the word
        seen = sum(map(_first_seen_extra, compress(extras, map(contains, extras, repeat("seen")))))
    return counts, seen


def _first_seen_extra(extra: Any) -> bool:
    """``Event.first_seen`` of a create record's extra: origin "seen", not a gradient backward
    filled (its raw note is "grad"; the event's, "gradient of …")."""
    _ids, origin, note = create_parts(extra)
    return origin == "seen" and note != "grad"


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Building allocates a few objects per event, none of them in a cycle; letting those
    # allocations trigger collections would re-walk every live object many times over (about
    # 40% of the build of a 10,000-event block).
    gc_was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc_was:
            gc.enable()


def _materialize(tr: Tracker, rec: Recording, snap: Snapshot, block: tuple[str, int, int | None] | None,
                 compiled: bool) -> None:  # fmt: skip
    with _gc_paused():
        _events(tr, rec, snap, block, compiled)


def _events(tr: Tracker, rec: Recording, snap: Snapshot, block: tuple[str, int, int | None] | None,
            compiled: bool) -> None:  # fmt: skip
    place, raw = snap.place, tr.raw
    snap.name_dead(raw)
    module_of = module_resolver(snap.roots)
    state: dict[int, Any] = {tid: info[1] for tid, info in tr.tensors.items()}
    proof = AliasProof(raw, set(snap.final))
    refs: Any
    if compiled:
        refs = _compiled_builder(tr, snap.names, state, place, module_of, proof)
        events = refs.events(raw, tr.times)
    else:
        refs = _Refs(tr, snap.names)
        events = _python_events(tr, refs, state, place, module_of, proof)
    if snap.applied:
        note_applied(events, snap.applied, {tid: tr.tensors[tid][3] for tid in snap.applied})
    if tr.backwards:
        note_grads_in_place(events, tr.backwards, lambda tid: tr.tensors[tid][3] if tid in tr.tensors else NOT_KNOWN)
    if tr.backward_spans:
        note_backward(events, tr.backward_spans, place, rec.cell)
    events = place_seen(events, block, place)
    rec.events = tuple(events)
    rec.folds = tuple(
        Fold(kind=k, op=op_name(f) if f is not None else "?", line=place(w)[2], source=place(w)[3],
             cell=place(w)[0], file=place(w)[1], count=n)  # fmt: skip
        for (w, f, k), n in tr.folds.items()
    )
    final = refs.final_refs(snap.final) if compiled else _final_refs(tr, refs, state, snap.final)
    rec._final_refs = final
    # TensorRecords (and which events touched each) are made when first read: a log needs only
    # the final snapshots
    rec._pending_tensors = lambda r: _tensor_records(tr, final, r.events, snap.before, r.histories)


def _compiled_builder(tr: Tracker, names: dict[int, tuple[str, ...]], state: dict[int, Any], place: Any,
                      module_of: Any, proof: AliasProof) -> Any:  # fmt: skip
    """``csrc/build.c``'s EventBuilder: ``_python_events``, ``_Refs.ref``, ``aliases.storages_of`` and
    ``_final_refs`` in one C object (tests/test_build_twins.py holds them equal)."""
    from . import _hotpath

    return _hotpath.EventBuilder(
        tensors=tr.tensors, names=names, state=state, merged=tr.merged, stats_at=tr.stats_at,
        place=place, place_cache=place.cache, module_of=module_of, module_cache=module_of.cache,
        dtype=_dtype, dtype_names=_dtype_names, device=_device, device_names=_device_names,
        ref_maker=_tensor_ref, grad_maker=_grad_record, event_maker=_event,
        event_fields=tuple(f.name for f in fields(Event)), event_defaults=_EVENT_DEFAULTS,
        seen_note=seen_note, unseen_maker=statements.unseen_maker,
        other_kw=_other_kw, alias_proof=proof,
    )  # fmt: skip


# Event's defaults, in field order: the compiled builder passes every field positionally (it
# always gives the required ones, whose default here is dataclasses.MISSING)
_EVENT_DEFAULTS = tuple(f.default for f in fields(Event))


def _python_events(tr: Tracker, refs: _Refs, state: dict[int, Any], place: Any, module_of: Any,
                   proof: AliasProof) -> list[Event]:  # fmt: skip
    """One Event per raw record (``csrc/build.c``'s ``EventBuilder.events`` is its twin)."""
    raw, times, cache = tr.raw, tr.times, refs.cache

    def ref_all(ids: Any) -> tuple[TensorRef, ...]:
        out = []
        for t in ids:
            m = state.get(t)
            if m is not None:
                ent = cache.get(t)  # _Refs.ref's first check, inline: most inputs hit it
                out.append(ent[1] if ent is not None and ent[0] is m else refs.ref(t, m))
        return tuple(out)

    events: list[Event] = []
    by_storage: dict[int, list[tuple[int, list[Any]]]] | None = None  # built at the first in-place write
    for i, r in enumerate(raw):
        kind, tid, meta, extra = r[KIND], r[TID], r[META], r[EXTRA]
        cell, fn, line, src = place(r[WHERE])
        op = r[FUNC]  # records keep the op's name (or None)
        kw: dict[str, Any] = {}
        if kind == "create":
            in_ids, origin, note = create_parts(extra)
            kw["inputs"] = ref_all(in_ids)
            kw["origin"] = origin
            if origin == "seen":
                if op is None:
                    op = statements.unseen_maker(src) or NO_OP
                kw["note"] = seen_note(op, note, kw["inputs"])
        elif kind == "view":
            kw["base"] = refs.ref(extra, state[extra])
        elif kind == "inplace":
            v0, in_ids = extra[0], extra[1:]
            kw["version_before"], kw["version_after"] = v0, int(meta[5])
            kw["inputs"] = ref_all(in_ids)
            if by_storage is None:
                by_storage = storages_of(tr)
            kw["aliases"] = aliases(tr, refs, state, tid, i, by_storage, proof)
        elif kind == "backward":
            kw["grads"] = tuple(
                _grad_record(refs.ref(ltid, lmeta), tuple(gmeta[0]), _dtype(gmeta[1]), acc, f"t{gtid}")
                for ltid, lmeta, acc, gtid in extra
                for gmeta in (tr.tensors[gtid][1],)
            )  # positional, in GradRecord's field order: tensor, shape, dtype, accumulated, grad_id
        else:
            kw = _other_kw(refs, r)
        state[tid] = meta
        ent = cache.get(tid)
        events.append(_event(seq=i, kind=kind, op=op or "?", line=line, source=src, cell=cell, file=fn,
                             tensor=ent[1] if ent is not None and ent[0] is meta else refs.ref(tid, meta),
                             module=module_of(r[MODULE]), time_us=times[i] / 1000.0, stats=tr.stats_at.get(i),
                             **kw))  # fmt: skip
    return events


def _other_kw(refs: Any, r: tuple[Any, ...]) -> dict[str, Any]:
    """The fields of a record of the kinds both builders leave to Python: a move (rare: one per
    ``.to()``), a compiled call (one per call), a NumPy bridge (no fields of its own)."""
    if r[KIND] == "compiled":
        ins, outs, graphs, ops = r[EXTRA]
        return dict(inputs=tuple(refs.ref(t, m) for t, m in ins), outputs=tuple(refs.ref(t, m) for t, m in outs),
                    graphs=graphs, graph_ops=ops)  # fmt: skip
    if r[KIND] != "move":
        return {}
    meta, extra = r[META], r[EXTRA]
    stid, smeta, inplace = extra[0], extra[1], extra[2]
    kw = dict(source_tensor=refs.ref(stid, smeta), from_device=_device(smeta[2]), to_device=_device(meta[2]),
              from_dtype=_dtype(smeta[1]), to_dtype=_dtype(meta[1]), inplace=inplace, nbytes=_nbytes(meta))  # fmt: skip
    if len(extra) > 3:
        kw["version_before"], kw["version_after"] = extra[3], int(meta[5])
    return kw


_itemsize: dict[Any, int] = {}


def _nbytes(meta: Any) -> int | None:
    """The bytes a snapshot's elements take; None where its shape or dtype could not be read."""
    n = 1
    for s in meta[0]:
        if type(s) is not int:
            return None  # an irregular (nested) dimension
        n *= s
    size = _itemsize.get(meta[1])
    if size is None:  # one meta tensor per dtype, not per move
        if not isinstance(meta[1], torch.dtype):
            return None
        size = _itemsize[meta[1]] = torch.empty((), dtype=meta[1], device="meta").element_size()
    return n * size


def _final_refs(tr: Tracker, refs: _Refs, state: dict[int, Any], final: dict[int, Any]) -> dict[str, TensorRef]:
    """Each tensor's snapshot when the block ended: its live metadata then, else its last event's
    (``EventBuilder.final_refs`` is the compiled twin)."""
    out: dict[str, TensorRef] = {}
    for tid, info in tr.tensors.items():
        if tid in tr.merged:
            continue
        ref = refs.ref(tid, final.get(tid) or state.get(tid, info[1]))
        out[ref.id] = ref
    return out


def _tensor_records(tr: Tracker, final: dict[str, TensorRef], events: tuple[Event, ...],
                    before: dict[int, Any], histories: dict[str, str]) -> dict[str, TensorRecord]:  # fmt: skip
    recs: dict[str, TensorRecord] = {}
    for rid, ref in final.items():
        recs[rid] = TensorRecord(id=rid, names=ref.names, ref=ref, _weak=tr.ref(int(rid[1:])))
    attach_events(recs, events)
    return set_before(recs, {f"t{tid}": made for tid, made in before.items()}, histories)
