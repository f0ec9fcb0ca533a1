"""Stable tensor ids and storage ids that outlive a single recording, holding only weak references.

``id(t)`` is reused as soon as a tensor dies, so each Python tensor object gets a counter id
(``t17``) that is never handed out again in this process.  The table is keyed on ``id(t)`` and
checks the weak reference on every hit, which costs less than ``WeakTensorKeyDictionary``.
Dead entries are pruned when a recording ends, so the table tracks the live tensors only.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch

_ids: dict[int, tuple[weakref.ref[Any], int]] = {}
_counter = itertools.count(1)
_storage_counter = itertools.count(1)
#: tensor id -> (cell, line, op) where it was first created under tracking; survives across cells.
provenance: dict[int, tuple[int | None, str | None, int | None, str]] = {}


def lookup(t: Any) -> int | None:
    """The id of a tensor seen before, or None."""
    ent = _ids.get(id(t))
    if ent is not None and ent[0]() is t:
        return ent[1]
    return None


def assign(t: Any) -> int:
    """The id of ``t``, giving it a fresh one if it has none."""
    key = id(t)
    ent = _ids.get(key)
    if ent is not None and ent[0]() is t:
        return ent[1]
    tid = next(_counter)
    _ids[key] = (weakref.ref(t), tid)
    return tid


def assign_ref(t: Any) -> tuple[weakref.ref[Any], int]:
    """(weak reference, id) of ``t``, giving it a fresh id if it has none (the tracker shares the ref)."""
    key = id(t)
    ent = _ids.get(key)
    if ent is not None and ent[0]() is t:
        return ent
    ent = _ids[key] = (weakref.ref(t), next(_counter))
    return ent


def new_storage_id() -> int:
    return next(_storage_counter)


def _storage_key_slow(t: Any) -> int | None:
    try:
        return t.untyped_storage()._cdata  # works on meta too, where data_ptr() is always 0
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


_storage_id = getattr(torch._C, "_storage_id", None)


def storage_key(t: Any) -> int | None:
    """The address of the tensor's storage object; None for tensors without storage (sparse)."""
    # torch._C._storage_id is the same address as untyped_storage()._cdata, but the first
    # untyped_storage() on a fresh tensor builds a Python storage object (~10 µs); this is ~0.2 µs.
    if _storage_id is None:  # pragma: no cover - older torch
        return _storage_key_slow(t)
    try:
        return _storage_id(t)
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def prune() -> None:
    """Forget the tensors that died: the tables never outgrow the live tensors."""
    dead = [k for k, (ref, _) in _ids.items() if ref() is None]
    for k in dead:
        tid = _ids.pop(k)[1]
        provenance.pop(tid, None)


def tensor_id(t: Any) -> str | None:
    """The public id string (``"t17"``) of a tensor tracked before, or None."""
    tid = lookup(t)
    return None if tid is None else f"t{tid}"


def created_where(t: Any) -> tuple[int | None, str | None, int | None, str] | None:
    """(cell, file, line, op) where a live tensor was created under tracking, if known."""
    tid = lookup(t)
    return None if tid is None else provenance.get(tid)
