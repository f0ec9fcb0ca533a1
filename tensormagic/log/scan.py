"""Reading a log line by line: open plain or gzip, parse, skip and count damage, sniff the format.

The layer under ``logread.py``: it knows records only as dicts.  Unknown record types are
skipped (and counted apart from damage); a newer ``schema_version`` is remembered to be told.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from ..model.events import KINDS, SCHEMA_VERSION
from .checks import cell_ok, event_fields_ok, event_ok
from .records import FORMAT, loads

_OUR_PREFIXES = (
    b'{"type":"header","format":"tensormagic-log"',
    b'{"type":"event","key":',
    b'{"type":"cell","key":',
)
#: The longest line a reader takes (writers write at most ``records.MAX_LINE``; logs of schema 1
#: could hold longer cell records): a longer one is skipped and counted, never held whole.
MAX_READ_LINE = 64 << 20
#: Lines read before deciding that a file without any tensormagic record is not a log.
SNIFF_LINES = 50


class LogReadError(ValueError):
    """A file that cannot be read as a tensormagic log (the message is one line)."""


class NotALogError(LogReadError):
    """The file is not a tensormagic log."""


@dataclass
class ScanStats:
    """What a scan met besides cells: headers, skipped lines, a newer schema."""

    path: str
    lines: int = 0
    skipped: int = 0  # lines that did not parse: truncated or corrupt
    unknown: int = 0  # records of a type this reader does not know (skipped by design)
    bad_events: int = 0  # event records whose fields could not be read back
    unknown_kinds: int = 0  # events of a kind this reader does not know (a newer writer's)
    bad_cells: int = 0  # cell records whose fields are not of the writer's types
    headers: list[dict[str, Any]] = field(default_factory=list)
    newer_schema: int | None = None
    cells: int = 0  # cells met so far (all of them once a scan has finished)

    def notes(self) -> list[str]:
        """One line per thing a reader should tell the user."""
        out = []
        if self.newer_schema is not None:
            out.append(f"{self.path} was written by a newer tensormagic (log schema {self.newer_schema}; "
                       f"this reader knows {SCHEMA_VERSION}): upgrade tensormagic to read all of it; "
                       "showing what this version understands")  # fmt: skip
        if self.skipped:
            out.append(f"skipped {_count(self.skipped, 'corrupt or truncated line')} in {self.path}")
        if self.bad_events:
            out.append(f"skipped {_count(self.bad_events, 'unreadable event record')} in {self.path}")
        if self.bad_cells:
            out.append(f"skipped {_count(self.bad_cells, 'unreadable cell record')} in {self.path}")
        if self.unknown_kinds:
            out.append(f"skipped {_count(self.unknown_kinds, 'event')} of an unknown kind in {self.path} "
                       "(written by a newer tensormagic?)")  # fmt: skip
        return out


def _count(n: int, one: str) -> str:
    """``1 line``, ``1,200 lines``: views.common.plural, which log may not import."""
    return f"{n:,} {one if n == 1 else one + 's'}"


def _open(path: str | os.PathLike[str]) -> tuple[IO[bytes], bool]:
    """(the file, whether it is gzip): gzip is recognised by its magic bytes, not by the name."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise IsADirectoryError(f"{p}: is a directory, not a log file")
    try:
        raw = open(p, "rb")  # noqa: SIM115 - returned open; scan() closes it
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file") from None
    except OSError as e:
        raise OSError(f"{p}: {e.strerror or e}") from None
    magic = raw.read(2)
    raw.seek(0)
    return raw, magic == _GZIP_MAGIC[:2]


_GZIP_MAGIC = b"\x1f\x8b\x08"
_BLOCK = 1 << 16


def _gzip_lines(raw: IO[bytes], stats: ScanStats) -> Iterator[bytes]:
    """Lines of a gzip log, member after member (one per cell).  A damaged member counts as one
    skipped line and reading resumes at the next member; a member cut short yields what it holds,
    its broken last line too (the reader skips and counts that)."""
    d = zlib.decompressobj(31)
    tail = _Tail(stats)
    data = b""
    searching = False  # after damage: looking for the next member's header
    while True:
        if not data:
            data = raw.read(_BLOCK)
            if not data:
                break
        if searching:
            i = data.find(_GZIP_MAGIC)
            if i < 0:
                more = raw.read(_BLOCK)
                if not more:
                    break
                data = data[-2:] + more  # a header may straddle two blocks
                continue
            data, searching = data[i:], False
        try:
            out = d.decompress(data, _BLOCK * 16)  # bounded: a block may inflate 30-fold
        except zlib.error:
            stats.skipped += 1
            d, searching = zlib.decompressobj(31), True
            tail.clear()
            data = data[1:]
            continue
        data = d.unconsumed_tail
        if d.eof:
            data, d = d.unused_data, zlib.decompressobj(31)
        if out:
            cut = out.rfind(b"\n") + 1
            if cut:
                first = out.find(b"\n") + 1
                head = tail.take(out[:first])
                if head is not None:
                    yield head
                if first < cut:
                    for line in io.BytesIO(out[first:cut]):
                        if len(line) > MAX_READ_LINE:
                            stats.skipped += 1
                        else:
                            yield line
            tail.add(out[cut:])
    last = tail.take(b"")
    if last:
        yield last


class _Tail:
    """The unfinished line a gzip stream's output ends with, kept as pieces (joining them at every
    block took quadratic time on a long line), dropped and counted past ``MAX_READ_LINE``."""

    def __init__(self, stats: ScanStats) -> None:
        self.stats = stats
        self.parts: list[bytes] = []
        self.size = 0
        self.dropping = False

    def clear(self) -> None:
        self.parts, self.size, self.dropping = [], 0, False

    def add(self, piece: bytes) -> None:
        if self.dropping or not piece:
            return
        self.size += len(piece)
        if self.size > MAX_READ_LINE:
            self.stats.skipped += 1
            self.parts, self.dropping = [], True
        else:
            self.parts.append(piece)

    def take(self, end: bytes) -> bytes | None:
        """The line these pieces and ``end`` (its rest, through its newline) make; None if dropped."""
        dropped = self.dropping
        self.add(end)
        line = None if dropped or self.dropping else b"".join(self.parts)
        self.clear()
        return line


def _plain_lines(raw: IO[bytes], stats: ScanStats) -> Iterator[bytes]:
    """Lines of a plain file, none held longer than ``MAX_READ_LINE`` (``summary /dev/zero``
    reads in bounded memory: a line past the bound is skipped in pieces and counted)."""
    readline = raw.readline
    while True:
        line = readline(MAX_READ_LINE + 1)
        if not line:
            return
        if len(line) > MAX_READ_LINE and not line.endswith(b"\n"):
            stats.skipped += 1
            while line and not line.endswith(b"\n"):
                yield b""  # a piece of the skipped line: the scan counts it toward deciding "not a log"
                line = readline(1 << 20)
            continue
        yield line


_EVENT_HEAD = b'{"type":"event","key":"'
_RUN_TAIL = b'","event":{"seq":'
_KIND = b'"kind":"'
_ORIGIN_SEEN = b'"origin":"seen"'
_NOTE_GRADIENT = b'"note":"gradient'


def scan(path: str | os.PathLike[str], stats: ScanStats, *, tallies: dict[str, dict[bytes, int]] | None = None,
         progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """Every known record of the log, in file order; fills ``stats`` as it goes.

    With ``tallies`` (``summary``), event lines framed exactly as this writer frames them are
    not parsed but counted per cell key and kind into it (parsing is most of the cost of reading
    a big log); moves (their bytes are needed), other lines and anything unexpected are parsed."""
    raw, is_gzip = _open(path)
    total = os.fstat(raw.fileno()).st_size
    ours = False
    n = 0
    run: bytes | None = None  # the common start of the current cell's event lines
    kinds: dict[bytes, int] = {}
    try:
        for line in _gzip_lines(raw, stats) if is_gzip else _plain_lines(raw, stats):
            n += 1
            if progress is not None and not n & 0xFFF:
                progress(raw.tell(), total)
            if tallies is not None and line.endswith(b"}}\n"):
                if run is None or not line.startswith(run):
                    run = None
                    q = line.find(b'"', 23) if line.startswith(_EVENT_HEAD) else -1
                    if q > 0 and line.startswith(_RUN_TAIL, q):
                        run = line[: q + len(_RUN_TAIL)]
                        kinds = tallies.setdefault(line[23:q].decode(), {})
                if run is not None:
                    k = line.find(_KIND, len(run), len(run) + 40)
                    kb = line[k + 8 : line.find(b'"', k + 8)] if k > 0 else b"move"
                    if kb == b"create" and _ORIGIN_SEEN in line and _NOTE_GRADIENT not in line:
                        kb = b"seen"  # events.first_seen, read from the line: no op made this tensor
                    if kb != b"move":
                        kinds[kb] = kinds.get(kb, 0) + 1
                        ours = True
                        continue
            if not ours and n > SNIFF_LINES:
                raise NotALogError(f"{os.fspath(path)} is not a tensormagic log (no tensormagic records "
                                   f"in its first {SNIFF_LINES} lines)")  # fmt: skip
            if not line.strip():
                continue
            try:
                r = loads(line)
            except ValueError:
                stats.skipped += 1
                r = None
                ours = ours or line.startswith(_OUR_PREFIXES)  # a truncated record of ours
            if not isinstance(r, dict):
                if r is not None:
                    stats.skipped += 1
            else:
                t = r.get("type")
                if t == "event":
                    ev = r.get("event")
                    if event_ok(ev) and type(r.get("key")) is str:
                        ours = True
                        yield r
                    elif event_fields_ok(ev) and ev["kind"] not in KINDS:
                        ours = True
                        stats.unknown_kinds += 1
                    else:
                        stats.bad_events += 1
                elif t == "cell":
                    ours = True
                    if not cell_ok(r):
                        stats.bad_cells += 1
                        continue
                    stats.lines = n
                    yield r
                elif t == "header" and r.get("format") == FORMAT:
                    ours = True
                    v = r.get("schema_version")
                    if isinstance(v, int) and v > SCHEMA_VERSION:
                        stats.newer_schema = max(v, stats.newer_schema or 0)
                    stats.headers.append(r)
                    yield r
                else:
                    stats.unknown += 1
            if not ours and n >= SNIFF_LINES:
                raise NotALogError(f"{os.fspath(path)} is not a tensormagic log (no tensormagic records "
                                   f"in its first {SNIFF_LINES} lines)")  # fmt: skip
        if not ours and n and (stats.skipped or stats.unknown):
            raise NotALogError(f"{os.fspath(path)} is not a tensormagic log (no tensormagic records in it)")
        if progress is not None:
            progress(total, total)
    finally:
        stats.lines = n
        raw.close()


__all__ = ["SNIFF_LINES", "LogReadError", "NotALogError", "ScanStats", "scan"]
