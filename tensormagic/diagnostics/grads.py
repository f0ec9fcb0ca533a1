"""Diagnostic ``grad-accumulation``: a backward that adds onto ``.grad`` left over from before a step.

Decided from the recording's events after the block: each leaf's ``.grad`` starts fresh when a
backward finds it empty or zeroed (``accumulated`` false, or a ``zero_`` on the gradient tensor);
an in-place write to the leaf itself is an optimizer step (or a manual update).  A backward that
accumulates onto a gradient that has lived through a step is the mistake; several backward calls
before one step (deliberate accumulation) are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model.events import Diagnostic, Event
from .catalog import severity
from .context import op_words

_ZEROING = ("zero_", "_foreach_zero_", "fill_")


@dataclass
class _Hit:
    event: Event
    labels: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    leaves: set[str] = field(default_factory=set)
    passes: int = 0
    steps: int = 0
    count: int = 0
    last_seq: int = -1


def accumulation(events: tuple[Event, ...]) -> list[Diagnostic]:
    state: dict[str, list[int]] = {}  # leaf id -> [backward passes in its .grad, steps since fresh]
    grad_of: dict[str, str] = {}  # gradient tensor id -> leaf id
    base_of: dict[str, str] = {}  # view / .data id -> the tensor it aliases
    zeroed: set[str] = set()
    hits: dict[Any, _Hit] = {}
    for e in events:
        if e.kind == "view" and e.base is not None:
            base_of[e.tensor.id] = base_of.get(e.base.id, e.base.id)
        elif e.kind == "inplace" or (e.kind == "move" and e.inplace):
            tid = base_of.get(e.tensor.id, e.tensor.id)
            st = state.get(tid)
            if st is not None and e.version_after != e.version_before:
                st[1] += 1
            leaf = grad_of.get(tid)
            if leaf is not None and e.op.rsplit(".", 1)[-1] in _ZEROING:
                zeroed.add(leaf)
        elif e.kind == "backward" and e.op != "torch.autograd.grad":  # that one fills no .grad
            for g in e.grads:
                lid = g.tensor.id
                if g.grad_id:
                    grad_of[g.grad_id] = lid
                st = state.get(lid)
                if st is None or not g.accumulated or lid in zeroed:
                    state[lid] = [1, 0]
                    zeroed.discard(lid)
                    continue
                st[0] += 1
                if st[1] == 0:
                    continue  # several backward passes before one step: deliberate accumulation
                h = hits.setdefault((e.cell, e.file, e.line), _Hit(e))
                if h.last_seq != e.seq:
                    h.last_seq, h.count = e.seq, h.count + 1
                if lid not in h.leaves:
                    h.leaves.add(lid)
                    h.labels.append(g.tensor.label)
                    h.names.extend(g.tensor.names[:1])
                h.passes, h.steps = max(h.passes, st[0]), max(h.steps, st[1])
    return [_diagnostic(h) for h in hits.values()]


def _diagnostic(h: _Hit) -> Diagnostic:
    e, n = h.event, len(h.labels)
    shown = ", ".join(f"{x}.grad" for x in h.labels[:4]) + (f" and {n - 4} more" if n > 4 else "")
    text = (f"{op_words(e.op)} added onto gradients left over from before an optimizer step: {shown} "
            f"now hold{'s' if n == 1 else ''} the sum of {h.passes} backward passes, with {h.steps} optimizer "
            f"step{'s' if h.steps != 1 else ''} between them (.grad accumulates until it is zeroed).")
    fix = ("call optimizer.zero_grad() once per step, before backward() (or set p.grad = None); to "
           "accumulate on purpose, zero right after each step")
    return Diagnostic(id="grad-accumulation", severity=severity("grad-accumulation"), message=text,
                      line=e.line, names=tuple(h.names), fix=fix, cell=e.cell, file=e.file,
                      source=e.source, count=h.count)  # fmt: skip
