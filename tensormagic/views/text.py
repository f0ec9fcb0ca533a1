"""The plain-text report: terminal IPython, scripts, ``python -m tensormagic show``."""

from __future__ import annotations

from ..model.events import GradRecord
from ..model.recording import Recording
from .common import (
    AUTOGRAD_GRAD,
    EXISTED,
    capped_line_groups,
    count_words,
    describe,
    diagnostic_words,
    fit,
    fold_words,
    kind_word,
    made_before_words,
    plural,
    short_op,
    tree_lines,
    wrap,
)  # fmt: skip
from .inert import inert, inert_line
from .lines import step_labels

MAX_LINES = 400


def summary_line(rec: Recording) -> str:
    """One line, inert on a terminal (an exception message may hold newlines or escapes)."""
    where = f"cell {rec.cell}" if rec.cell is not None else "block"
    status = "  FAILED: " + rec.error if rec.failed and rec.error else ""
    warn = f" · {diagnostic_words(rec.diagnostics)}" if rec.diagnostics else ""
    return inert_line(f"tensormagic · {where} · {count_words(rec)}{warn} · {rec.duration_s * 1000:,.1f} ms{status}")


#: where an event row's description starts (after kind, name and op): its wrapped lines start there
DESCRIBE_COLUMN = 49
#: the narrowest report: a row's description needs some room after its column
MIN_WIDTH = DESCRIBE_COLUMN + 11


def render_recording(rec: Recording, *, width: int = 100) -> str:
    """The report; sources, names, messages and notes come from the user or a log: made inert.
    A ``width`` under ``MIN_WIDTH`` is taken as ``MIN_WIDTH``."""
    width = max(width, MIN_WIDTH)
    events = rec.events  # made first: a build that fails says so in ``internal_error``
    out = [summary_line(rec)]
    if rec.internal_error:
        out.append(f"  note: recording incomplete ({rec.internal_error})")
    out.extend(fit(f"  note: {note}", width) for note in unreadable_notes(rec))
    n = 0
    steps = step_labels(rec)  # a name shared by tensors of several steps says which step
    for first, group in capped_line_groups(events, MAX_LINES):
        src = (first.source or "").strip()
        out.append(fit(f"{first.where_in(rec.cell):>8}  {src}", width))
        for e in group:
            kind = kind_word(e)
            row = f"{'':10}{kind:8} {steps.get(e.tensor.id) or e.tensor.label:<10} {short_op(e.op):<18} {describe(e, steps)}"
            out.extend(wrap(row, width, DESCRIBE_COLUMN))
        n += len(group)
    if n < len(events):
        more = plural(len(events) - n, "more event")
        out.append(f"          … {more} not listed here (the recording's events hold them all)")
    for f in rec.folds:
        where, what = fold_words(f)
        out.append(f"{where:>8}  {what}")
    if rec.folded_tensors:
        more = plural(rec.folded_tensors, "more tensor")
        out.append(f"          … {more}, made and freed by folded events (counted, not kept)")
    out.extend(fit(line, width) for line in before_lines(rec))
    if rec.diagnostics:  # a heading of their own: under "existed before" they read as its list
        out.append("diagnostics:")
    for d in rec.diagnostics:
        severity = getattr(d, "severity", None) or "warning"
        out.extend(wrap(f"  ⚠ {severity} [{d.id}] {d.where_in(rec.cell)}: {d.message}", width, 4))
        if getattr(d, "fix", None):
            out.extend(wrap(f"     fix: {d.fix}", width, 10))
    results = rec.results()
    if results:
        out.append("autograd graphs:")
        for r in rec.top_results():
            g = rec.graphs.graph(r.id, r.label)
            out.append(f"  {r.label}: {g.chain()}")
            out.extend("    " + line for line in tree_lines(g))
    # what backward left in .grad; autograd.grad's gradients are returned, not stored there
    # one line a gradient tensor: backward calls that accumulate into the same .grad name it again
    grads: dict[str, GradRecord] = {}
    for e in events:
        if e.kind == "backward" and e.op != AUTOGRAD_GRAD:
            for g in e.grads:
                grads.setdefault(g.grad_id or "", g)
    for g in grads.values():
        rec_t = rec.tensors.get(g.grad_id or "")
        stats = rec_t.stats(sync=False) if rec_t is not None else None
        if stats is not None:
            out.append(f"  {g.tensor.label}.grad: {stats.summary()}")
    return inert("\n".join(out))


#: tensors listed with where they were made before the cell (the rest are counted)
MAX_BEFORE = 10


def before_lines(rec: Recording) -> list[str]:
    """The tensors the cell used that existed before it: each with where an earlier tracked cell
    made it and its history across cells (``%trackgrad on``); those no tracked cell saw made, by name."""
    if not rec.before:
        return []
    known, unknown = [], []
    for trec in rec.tensors.values():
        if isinstance(trec.made_before, tuple):
            known.append(trec)
        elif trec.made_before is None and trec.names:
            unknown.append(trec.label)
    out = ["existed before this cell:"] if known or unknown else []
    for trec in known[:MAX_BEFORE]:
        words = trec.history or made_before_words(trec).removeprefix(EXISTED).strip(" ()")
        out.append(f"  {trec.label}: {words}")
    if len(known) > MAX_BEFORE:
        out.append(f"  … {len(known) - MAX_BEFORE:,} more made in earlier tracked cells")
    if unknown:
        shown = ", ".join(unknown[:6]) + (f", … ({len(unknown):,} in all)" if len(unknown) > 6 else "")
        out.append(f"  no tracked cell saw these made: {shown}")  # the statement first: a cut line keeps it
    return out


#: the tensors read only in part that a report names one by one; the rest are counted
MAX_UNREADABLE = 5


def unreadable_notes(rec: Recording) -> list[str]:
    """One note per tensor the tracker could read only in part (``a (t5) is an inference tensor:
    …``), then how many more.  A reason recorded without the tensor's kind (it was freed) is no
    noun phrase ("no version counter: …"): it follows a colon, not "is"."""
    items = list(rec.unreadable.items())
    notes = [f"{_label(rec, tid)} {'is' if why.startswith(('a ', 'an ')) else '—'} {why}"
             for tid, why in items[:MAX_UNREADABLE]]  # fmt: skip
    if len(items) > MAX_UNREADABLE:
        notes.append(f"… {plural(len(items) - MAX_UNREADABLE, 'more tensor')} read only in part")
    return notes


def _label(rec: Recording, tid: str) -> str:
    """A tensor's name and id (``y (t5)``), or its id."""
    tr = rec.tensors.get(tid)
    return f"{tr.names[0]} ({tid})" if tr is not None and tr.names else tid
