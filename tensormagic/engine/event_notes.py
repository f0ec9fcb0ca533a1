"""Notes the build adds to events once they are made: which backward call an event ran during,
and the line that bound a tensor first met with no op (``x = mylib.make()``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from ..model.events import END_SEEN, Event, TensorRef, where_label
from . import statements
from .snapshot import AUTOGRAD_GRAD, NO_OP
from .source import source_text


def seen_note(op: str, note: str | None, inputs: tuple[TensorRef, ...]) -> str:
    """The note of a tensor first met with no op: a gradient, a NumPy array's memory, or made
    by a call the tracker cannot see into."""
    if note == "grad":
        leaf = inputs[0].label if inputs else "a leaf"
        return f"gradient of {leaf}, filled in by backward"
    if op.endswith("from_numpy"):
        return "shares memory with the NumPy array: writing one changes the other"
    if op == NO_OP:
        return END_SEEN if note == "end" else FIRST_SEEN
    return f"made by {op}: no torch op the tracker can see made it"


#: the note of a tensor first met with no op and no maker on its line: what is known, and no more
FIRST_SEEN = "first seen here: made before this block, or by code the tracker cannot see"


#: how a note names the backward call an event happened in
_BACKWARD_CALLS = {"torch.Tensor.backward": "backward()", "torch.autograd.backward": "autograd.backward()",
                   "torch.autograd.grad": "autograd.grad()"}  # fmt: skip


def note_backward(events: list[Event], spans: list[tuple[int, int, str, Any]], place: Any, home: int | None) -> None:
    """Events of records made while a backward call's engine ran (its hooks, Python
    ``Function.backward`` methods: ``backward_run.py``) say so: ``during backward() at line 7``.
    A tensor first seen there (a gradient the engine made, handed to a hook) says that no torch op
    the tracker can see made it.  Before ``place_seen``: an event's ``seq`` is its record's index."""
    for start, end, op, where in spans:
        call = _BACKWARD_CALLS.get(op, f"{op}()")
        cell, fn, line, _src = place(where) if where is not None and where is not ... else (None, None, None, None)
        for i in range(start, min(end, len(events))):
            e = events[i]
            if e.seq != i:
                continue
            at = ""
            if line is not None and (line, fn, cell) != (e.line, e.file, e.cell):
                at = " at " + where_label(line, fn, cell, home)
            if e.kind == "create" and e.origin == "seen":  # not made by the call on its line
                events[i] = replace(e, op="(no visible op)",
                                    note=f"first seen during {call}{at}: no torch op the tracker can see made it")
            else:
                events[i] = replace(e, note=f"during {call}{at}")


def note_applied(events: list[Event], applied: dict[int, tuple[str, str]], first: dict[int, Any]) -> None:
    """The op that made a tensor a custom ``autograd.Function``'s ``forward`` returned says that
    ``apply`` then gave it its grad_fn, which the op's own row (no grad_fn yet) does not show:
    ``MyReLU.apply then gave it grad_fn MyReLUBackward``.  ``first``: tid -> the record that made it,
    its event's index (before ``place_seen``)."""
    for tid, (fn, gf) in applied.items():
        i = first.get(tid)
        if i is None or i >= len(events) or events[i].seq != i or events[i].kind != "create":
            continue
        e = events[i]
        words = f"{fn}.apply then gave it grad_fn {gf}"
        events[i] = replace(e, note=f"{e.note}; {words}" if e.note else words)


def note_grads_in_place(events: list[Event], backwards: list[int], first: Callable[[int], Any]) -> None:
    """A backward that added into a ``.grad`` holding zeros (after ``zero_grad(set_to_none=False)``)
    wrote that tensor in place, bumping its version with no write event of its own: its row says
    ``added in place into w.grad, which held zeros``.  A gradient is such a one where the block
    had it before the previous backward call (``first``: tid -> the index of its first record,
    None before the block, ``NOT_KNOWN`` if the block does not know it)."""
    prev = -1
    for i in backwards:
        e = events[i] if i < len(events) else None
        if e is not None and e.seq == i and e.kind == "backward" and e.op != AUTOGRAD_GRAD:
            into = [g.tensor.label + ".grad" for g in e.grads
                    if not g.accumulated and g.grad_id and _before(first(int(g.grad_id[1:])), prev)]  # fmt: skip
            if into:
                words = f"added in place into {', '.join(into)}, which held zeros"
                events[i] = replace(e, note=f"{e.note}; {words}" if e.note else words)
        prev = i


#: ``note_grads_in_place``'s ``first`` for a tensor the block does not know
NOT_KNOWN = object()


def _before(first: Any, prev: int) -> bool:
    return first is not NOT_KNOWN and (first is None or first <= prev)


def place_seen(events: list[Event], block: tuple[str, int, int | None] | None,
                place: Any) -> list[Event]:  # fmt: skip
    """Move each ``seen`` creation to the line that bound the tensor, when the source says."""
    text = source_text(block[0]) if block is not None else None
    if block is None or text is None:
        return events
    filename, lo, hi = block
    if hi is None and lo > 1:
        hi = statements.statement_end(text, lo)
    out = list(events)
    for e in events:
        if e.kind != "create" or e.origin != "seen" or not e.tensor.names or (e.note or "").startswith("gradient"):
            continue
        bound = next((b for n in e.tensor.names if (b := statements.binding_line(text, n, lo, hi))), None)
        if bound is None:
            continue
        cell, fn, line, src = place((filename, bound))
        if line == e.line and fn == e.file and cell == e.cell:
            continue
        # the line that bound it: a call there that makes tensors no op shows made it
        # (``p = nn.Parameter(…)``); any other call may have handed back an older tensor
        op = statements.unseen_maker(src) or e.op
        moved = replace(e, line=line, source=src, cell=cell, file=fn, op=op, note=seen_note(op, None, ()))
        out.remove(e)
        pos = next((i for i, x in enumerate(out)
                    if x.line is not None and x.line > line and x.cell == cell and x.file == fn), len(out))  # fmt: skip
        out.insert(pos, moved)
    return [ev if ev.seq == i else replace(ev, seq=i) for i, ev in enumerate(out)]
