"""The log file writer: JSON Lines (optionally gzip), one append per cell, safe for several kernels.

What the lines hold (header, event and cell records) is ``logrecords.py``.  A cell is written in
one append under an exclusive ``flock``, flushed every ``CHUNK`` records, so two processes
appending to one plain ``.jsonl`` never interleave lines.  A ``.gz`` log gets one gzip member per
cell, and one writing process at a time holds the file's lock for as long as it logs: concurrent
gzip appends would corrupt the stream, so a second process is refused.  Nothing is written per
event while tracking: a recording is serialised when its block ends.  The readers are
``logscan.py`` (lines) and ``logread.py`` (cells, recordings).
"""

from __future__ import annotations

import fcntl
import gc
import gzip
import os
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from ..model.recording import Recording
from .records import cell_lines, dumps, header_record

#: Records per write + flush within one cell's append (bounds memory and what a crash loses).
CHUNK = 4096


class LogWarning(UserWarning):
    """A log file could not be written; the tracked code ran and was recorded in memory."""


class LogError(OSError):
    """A log file cannot be opened for writing (the message says why, in one line)."""


def is_gzip_path(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(".gz")


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
        _check_ours(path)
        open(path, "ab").close()
    except LogError:
        raise
    except PermissionError:
        raise LogError(f"cannot log to {path}: permission denied") from None
    except OSError as e:
        raise LogError(f"cannot log to {path}: {e.strerror or e}") from None


_LOG_STARTS = (b'{"type":"header","format":"tensormagic-log"', b'{"type":"event","key":', b'{"type":"cell","key":')


def _check_ours(path: Path) -> None:
    """Refuse to append to an existing, non-empty file that is not a tensormagic log (a script
    named by mistake): its first line must be one of our records (after gunzip for ``.gz``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except FileNotFoundError:
        return
    if not head:
        return
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(31).decompress(head, 4096)
        except zlib.error:
            head = b""
    if not head.lstrip(b"\n").startswith(_LOG_STARTS):
        raise LogError(f"not logging to {path}: it exists and is not a tensormagic log (choose another path)")


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


def start_logging(path: Any, *, stacklevel: int = 3, site: tuple[str, int] | None = None) -> LogWriter | None:
    """The writer for ``track(log=path)``, or None after one clear :class:`LogWarning` per path
    (placed at ``site``, a (filename, line), where given: a magic's cell)."""
    try:
        return writer_for(path)
    except (LogError, OSError, TypeError, ValueError) as e:
        _warn_once(path, str(e) if isinstance(e, LogError) else f"cannot log to {path!r}: {e}", stacklevel, site)
        return None


def log_recording(writer: LogWriter, rec: Recording, *, stacklevel: int = 3,
                  site: tuple[str, int] | None = None) -> None:  # fmt: skip
    """Append ``rec``; a failure (disk full, file removed with its folder) warns once per path."""
    try:
        writer.write(rec)
    except OSError as e:
        reason = str(e) if isinstance(e, LogError) else f"cannot log to {writer.path}: {e.strerror or e}"
        _warn_once(writer.path, reason, stacklevel, site)
    except Exception as e:  # noqa: BLE001 - a log failure must never replace the user's result
        _warn_once(writer.path, f"cannot log to {writer.path}: {type(e).__name__}: {e}", stacklevel, site)


def _warn_once(path: Any, reason: str, stacklevel: int, site: tuple[str, int] | None = None) -> None:
    key = os.path.abspath(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else repr(path)
    if key in _warned:
        return
    _warned.add(key)
    from ..views.inert import inert_line  # the path is the user's text: it prints on a terminal

    text = inert_line(f"{reason}; the code still runs and is tracked in memory, but not logged")
    if site is not None:
        warnings.warn_explicit(text, LogWarning, site[0], site[1])
    else:
        warnings.warn(text, LogWarning, stacklevel=stacklevel + 1)


def close_all() -> None:
    """Release every writer (and the gzip locks they hold)."""
    with _registry_lock:
        for w in _writers.values():
            w.close()
        _writers.clear()


__all__ = [
    "CHUNK",
    "LogError",
    "LogWarning",
    "LogWriter",
    "check_writable",
    "close_all",
    "log_recording",
    "start_logging",
    "writer_for",
]
