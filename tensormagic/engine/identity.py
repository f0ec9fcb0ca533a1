"""Stable tensor ids that outlive a single recording, holding only weak references; the
addresses that tell storages apart (a recording names each storage after the first tensor it
saw on it: ``s7``).

``id(t)`` is reused as soon as a tensor dies, so each Python tensor object gets a counter id
(``t17``) that is never handed out again in this process.  The table is keyed on ``id(t)`` and
checks the weak reference on every hit, which costs less than ``WeakTensorKeyDictionary``.
Dead entries are pruned when a recording ends, so the table tracks the live tensors only.

Each entry is one object, a weak reference that carries its id: a recorded tensor then leaves
one object for the garbage collector to track, not three, which keeps a long block from
triggering full collections (each re-walks every object of the process: ~80 ms with torch loaded).
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch


class Ref(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a tensor that knows the tensor's id."""

    __slots__ = ("tid",)
    tid: int


_ids: dict[int, Ref] = {}
_counter = itertools.count(1)
#: tensor id -> (cell, line, op) where it was first created under tracking; survives across cells.
provenance: dict[int, tuple[int | None, str | None, int | None, str]] = {}
#: tensor id -> its history across tracked blocks (``history.History``), for live tensors only
histories: dict[int, Any] = {}
#: tensor id -> the cell that was running when it was made, where that is not the cell its
#: code is in (a function an earlier cell defined): ``provenance`` gives the code's place
ran_in: dict[int, int] = {}


def lookup(t: Any) -> int | None:
    """The id of a tensor seen before, or None."""
    ref = _ids.get(id(t))
    if ref is not None and ref() is t:
        return ref.tid
    return None


def assign_ref(t: Any) -> Ref:
    """The weak reference (with its id) of ``t``, giving it a fresh id if it has none."""
    key = id(t)
    ref = _ids.get(key)
    if ref is not None and ref() is t:
        return ref
    ref = _ids[key] = Ref(t)
    ref.tid = next(_counter)
    return ref


def ref_of(key: int, tid: int) -> Ref | None:
    """The weak reference of tensor ``tid`` registered under ``key`` (its ``id()``), if that
    entry is still the same tensor's: a dead tensor's key may belong to a newer tensor by now."""
    ref = _ids.get(key)
    return ref if ref is not None and ref.tid == tid else None


def _storage_key_slow(t: Any) -> int:
    return t.untyped_storage()._cdata  # works on meta too, where data_ptr() is always 0


# torch._C._storage_id is the same address as untyped_storage()._cdata, but the first
# untyped_storage() on a fresh tensor builds a Python storage object (~10 µs); this is ~0.1 µs.
#: The address of a tensor's storage object; raises one of ``NO_STORAGE`` for tensors without one.
storage_id: Any = getattr(torch._C, "_storage_id", None) or _storage_key_slow
NO_STORAGE = (RuntimeError, NotImplementedError, TypeError, AttributeError)
#: How many tensors (and storage objects) hold the storage at an address ``storage_id`` gave;
#: None where this torch lacks it.
storage_users: Any = getattr(torch._C, "_storage_Use_Count", None)


def storage_key(t: Any) -> int | None:
    """The address of the tensor's storage object; None for tensors without storage (sparse)."""
    try:
        return storage_id(t)
    except NO_STORAGE:
        return None


def prune(compiled: bool = False) -> None:
    """Forget the tensors that died: the tables never outgrow the live tensors.

    A dead tensor's entry may already be gone from ``_ids``, its ``id()`` key taken by a newer
    tensor: its provenance is found by the sweep over the live ids, not by the key.
    ``compiled``: the two passes over ``_ids`` run in ``csrc/blockend.c`` (the engine's choice)."""
    hot: Any = None
    if compiled:
        from . import _hotpath as hot
    dead = hot.dead_keys(_ids) if hot is not None else [k for k, ref in _ids.items() if ref() is None]
    for k in dead:
        del _ids[k]
    # no dead key does not mean no death: a dead tensor's key may be a newer tensor's by now (the
    # allocator hands its address on), its entry replaced, so any table entry sends for the sweep
    if dead or provenance or histories or ran_in:
        live = hot.live_tids(_ids) if hot is not None else {ref.tid for ref in _ids.values()}
        for table in (provenance, histories, ran_in):
            for tid in [tid for tid in table if tid not in live]:
                del table[tid]


def tensor_id(t: Any) -> str | None:
    """The public id string (``"t17"``) of a tensor tracked before, or None."""
    tid = lookup(t)
    return None if tid is None else f"t{tid}"


def created_where(t: Any) -> tuple[int | None, str | None, int | None, str] | None:
    """(cell, file, line, op) where a live tensor was created under tracking, if known."""
    tid = lookup(t)
    return None if tid is None else provenance.get(tid)
