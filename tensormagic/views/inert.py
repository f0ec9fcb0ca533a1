"""Text for a terminal made inert: what a cell's source, a name, an exception message or a log
someone sent holds must print as what it is, never act on the terminal (retitle it, clear it,
reorder a line with a bidi override).

Control characters (C0 but newline and tab, DEL, C1) print as ``\\x1b``; bidi controls and the
Unicode line/paragraph separators as ``\\u202e``.  HTML views escape their own way (``html.h``).
"""

from __future__ import annotations

_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)
_TABLE: dict[int, str] = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}
_TABLE.update({c: f"\\u{c:04x}" for c in _BIDI})
_ONE_LINE = {**_TABLE, 0x0A: "\\n", 0x09: "\\t"}


# Every character the tables escape is one str.isprintable() rejects (Cc, Cf, Zl, Zp): text it
# accepts has none of them, and a C scan says so ~20x faster than translate() copies the text
# (each %trackgrad on cell's summary line, every line of a report)


def inert(text: str) -> str:
    """``text`` with every control and bidi character written as its escape; newlines and tabs kept."""
    return text if text.isprintable() else text.translate(_TABLE)


def inert_line(text: str) -> str:
    """``inert``, and newlines and tabs escaped too: the text stays on one line."""
    return text if text.isprintable() else text.translate(_ONE_LINE)
