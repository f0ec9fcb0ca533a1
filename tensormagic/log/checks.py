"""Which records a reader trusts: an event or a cell record is read back only when every field it
has is of the type the writer writes (any JSON can be in a file someone sent: ``"tensor": null``,
``"duration_s": "abc"``, ``1e400``); the others are skipped and counted, never raised."""

from __future__ import annotations

import math
from typing import Any, Callable

from ..model.events import KINDS

Check = Callable[[Any], bool]


def _int(v: Any) -> bool:
    return type(v) is int and -(2**63) <= v < 2**63


def _num(v: Any) -> bool:
    return (type(v) is int and _int(v)) or (type(v) is float and math.isfinite(v))


def _str(v: Any) -> bool:
    return type(v) is str


def _bool(v: Any) -> bool:
    return type(v) is bool


def _opt(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _list(check: Check) -> Check:
    return lambda v: type(v) is list and all(check(x) for x in v)


def _shape(v: Any) -> bool:
    """Sizes; ``null`` where the tracker could not read one (a nested tensor's ragged dimension)."""
    return type(v) is list and all(x is None or (type(x) is int and 0 <= x < 2**63) for x in v)


_REF: dict[str, Check] = {"id": _str, "storage_id": _opt(_str), "names": _list(_str), "shape": _shape,
                          "dtype": _str, "device": _str, "requires_grad": _bool, "is_leaf": _bool,
                          "grad_fn": _opt(_str), "version": _int}  # fmt: skip
_REF_REQUIRED = ("id", "shape", "dtype", "device")


def _fields(checks: dict[str, Check], required: tuple[str, ...]) -> Check:
    def ok(d: Any) -> bool:
        if type(d) is not dict:
            return False
        for k in required:
            if k not in d:
                return False
        for k, v in d.items():
            c = checks.get(k)
            if c is not None and not c(v):
                return False
        return True

    return ok


ref_ok = _fields(_REF, _REF_REQUIRED)
_STATS: dict[str, Check] = {"min": _opt(_num), "max": _opt(_num), "mean": _opt(_num), "std": _opt(_num),
                            "nan": _int, "inf": _int, "zeros": _int, "numel": _int, "note": _opt(_str)}  # fmt: skip
_GRAD: dict[str, Check] = {"tensor": ref_ok, "shape": _shape, "dtype": _str, "accumulated": _bool,
                           "grad_id": _opt(_str)}  # fmt: skip
_EVENT: dict[str, Check] = {
    "seq": _int, "kind": _str, "op": _str, "tensor": ref_ok, "line": _opt(_int), "source": _opt(_str),
    "cell": _opt(_int), "file": _opt(_str), "module": _opt(_str), "time_us": _num,
    "inputs": _list(ref_ok), "origin": _str, "base": _opt(ref_ok), "version_before": _opt(_int),
    "version_after": _opt(_int), "aliases": _list(ref_ok), "from_device": _opt(_str), "to_device": _opt(_str),
    "from_dtype": _opt(_str), "to_dtype": _opt(_str), "nbytes": _opt(_int), "source_tensor": _opt(ref_ok),
    "inplace": _bool, "grads": _list(_fields(_GRAD, ("tensor", "shape", "dtype"))),
    "stats": _opt(_fields(_STATS, ())), "note": _opt(_str), "trimmed": _bool,
}  # fmt: skip
event_fields_ok = _fields(_EVENT, ("seq", "kind", "op", "tensor"))


def event_ok(d: Any) -> bool:
    """Whether an event dict is one this reader can turn into an Event (known kind, right types)."""
    return event_fields_ok(d) and d["kind"] in KINDS


_CELL: dict[str, Check] = {
    "key": _str, "exec_count": _opt(_int), "cell_id": _opt(_str), "source": _opt(_str), "file": _opt(_str),
    "started": _num, "ended": _num, "duration_s": _num, "status": _str, "n_events": _int,
    "stats_enabled": _bool, "internal_error": _opt(_str), "folded_tensors": _int, "tensors_omitted": _int,
    "error": _opt(_fields({"type": _opt(_str), "message": _opt(_str)}, ())),
    "counts": lambda v: type(v) is dict and all(_int(x) for x in v.values()),
    "bytes_moved": _int, "folds": lambda v: type(v) is list, "tensors": lambda v: type(v) is list,
    "graphs": lambda v: type(v) is dict, "diagnostics": lambda v: type(v) is list,
}  # fmt: skip
cell_ok = _fields(_CELL, ("key",))

__all__ = ["cell_ok", "event_ok", "ref_ok"]
