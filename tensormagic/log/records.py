"""What a log file holds, as bytes: the records of one cell, and how they are encoded and read.

Records (one JSON object per line, ``type`` first):

* ``header``: once per writing process and file, before its first cell: ``format``,
  ``schema_version``, ``session``, versions, devices, start time, pid, hostname.
* ``event``: ``{"type": "event", "key": "<session>/<n>", "event": Event.to_dict()}``: the core
  event model, serialised by its own ``to_dict``.
* ``cell``: after the cell's events: execution count, cell id, source, times, status, folds,
  counts, the autograd ``GraphTable``, tensors (see ``_tensor_table``), diagnostics.

``logfile.py`` writes them (locks, gzip, one append per cell); ``logscan.py`` and ``logread.py``
read them back.

No line is longer than ``MAX_LINE``: an event past it loses its lists of other tensors (``trimmed``
says so), a cell record its source's tail, diagnostics past 100, its graphs and the end of its
tensor table (``tensors_omitted`` counts them).

Versions (``schema_version`` in each header; a change to what a line holds bumps it, and a log
written by that version goes to ``tests/data/log_schema<N>.jsonl``, which every later reader must
load; readers skip unknown record types, event kinds and keys, and count them): ``SCHEMA_HISTORY``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any, Callable

from ..model.events import SCHEMA_VERSION, Event, GradRecord, TensorRef
from ..model.fastinit import DICT, DICTS, REF, REFS, dict_spec, fast_to_dict
from ..model.recording import Recording, last_refs

try:
    from ..engine._hotpath import LineEncoder
except ImportError:  # built without a C compiler: the Python path
    LineEncoder = None

FORMAT = "tensormagic-log"
#: what each schema version added (tests/test_log_versions.py checks a fixture exists for each)
SCHEMA_HISTORY = {
    1: "header, event and cell records",
    2: "cell: folded_tensors (tensors past max_events no kept event names, counted), tensors_omitted; "
       "lines bounded by MAX_LINE (an event over it: trimmed); cell: unreadable (added on main under 1)",
    3: "cell: before (tensor id -> [cell, file, line, op] where an earlier tracked cell made a tensor "
       "that existed before this one, or null), histories (tensor id -> its history across tracked "
       "cells in words); both only where not empty, cut first past MAX_LINE (before_omitted, "
       "histories_omitted count them)",
    4: "event kind \"compiled\" (a torch.compile'd call): outputs, graphs, graph_ops",
}
#: the longest line a writer writes, in bytes
MAX_LINE = 1 << 20

try:  # orjson is several times faster; the log must still work without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is not installed
    _orjson = None


# -- serialisation ---------------------------------------------------------------------------
def dumps(obj: Any) -> bytes:
    """One JSON line (without the newline), with orjson when installed."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except (TypeError, _orjson.JSONEncodeError):
            return _std_dumps(obj)  # integers past 64 bits, lone surrogates: the stdlib copes
    return _std_dumps(obj)


def _std_dumps(obj: Any) -> bytes:
    # ASCII escapes keep even a lone surrogate (undecodable bytes in a cell's source) writable
    return json.dumps(obj, separators=(",", ":"), default=str).encode("ascii")


def ref_dicts() -> Callable[[TensorRef], dict[str, Any]]:
    """``TensorRef.to_dict`` with a memo for one write: events share TensorRefs (a tensor's
    snapshot appears as an output, then as the input of each op that reads it), and each is
    turned into a dict once.  The dicts are only read by the encoder, so sharing them is safe."""
    memo: dict[int, dict[str, Any]] = {}

    def ref_dict(ref: TensorRef) -> dict[str, Any]:
        d = memo.get(id(ref))  # the refs stay alive (the recording holds them) while it writes
        if d is None:
            d = memo[id(ref)] = ref.to_dict()
        return d

    return ref_dict


def loads(line: bytes | str) -> Any:
    """Parse one line; raises ``ValueError`` on anything that is not JSON, or nested deeper than
    the parsers go (orjson stops at 1024 levels, the stdlib at the recursion limit)."""
    try:
        if _orjson is not None:
            try:
                return _orjson.loads(line)
            except _orjson.JSONDecodeError:
                return json.loads(line)  # the stdlib also reads NaN/Infinity and lone surrogates
        return json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# -- records ---------------------------------------------------------------------------------
def header_record(session: str, started: float | None = None) -> dict[str, Any]:
    """What a reader needs to know about the writing process."""
    from .. import __version__

    return {
        "type": "header",
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "session": session,
        "tensormagic": __version__,
        "torch": _torch_version(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "devices": _devices(),
        "started": time.time() if started is None else started,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
    }


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None) if torch is not None else None


def _devices() -> list[str]:
    torch = sys.modules.get("torch")
    if torch is None:
        return ["cpu"]
    out = ["cpu"]
    try:
        # device_count does not create a CUDA context; device names would, so they are left out
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            out.append("mps")
    except Exception as e:  # noqa: BLE001 - a broken driver must not stop the log
        out.append(f"(devices unknown: {type(e).__name__})")
    return out


def cell_records(rec: Recording, key: str) -> Iterator[dict[str, Any]]:
    """The records of one recording: its events, then the cell record that closes them."""
    refs = ref_dicts()
    for e in rec.events:
        yield {"type": "event", "key": key, "event": e.to_dict(refs=refs)}
    yield cell_record(rec, key)


def cell_lines(rec: Recording, key: str, *, compiled: bool | None = None) -> Iterator[bytes]:
    """``cell_records`` encoded, one JSON line each (no newline).  An event's line is the same
    bytes as ``dumps`` of its record, assembled around the event's own encoding: the wrapper is
    the same for every event of the cell, and a log writes thousands of them.

    ``compiled`` (the default where it was built and orjson encodes): the events are encoded by
    ``csrc/encode.c``'s LineEncoder, without their dicts; an event it hands back (statistics,
    a huge int, a lone surrogate) goes the Python way."""
    refs = ref_dicts()
    head = dumps({"type": "event", "key": key})[:-1] + b',"event":'
    event_dict = _event_dict()
    events = rec.events
    enc = _line_encoder(compiled)
    if enc is None:
        for e in events:
            line = head + dumps(event_dict(e, refs)) + b"}"
            yield line if len(line) <= MAX_LINE else _trimmed_event(e, head, refs)
    else:
        for start in range(0, len(events), _BATCH):  # a batch at a time: a cell may be large
            for i, x in enumerate(enc.lines(events, start, start + _BATCH, head, b"}"), start):
                if type(x) is not bytes:
                    x = head + dumps(event_dict(x, refs)) + b"}"
                yield x if len(x) <= MAX_LINE else _trimmed_event(events[i], head, refs)
    yield bounded_cell_line(cell_record(rec, key))


def _trimmed_event(e: Event, head: bytes, refs: Any) -> bytes:
    """An event whose line passed ``MAX_LINE`` (a cat of 100,000 tensors): its own tensor and op
    kept, its lists of other tensors left out, ``trimmed`` saying so."""
    from dataclasses import replace

    short = replace(e, inputs=(), aliases=(), grads=(), source=(e.source or "")[:4096] or None,
                    note=(e.note or "")[:4096] or None)  # fmt: skip
    d = dict(_event_dict()(short, refs))
    d["trimmed"] = True
    line = head + dumps(d) + b"}"
    if len(line) > MAX_LINE:  # names or a shape that long: what is left is the kind and the op
        d = {"seq": e.seq, "kind": e.kind, "op": e.op[:4096], "trimmed": True,
             "tensor": {"id": e.tensor.id, "storage_id": None, "names": [], "shape": [], "dtype": "?",
                        "device": "?", "requires_grad": False, "is_leaf": True, "grad_fn": None, "version": 0}}  # fmt: skip
        line = head + dumps(d) + b"}"
    return line


def bounded_cell_line(d: dict[str, Any]) -> bytes:
    """The cell record's line, trimmed to ``MAX_LINE`` when needed: the source's tail, diagnostics
    past 100, the graphs, then the end of the tensor table (``tensors_omitted`` counts it)."""
    line = dumps(d)
    if len(line) <= MAX_LINE:
        return line
    d = dict(d)
    if isinstance(d.get("source"), str) and len(d["source"]) > 65536:
        d["source"] = d["source"][:65536] + "\n… (source cut: the log's line bound)"
    d["diagnostics"] = (d.get("diagnostics") or [])[:100]
    tensors = d.pop("tensors", None) or []
    for key in ("histories", "before"):  # what the views can do without, before the tensor table
        if len(dumps(d)) > MAX_LINE // 2 and d.get(key):
            d[f"{key}_omitted"] = len(d.pop(key))
    line = dumps(d)
    if len(line) > MAX_LINE // 2:
        d["graphs"] = {}
        line = dumps(d)
    budget = MAX_LINE - len(line) - 64
    kept: list[Any] = []
    for item in tensors:
        budget -= len(dumps(item)) + 1
        if budget < 0:
            break
        kept.append(item)
    d["tensors"] = kept
    d["tensors_omitted"] = len(tensors) - len(kept)
    return dumps(d)


_BATCH = 1000
#: how Event.to_dict writes each field (fastinit's kinds; the others as they are)
_EVENT_KINDS = {"tensor": REF, "base": REF, "source_tensor": REF, "inputs": REFS, "aliases": REFS, "outputs": REFS,
                "grads": DICTS, "stats": DICT}  # fmt: skip
_event_dicts: list[Callable[[Event, Callable[[TensorRef], Any]], dict[str, Any]]] = []
_encoder_specs: list[tuple[Any, ...]] = []


def _event_dict() -> Callable[[Event, Callable[[TensorRef], Any]], dict[str, Any]]:
    """``Event.to_dict(refs=...)``, compiled where the extension was built (made once)."""
    if not _event_dicts:
        _event_dicts.append(fast_to_dict(Event, _EVENT_KINDS))
    return _event_dicts[0]


def _line_encoder(compiled: bool | None) -> Any:
    """A fresh LineEncoder (its TensorRef memo is one cell's), or None for the Python path."""
    available = LineEncoder is not None and _orjson is not None  # the stdlib escapes non-ASCII: other bytes
    if compiled is None:
        compiled = available
    if not compiled:
        return None
    if not available:
        raise ValueError("the compiled LineEncoder needs the built extension and orjson")
    if not _encoder_specs:
        _encoder_specs.extend((dict_spec(Event, _EVENT_KINDS), dict_spec(TensorRef, {}),
                               dict_spec(GradRecord, {"tensor": REF})))  # fmt: skip
    return LineEncoder(*_encoder_specs)


def cell_record(rec: Recording, key: str) -> dict[str, Any]:
    err_type, err_msg = _split_error(rec.error) if rec.failed else (None, None)
    ended = rec.started + rec.duration_s
    out: dict[str, Any] = {
        "type": "cell",
        "key": key,
        "exec_count": rec.cell,
        "cell_id": rec.cell_id,
        "source": rec.source,
        "file": rec.file,
        "started": rec.started,
        "ended": ended,
        "duration_s": rec.duration_s,
        "status": "error" if rec.failed else "ok",
        "error": None if not rec.failed else {"type": err_type, "message": err_msg},
        "n_events": len(rec.events),
        "counts": rec.counts(),
        "bytes_moved": rec.bytes_moved(),
        "folds": [f.to_dict() for f in rec.folds],
        "stats_enabled": rec.stats_enabled,
        "internal_error": rec.internal_error,
        "folded_tensors": rec.folded_tensors,
        "tensors": _tensor_table(rec),
        "graphs": rec.graphs.to_dict(),
        "diagnostics": [_diagnostic_dict(d) for d in rec.diagnostics],
    }
    if rec.unreadable:  # only where there is something to say: other cells' lines stay as they were
        out["unreadable"] = dict(rec.unreadable)
    listed = rec.final_refs()
    before = {k: (list(v) if isinstance(v, tuple) else None) for k, v in rec.before.items() if k in listed}
    if before:
        out["before"] = before
    if rec.histories:
        out["histories"] = dict(rec.histories)
    return out


def _split_error(error: str | None) -> tuple[str | None, str | None]:
    """``"ValueError: bad"`` → (``ValueError``, ``bad``), the way ``track`` wrote it."""
    if not error:
        return None, None
    name, sep, msg = error.partition(": ")
    if sep and name.replace(".", "").replace("_", "").isalnum():
        return name, msg
    return error, ""


def _tensor_table(rec: Recording) -> list[Any]:
    """The recording's tensors in order: an id where the events' latest snapshot of the tensor
    is its final one (the reader rebuilds it from the events), else the full ``TensorRef``."""
    derived = last_refs(rec.events)
    out: list[Any] = []
    for tid, ref in rec.final_refs().items():
        d = derived.get(tid)
        out.append(tid if d is ref or d == ref else ref.to_dict())  # mostly the same object
    return out


def _diagnostic_dict(d: Any) -> dict[str, Any]:
    if hasattr(d, "to_dict"):
        return dict(d.to_dict())
    return {k: str(getattr(d, k)) for k in ("where", "message", "fix") if getattr(d, k, None) is not None}
