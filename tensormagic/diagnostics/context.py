"""What checks record during a block (``Finding``) and what turns it into words afterwards (``Context``).

During the block a check stores only ids, raw-record indices and ``where`` tuples; names and
line numbers exist only once the Recording is built, so every message is written at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..engine import identity
from ..engine.ops import op_name
from ..engine.source import Locator, source_line
from ..model.events import Diagnostic, Event, where_label
from ..model.recording import Recording, TensorRecord
from ..views.common import fmt_shape, short_op
from .catalog import severity

_SYMBOLS = {"__pow__": "**", "__rpow__": "**", "__matmul__": "@", "__rmatmul__": "@", "__rsub__": "-",
            "__radd__": "+", "__rmul__": "*", "__truediv__": "/", "__rtruediv__": "/",
            "__floordiv__": "//", "__mod__": "%", "__getitem__": "indexing",
            "__setitem__": "an assignment", "__format__": "formatting (f-string, print)",
            "__repr__": "printing", "__bool__": "bool() / if", "__float__": "float()", "__int__": "int()",
            "__index__": "use as an index"}  # fmt: skip


def op_words(op: str) -> str:
    """``torch.Tensor.mul_`` → ``mul_()``; ``torch.nn.functional.linear`` → ``F.linear()``."""
    short = short_op(op).lstrip(".")
    return _SYMBOLS.get(short.rsplit(".", 1)[-1], short + "()")


@dataclass(slots=True)
class Finding:
    """One mistake seen during the block, before it has names and lines."""

    id: str
    where: Any  # (filename, lineno) of the user's line, as the tracker records it
    tids: tuple[int, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    count: int = 1


class Context:
    """Names, lines and creation events of a finished Recording, for writing messages."""

    def __init__(self, rec: Recording, raw: list[tuple[Any, ...]], locator: Locator | None,
                 namespace: Mapping[str, Any] | None) -> None:  # fmt: skip
        self.rec = rec
        self.raw = raw
        self.locator = locator
        self.namespace = namespace
        self._places: dict[Any, tuple[int | None, str | None, int | None, str | None]] = {}

    # -- places ------------------------------------------------------------------------------
    def place(self, where: Any) -> tuple[int | None, str | None, int | None, str | None]:
        """(cell, file, line, source) numbered as the recording's events are."""
        p = self._places.get(where)
        if p is None:
            if where is None:
                p = (None, None, None, None)
            else:
                fn, ln = where
                loc = self.locator(fn) if self.locator is not None else None
                src = source_line(fn, ln)
                src = src.strip() if src else None
                p = (loc[0], None, ln + loc[1], src) if loc is not None else (None, fn, ln, src)
            self._places[where] = p
        return p

    def line(self, where: Any) -> int | None:
        return self.place(where)[2]

    def where_words(self, where: Any) -> str:
        cell, fn, line, _src = self.place(where)
        return "an unknown line" if line is None else where_label(line, fn, cell, self.rec.cell)

    def op_at(self, idx: int) -> str:
        """The short op name of a raw record (``mul_``, ``torch.sigmoid``, ``F.linear``)."""
        func = self.raw[idx][1]
        return op_words(op_name(func)) if func is not None else "?"

    # -- tensors -----------------------------------------------------------------------------
    def tensor(self, tid: int | None) -> TensorRecord | None:
        return None if tid is None else self.rec.tensors.get(f"t{tid}")

    def names(self, tids: Iterable[int | None]) -> tuple[str, ...]:
        out: list[str] = []
        for tid in tids:
            t = self.tensor(tid)
            if t is not None and t.names and t.names[0] not in out:
                out.append(t.names[0])
        return tuple(out)

    def created(self, tid: int | None) -> tuple[str, int | None, str] | None:
        """(short op, line, where words) of the event that made a tensor, in this block or before."""
        t = self.tensor(tid)
        e: Event | None = t.created if t is not None else None
        if e is not None and e.origin == "op":
            return op_words(e.op), e.line, e.where_in(self.rec.cell)
        if tid is not None:
            prov = identity.provenance.get(tid)
            if prov is not None:
                cell, fn, line, op = prov  # an earlier cell's line says its cell
                return op_words(op), line, where_label(line, fn, cell, self.rec.cell)
        if e is not None:
            return op_words(e.op), e.line, e.where_in(self.rec.cell)
        return None

    def name_or(self, tid: int | None, word: str) -> str:
        """A tensor's name, or a word for it (``the target``)."""
        t = self.tensor(tid)
        return t.names[0] if t is not None and t.names else word

    def label(self, tid: int | None) -> str:
        """A tensor's name, else what made it: ``the result of .sub (line 5)``."""
        t = self.tensor(tid)
        if t is not None and t.names:
            return t.names[0]
        c = self.created(tid)
        if c is not None:
            return f"the result of {c[0]} ({c[2]})"
        return "a tensor"

    def shape(self, tid: int | None) -> str:
        t = self.tensor(tid)
        return fmt_shape(t.ref.shape) if t is not None else "?"

    def alive(self, tid: int | None) -> bool:
        t = self.tensor(tid)
        return t is not None and t.alive

    # -- output ------------------------------------------------------------------------------
    def diagnostic(self, f: Finding, message: str, fix: str | None, *, names: Iterable[str] = (),
                   lines: Iterable[int | None] = (), sev: str | None = None) -> Diagnostic:  # fmt: skip
        cell, fn, line, src = self.place(f.where)
        others = tuple(dict.fromkeys(ln for ln in lines if ln is not None and ln != line))
        return Diagnostic(id=f.id, severity=sev or severity(f.id), message=message, line=line,
                          names=tuple(dict.fromkeys(names)), fix=fix, cell=cell, file=fn, source=src,
                          lines=others, count=f.count)  # fmt: skip
