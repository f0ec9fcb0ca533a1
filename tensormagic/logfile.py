"""The log file writer: JSON Lines (optionally gzip), one append per cell, safe for several kernels.

Records (one JSON object per line, ``type`` first):

* ``header``: once per writing process and file, before its first cell: ``format``,
  ``schema_version``, ``session``, versions, devices, start time, pid, hostname.
* ``event``: ``{"type": "event", "key": "<session>/<n>", "event": Event.to_dict()}``: the core
  event model, serialised by its own ``to_dict``.
* ``cell``: after the cell's events: execution count, cell id, source, times, status, folds,
  counts, the autograd ``GraphTable``, tensors (see ``_tensor_table``), diagnostics.

A cell is written in one append under an exclusive ``flock``, flushed every ``CHUNK`` records,
so two processes appending to one plain ``.jsonl`` never interleave lines.  A ``.gz`` log gets
one gzip member per cell, and one writing process at a time holds the file's lock for as long as
it logs: concurrent gzip appends would corrupt the stream, so a second process is refused.
Nothing is written per event while tracking: a recording is serialised when its block ends.
The readers are ``logscan.py`` (lines) and ``logread.py`` (cells, recordings).
"""

from __future__ import annotations

import fcntl
import gc
import gzip
import json
import os
import platform
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Callable

from .events import SCHEMA_VERSION, Event, TensorRef
from .recording import Recording, last_refs

FORMAT = "tensormagic-log"
#: Records per write + flush within one cell's append (bounds memory and what a crash loses).
CHUNK = 4096

try:  # orjson is several times faster; the log must still work without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only where orjson is not installed
    _orjson = None


class LogWarning(UserWarning):
    """A log file could not be written; the tracked code ran and was recorded in memory."""


class LogError(OSError):
    """A log file cannot be opened for writing (the message says why, in one line)."""


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
    """Parse one line; raises ``ValueError`` on anything that is not JSON."""
    if _orjson is not None:
        try:
            return _orjson.loads(line)
        except _orjson.JSONDecodeError:
            return json.loads(line)  # the stdlib also reads NaN/Infinity and lone surrogates
    return json.loads(line)


def is_gzip_path(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(".gz")


# -- records ---------------------------------------------------------------------------------
def header_record(session: str, started: float | None = None) -> dict[str, Any]:
    """What a reader needs to know about the writing process."""
    from . import __version__

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


def cell_lines(rec: Recording, key: str) -> Iterator[bytes]:
    """``cell_records`` encoded, one JSON line each (no newline).  An event's line is the same
    bytes as ``dumps`` of its record, assembled around the event's own encoding: the wrapper is
    the same for every event of the cell, and a log writes thousands of them."""
    refs = ref_dicts()
    head = dumps({"type": "event", "key": key})[:-1] + b',"event":'
    event_dict = _event_dict()
    for e in rec.events:
        yield head + dumps(event_dict(e, refs)) + b"}"
    yield dumps(cell_record(rec, key))


_event_dicts: list[Callable[[Event, Callable[[TensorRef], Any]], dict[str, Any]]] = []


def _event_dict() -> Callable[[Event, Callable[[TensorRef], Any]], dict[str, Any]]:
    """``Event.to_dict(refs=...)``, compiled where the extension was built (made once)."""
    if not _event_dicts:
        from .fastinit import DICT, DICTS, REF, REFS, fast_to_dict

        kinds = {"tensor": REF, "base": REF, "source_tensor": REF, "inputs": REFS, "aliases": REFS,
                 "grads": DICTS, "stats": DICT}  # fmt: skip
        _event_dicts.append(fast_to_dict(Event, kinds))
    return _event_dicts[0]


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
        "tensors": _tensor_table(rec),
        "graphs": rec.graphs.to_dict(),
        "diagnostics": [_diagnostic_dict(d) for d in rec.diagnostics],
    }
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


# -- writing ---------------------------------------------------------------------------------
class LogWriter:
    """Appends recordings to one log file.  Use :func:`writer_for` to share one per path."""

    def __init__(self, path: str | os.PathLike[str], *, chunk: int = CHUNK) -> None:
        self.path = Path(path)
        self.chunk = max(1, int(chunk))
        self.gzip = is_gzip_path(self.path)
        self.session = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.pid = os.getpid()
        self._cells = 0
        self._header_for: tuple[int, int] | None = None  # (st_dev, st_ino) our header went into
        self._lock = threading.Lock()
        self._held: IO[bytes] | None = None  # gzip: the file whose lock we keep while logging
        check_writable(self.path)
        if self.gzip:
            self._held = _open_locked(self.path, exclusive_for_session=True)

    def close(self) -> None:
        if self._held is not None:
            self._held.close()  # closing the file releases its lock
            self._held = None

    def write(self, rec: Recording) -> str:
        """Append one recording (header first if this file has none of ours); returns its key."""
        with self._lock:
            self._cells += 1
            key = f"{self.session}/{self._cells}"
            f = self._held if self._held is not None else _open_locked(self.path)
            try:
                self._write_locked(f, cell_lines(rec, key))
            finally:
                if f is not self._held:
                    f.close()
            return key

    def _write_locked(self, f: IO[bytes], lines: Iterable[bytes]) -> None:
        st = os.fstat(f.fileno())
        ident = (st.st_dev, st.st_ino)
        out: list[bytes] = []
        if not self.gzip and st.st_size and os.pread(f.fileno(), 1, st.st_size - 1) != b"\n":
            out.append(b"")  # a writer killed mid-line left it unfinished: start on a new line
        if self._header_for != ident or st.st_size == 0:
            out.append(dumps(header_record(self.session, self.started)))
            self._header_for = ident
        sink: Any = gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6) if self.gzip else f
        # The records are short-lived dicts with no cycles; collections triggered by allocating
        # them would only re-walk the live objects (a big recording), costing more than the writing.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for line in lines:
                out.append(line)
                if len(out) >= self.chunk:
                    _flush(sink, f, out)
            _flush(sink, f, out)
        finally:
            if gc_was:
                gc.enable()
            if sink is not f:
                sink.close()  # ends this cell's gzip member
            f.flush()


def _flush(sink: Any, f: IO[bytes], out: list[bytes]) -> None:
    if out:
        out.append(b"")
        sink.write(b"\n".join(out))
        out.clear()
        if sink is not f:
            sink.flush()
        f.flush()


def check_writable(path: Path) -> None:
    """Raise :class:`LogError` with a one-line reason if ``path`` cannot be appended to.

    The file is opened for appending (and so created, empty): only trying tells, since root
    passes every permission check and some file systems refuse writes anyway."""
    try:
        if path.is_dir():
            raise LogError(f"cannot log to {path}: it is a directory")
        parent = path.parent
        if not parent.is_dir():
            raise LogError(f"cannot log to {path}: the folder {parent} does not exist")
        open(path, "ab").close()
    except LogError:
        raise
    except PermissionError:
        raise LogError(f"cannot log to {path}: permission denied") from None
    except OSError as e:
        raise LogError(f"cannot log to {path}: {e.strerror or e}") from None


def _open_locked(path: Path, *, exclusive_for_session: bool = False) -> IO[bytes]:
    try:
        # O_APPEND puts every write at the end; "+" lets the writer check the last byte
        f = open(path, "a+b")  # noqa: SIM115 - returned open, closed by the caller
    except OSError as e:
        raise LogError(f"cannot log to {path}: {e.strerror or e}") from None
    try:
        if exclusive_for_session:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released by close()
    except BlockingIOError:
        f.close()
        raise LogError(
            f"cannot log to {path}: another process is writing this gzip log, and gzip logs take "
            "one writer at a time (use a plain .jsonl to log from several kernels at once)"
        ) from None
    except OSError as e:  # pragma: no cover - a file system without flock
        f.close()
        raise LogError(f"cannot log to {path}: cannot lock it ({e.strerror or e})") from None
    return f


_writers: dict[str, LogWriter] = {}
_warned: set[str] = set()
_registry_lock = threading.Lock()


def writer_for(path: str | os.PathLike[str]) -> LogWriter:
    """The process's writer for ``path`` (one per file, so one header per process and file)."""
    key = os.path.abspath(os.fspath(path))
    with _registry_lock:
        w = _writers.get(key)
        if w is not None and w.pid != os.getpid():
            w = None  # a forked child starts its own session
        if w is None:
            w = _writers[key] = LogWriter(key)
        return w


def start_logging(path: Any, *, stacklevel: int = 3) -> LogWriter | None:
    """The writer for ``track(log=path)``, or None after one clear :class:`LogWarning` per path."""
    try:
        return writer_for(path)
    except (LogError, OSError, TypeError, ValueError) as e:
        _warn_once(path, str(e) if isinstance(e, LogError) else f"cannot log to {path!r}: {e}", stacklevel)
        return None


def log_recording(writer: LogWriter, rec: Recording, *, stacklevel: int = 3) -> None:
    """Append ``rec``; a failure (disk full, file removed with its folder) warns once per path."""
    try:
        writer.write(rec)
    except OSError as e:
        reason = str(e) if isinstance(e, LogError) else f"cannot log to {writer.path}: {e.strerror or e}"
        _warn_once(writer.path, reason, stacklevel)
    except Exception as e:  # noqa: BLE001 - a log failure must never replace the user's result
        _warn_once(writer.path, f"cannot log to {writer.path}: {type(e).__name__}: {e}", stacklevel)


def _warn_once(path: Any, reason: str, stacklevel: int) -> None:
    key = os.path.abspath(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else repr(path)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(f"{reason}; the code still runs and is tracked in memory, but not logged",
                  LogWarning, stacklevel=stacklevel + 1)  # fmt: skip


def close_all() -> None:
    """Release every writer (and the gzip locks they hold)."""
    with _registry_lock:
        for w in _writers.values():
            w.close()
        _writers.clear()


__all__ = [
    "CHUNK",
    "FORMAT",
    "LogError",
    "LogWarning",
    "LogWriter",
    "cell_record",
    "cell_lines",
    "cell_records",
    "close_all",
    "dumps",
    "header_record",
    "loads",
    "log_recording",
    "start_logging",
    "writer_for",
]
