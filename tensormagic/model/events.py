"""The event model: what a recording is made of, shared by the tracker, the views, the log.

Every class here is plain, frozen data with no reference to torch objects, so a Recording
read back from a log file is the same thing as a live one.  ``to_dict`` omits fields that
hold their default value (the log stays compact) and ``from_dict`` ignores unknown keys
(a newer writer must not break an older reader).  The autograd graph's data (``GradGraph``) is
in ``gradgraph.py``, the generic dict conversion in ``dictform.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from .dictform import _known, _to_dict

SCHEMA_VERSION = 4  # log/records.py's SCHEMA_HISTORY says what each version added

#: Event kinds, in the order reports list their counts.
KINDS: tuple[str, ...] = ("create", "view", "inplace", "move", "backward", "numpy", "compiled")
#: The version a snapshot records for a tensor without a version counter (an inference tensor):
#: the recorder's mark, not a version torch has.
NO_VERSION = -1
#: what counts call a create of a tensor no op the tracker saw made (``first_seen``)
SEEN = "seen"


def first_seen(kind: str | None, origin: str | None, note: str | None) -> bool:
    """Whether a create event only says where the tracker first met its tensor: no op it saw made
    it (it was made before the block, or by code the tracker cannot see).  A gradient backward
    filled in is of origin "seen" too, but backward did make it."""
    return kind == "create" and origin not in (None, "op") and not (note or "").startswith("gradient")


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A snapshot of one tensor's metadata at one moment; never the tensor itself."""

    id: str
    storage_id: str | None
    names: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    device: str
    requires_grad: bool
    is_leaf: bool
    grad_fn: str | None
    version: int

    @property
    def label(self) -> str:
        """The name a person knows the tensor by, or its id."""
        return self.names[0] if self.names else self.id

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def to_dict(self) -> dict[str, Any]:
        # spelled out (same output as _to_dict: no field has a default): a log writes millions
        return {"id": self.id, "storage_id": self.storage_id, "names": list(self.names),
                "shape": list(self.shape), "dtype": self.dtype, "device": self.device,
                "requires_grad": self.requires_grad, "is_leaf": self.is_leaf, "grad_fn": self.grad_fn,
                "version": self.version}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorRef:
        d = _known(cls, d)
        d["names"] = tuple(d.get("names", ()))
        d["shape"] = tuple(d.get("shape", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class GradRecord:
    """One leaf that received a gradient from a backward call."""

    tensor: TensorRef
    shape: tuple[int, ...]
    dtype: str
    accumulated: bool = False
    grad_id: str | None = None

    def to_dict(self, *, refs: Callable[[TensorRef], Any] = TensorRef.to_dict) -> dict[str, Any]:
        # spelled out like Event.to_dict (same output as _to_dict; a test holds them equal)
        out: dict[str, Any] = {"tensor": refs(self.tensor), "shape": list(self.shape), "dtype": self.dtype}
        if self.accumulated:
            out["accumulated"] = self.accumulated
        if self.grad_id is not None:
            out["grad_id"] = self.grad_id
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GradRecord:
        d = _known(cls, d)
        d["tensor"] = TensorRef.from_dict(d["tensor"])
        d["shape"] = tuple(d.get("shape", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Stats:
    """Value statistics of a tensor (computed on demand, or during the block with stats=True)."""

    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    numel: int = 0
    note: str | None = None

    def summary(self) -> str:
        """A few words a person reads at a glance: ``all 4.5`` or ``min … max … mean …``."""
        if self.note:
            return self.note
        if self.numel == 0:
            return "empty"
        parts: list[str] = []
        if self.min is not None and self.min == self.max and not (self.nan or self.inf):
            parts.append(f"all {_num(self.min)}")
        elif self.min is not None:
            parts.append(f"min {_num(self.min)} max {_num(self.max)}")
            if self.mean is not None:
                parts.append(f"mean {_num(self.mean)}")
            if self.std is not None:
                parts.append(f"std {_num(self.std)}")
        # the counts follow a comma: "std 1.414 1 NaN" read as one run of numbers
        counts = [f"{n:,} {what}" for n, what in ((self.nan, "NaN"), (self.inf, "Inf")) if n]
        return ", ".join([" ".join(parts)] * bool(parts) + counts) or "no finite values"

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Stats:
        return cls(**_known(cls, d))


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a tensor.  Kind-specific fields keep their defaults elsewhere.

    kinds: ``create`` (``inputs``, ``origin``), ``view`` (``base``), ``inplace``
    (``version_before``, ``version_after``, ``aliases``), ``move`` (``from_device``,
    ``to_device``, ``from_dtype``, ``to_dtype``, ``nbytes``, ``source_tensor``, ``inplace``),
    ``backward`` (``grads``), ``numpy`` (a NumPy array sharing the tensor's memory), ``compiled``
    (a call of a ``torch.compile``d function or module: ``op`` its name, ``inputs``, ``outputs``,
    ``graphs`` the number of graphs its compiled code calls (graph breaks included), ``graph_ops``
    their ops where Dynamo keeps them reachable: torch-level with the eager backend
    (``torch.nn.functional.linear``), ATen with aot_eager and inductor (``aten.addmm.default``;
    inductor's before it fuses them), none with another backend; ``tensor`` is its first output,
    or its first input while none was seen).
    """

    seq: int
    kind: str
    op: str
    tensor: TensorRef
    line: int | None = None
    source: str | None = None
    cell: int | None = None
    file: str | None = None
    module: str | None = None
    time_us: float = 0.0
    inputs: tuple[TensorRef, ...] = ()
    origin: str = "op"
    base: TensorRef | None = None
    version_before: int | None = None
    version_after: int | None = None
    aliases: tuple[TensorRef, ...] = ()
    from_device: str | None = None
    to_device: str | None = None
    from_dtype: str | None = None
    to_dtype: str | None = None
    nbytes: int | None = None
    source_tensor: TensorRef | None = None
    inplace: bool = False
    grads: tuple[GradRecord, ...] = ()
    stats: Stats | None = None
    note: str | None = None
    outputs: tuple[TensorRef, ...] = ()
    graphs: int | None = None
    graph_ops: tuple[str, ...] = ()

    _REF_FIELDS: ClassVar[tuple[str, ...]] = ("tensor", "base", "source_tensor")
    _REF_LISTS: ClassVar[tuple[str, ...]] = ("inputs", "aliases", "outputs")

    @property
    def first_seen(self) -> bool:
        """A create that says only where the tracker first met its tensor (``first_seen``)."""
        return first_seen(self.kind, self.origin, self.note)

    @property
    def where(self) -> str:
        """``line 3`` (a cell) or ``train.py:3``; ``block end`` for a tensor first met there."""
        return self.where_in(None)

    def where_in(self, home: int | None) -> str:
        """``where``, said in a report about cell ``home``: another cell's line names its cell."""
        if self.line is None and self.note == END_SEEN:
            return BLOCK_END
        return where_label(self.line, self.file, self.cell, home)

    @property
    def crosses_devices(self) -> bool:
        return self.kind == "move" and self.from_device != self.to_device

    def to_dict(self, *, refs: Callable[[TensorRef], Any] = TensorRef.to_dict) -> dict[str, Any]:
        """The event as JSON-ready data; ``refs`` turns each TensorRef into its JSON value (the log
        writer passes a memo: one dict per TensorRef, which many events share)."""
        # Spelled out, with the output of _to_dict (fields at their default are left out; a test
        # holds the two equal): a log writes every event through here, and the loop cost twice as much.
        out: dict[str, Any] = {"seq": self.seq, "kind": self.kind, "op": self.op, "tensor": refs(self.tensor)}
        if self.line is not None:
            out["line"] = self.line
        if self.source is not None:
            out["source"] = self.source
        if self.cell is not None:
            out["cell"] = self.cell
        if self.file is not None:
            out["file"] = self.file
        if self.module is not None:
            out["module"] = self.module
        if self.time_us != 0.0:
            out["time_us"] = self.time_us
        if self.inputs:
            out["inputs"] = [refs(r) for r in self.inputs]
        if self.origin != "op":
            out["origin"] = self.origin
        if self.base is not None:
            out["base"] = refs(self.base)
        if self.version_before is not None:
            out["version_before"] = self.version_before
        if self.version_after is not None:
            out["version_after"] = self.version_after
        if self.aliases:
            out["aliases"] = [refs(r) for r in self.aliases]
        if self.from_device is not None:
            out["from_device"] = self.from_device
        if self.to_device is not None:
            out["to_device"] = self.to_device
        if self.from_dtype is not None:
            out["from_dtype"] = self.from_dtype
        if self.to_dtype is not None:
            out["to_dtype"] = self.to_dtype
        if self.nbytes is not None:
            out["nbytes"] = self.nbytes
        if self.source_tensor is not None:
            out["source_tensor"] = refs(self.source_tensor)
        if self.inplace:
            out["inplace"] = self.inplace
        if self.grads:
            out["grads"] = [g.to_dict(refs=refs) for g in self.grads]
        if self.stats is not None:
            out["stats"] = self.stats.to_dict()
        if self.note is not None:
            out["note"] = self.note
        if self.outputs:
            out["outputs"] = [refs(r) for r in self.outputs]
        if self.graphs is not None:
            out["graphs"] = self.graphs
        if self.graph_ops:
            out["graph_ops"] = list(self.graph_ops)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        d = _known(cls, d)
        for name in cls._REF_FIELDS:
            if d.get(name) is not None:
                d[name] = TensorRef.from_dict(d[name])
        for name in cls._REF_LISTS:
            d[name] = tuple(TensorRef.from_dict(r) for r in d.get(name, ()))
        d["grads"] = tuple(GradRecord.from_dict(g) for g in d.get("grads", ()))
        d["graph_ops"] = tuple(d.get("graph_ops", ()))
        if d.get("stats") is not None:
            d["stats"] = Stats.from_dict(d["stats"])
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A classic PyTorch mistake recognised while tracking (see ``tensormagic.diagnostics``).

    ``id`` is one of ``tensormagic.diagnostics.IDS``; ``severity`` is ``"error"`` (fails, or will
    fail), ``"warning"`` (silently wrong results) or ``"info"`` (slow); ``line``/``cell``/``file``/
    ``source`` place it like an Event; ``names`` are the tensors involved; ``lines`` the other
    lines the message refers to; ``count`` how many times it happened.
    """

    id: str
    severity: str
    message: str
    line: int | None = None
    names: tuple[str, ...] = ()
    fix: str | None = None
    cell: int | None = None
    file: str | None = None
    source: str | None = None
    lines: tuple[int, ...] = ()
    count: int = 1

    @property
    def where(self) -> str:
        """``line 3`` (a cell) or ``train.py:3``, as ``Event.where``."""
        return where_label(self.line, self.file, self.cell)

    def where_in(self, home: int | None) -> str:
        """``where``, said in a report about cell ``home``, as ``Event.where_in``."""
        return where_label(self.line, self.file, self.cell, home)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnostic:
        d = _known(cls, d)
        d["names"] = tuple(d.get("names", ()))
        d["lines"] = tuple(d.get("lines", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Fold:
    """Events past ``max_events`` that repeat a (line, op, kind) already seen, kept as a count."""

    kind: str
    op: str
    line: int | None
    source: str | None
    cell: int | None
    file: str | None
    count: int

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fold:
        return cls(**_known(cls, d))


#: the note of a tensor the block's end found bound to a name, that no op of the block met, and the
#: place said for it (no line of the block is known to have made or bound it)
END_SEEN = "first seen at the block's end, where a name holds it: made before this block, or by code the tracker cannot see"
BLOCK_END = "block end"


def where_label(line: int | None, file: str | None, cell: int | None, home: int | None = None) -> str:
    """``line 3`` in a cell (or a block without a file), ``train.py:3`` in a file; ``In[2] line 3``
    for a line of another cell than ``home``, the cell a report is about (a function defined in an
    earlier cell and called from this one)."""
    if line is None:
        return "?"
    if cell is not None and home is not None and cell != home:
        return f"In[{cell}] line {line}"
    if file is not None and cell is None:
        return f"{file.rsplit('/', 1)[-1]}:{line}"
    return f"line {line}"


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v)) if isinstance(v, int) else f"{v:g}"
    return f"{v:.4g}"


__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "Diagnostic",
    "Event",
    "Fold",
    "GradRecord",
    "Stats",
    "TensorRef",
]
