"""Wording shared by every view, so text, HTML and the panel say the same thing."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ..model.events import NO_VERSION, SEEN, Event, Fold, TensorRef, where_label
from ..model.gradgraph import GradGraph
from ..model.recording import Recording, TensorRecord

KIND_WORD = {
    "create": "new",
    "view": "view",
    "inplace": "write",
    "move": "move",
    "backward": "backward",
    "numpy": "numpy",
    "compiled": "compiled",
}
#: a folded run of moves may hold casts too (a fold keeps no devices)
FOLD_WORD = {**KIND_WORD, "move": "move/cast"}


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 cast``, ``2 casts``, ``0 casts``: a count with the word that agrees with it."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, its end marked "…" where it was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def wrap(text: str, width: int, indent: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces, each line after the
    first indented by ``indent``: a row whose facts all count (a backward's gradients) is wrapped,
    not cut, at the last of its parts that fits.  A word longer than a line stays whole."""
    if len(text) <= width:
        return [text]
    lines: list[str] = []
    line = text
    pad = " " * indent
    start = len(text) - len(text.lstrip(" "))  # a break falls after the line's own indent
    while len(line) > width:
        # a row's parts are two spaces apart (``  ← x``, ``  (note)``): a part moved whole reads best
        cut = line.rfind("  ", max(start, indent) + 1, width + 1)
        if cut < 0:
            cut = line.rfind(" ", start + 1, width + 1)
        while cut > start and line[cut - 1] == " ":  # not inside a run of spaces that aligns columns
            cut -= 1
        if cut <= start:
            cut = line.find(" ", width)
            if cut < 0:
                break
        rest = pad + line[cut:].lstrip(" ")
        if len(rest) >= len(line):  # no shorter (a width inside the indent): the rest as it is
            break
        lines.append(line[:cut].rstrip())
        line, start = rest, indent
    lines.append(line)
    return lines


def version_words(version: int) -> str:
    """The version row: the count of in-place writes, or that there is no counter to count them
    (``-1`` is the recorder's mark, not a version torch has)."""
    if version == NO_VERSION:
        return "none: no version counter (an inference tensor), in-place writes are not counted"
    return f"{version:,} (in-place writes so far)"


def write_versions(e: Event, arrow: str = "→") -> str:
    """What an in-place write did to its tensor's version counter: ``version 2→3``; for an
    inference tensor, which keeps none (``-1`` is the recorder's mark), only that it wrote in
    place; where the counter stayed, the data was replaced without a write torch counts."""
    if NO_VERSION in (e.version_before, e.version_after):
        return "in place (an inference tensor: no version counter)"
    if e.version_before == e.version_after:
        return "data replaced (no version bump)"
    return f"version {e.version_before}{arrow}{e.version_after}"


def kind_word(e: Event) -> str:
    """The word for an event's kind; a ``move`` that stays on its device (a dtype change such as
    ``(pred == y).float()``) is a ``cast``, as ``move_counts`` counts it."""
    if e.kind == "move" and not e.crosses_devices:
        return "cast"
    if e.kind == "create" and e.first_seen:  # no op made it here: "new" would say what is not known
        return "seen"
    return KIND_WORD.get(e.kind, e.kind)


#: the backward op that returns gradients instead of filling ``.grad``
AUTOGRAD_GRAD = "torch.autograd.grad"
#: (kind, the word for one, for several): "created", "in-place" and "backward" do not change
COUNT_WORDS = (
    ("create", "created", "created"),
    ("view", "view", "views"),
    ("inplace", "in-place", "in-place"),
    ("move", "move", "moves"),
    ("backward", "backward", "backward"),
)


EXISTED = "existed before this cell"


def made_before_words(trec: TensorRecord) -> str:
    """``existed before this cell (made In[5] line 3, torch.randn)``: where an earlier tracked
    cell made it, when one did."""
    mb = trec.made_before
    if not isinstance(mb, tuple):
        return EXISTED
    cell, file, line, op = mb
    at = f"In[{cell}] line {line}" if cell is not None else where_label(line, file, None)
    return f"{EXISTED} (made {at}, {short_op(op)})"


def fmt_shape(shape: tuple[int, ...]) -> str:
    # None: a nested tensor's dimension whose size differs between its components
    return "×".join("?" if s is None else str(s) for s in shape) if shape else "scalar"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def short_op(op: str) -> str:
    """``torch.Tensor.add_`` → ``add_``; ``torch.nn.functional.relu`` → ``F.relu``."""
    for prefix, repl in (("torch.Tensor.", "."), ("torch.nn.functional.", "F."), ("torch.", "torch.")):
        if op.startswith(prefix):
            return repl + op[len(prefix) :] if repl != "torch." else op
    return op


def meta_words(r: TensorRef) -> str:
    parts = [fmt_shape(r.shape), r.dtype, r.device]
    if r.grad_fn:
        parts.append(r.grad_fn)
    elif r.requires_grad:
        parts.append("requires_grad (leaf)")
    return " ".join(parts)


def labels(refs: Any, steps: Mapping[str, str] | None = None) -> str:
    """Tensors' names joined, a run of three or more of one name said once with its count: a batch
    stacked from four samples is ``next(loader) temporary ×4``, not the same words four times
    (``y * y`` keeps ``y, y``); ``steps``: names with their step, where one has it."""
    runs: list[list[Any]] = []
    for r in refs:
        label = (steps.get(r.id) if steps else None) or r.label
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    out: list[str] = []
    for label, n in runs:
        out.extend([label] * n if n < 3 else [f"{label} ×{n}"])
    return ", ".join(out)


def describe(e: Event, steps: Mapping[str, str] | None = None) -> str:
    """What happened, in one line of plain words (without the tensor's own name and op), with the
    event's note (a create's origin, ``during backward()`` for what a backward hook did).
    ``steps`` (``lines.step_labels``): the other tensors it names are said with their step
    (``← X (step 4)``), as the rows name theirs."""
    text = _describe(e, steps or {})
    if e.note and e.kind != "create":  # a create's note is placed after its inputs
        text += f"  ({e.note})"
    return text


def _describe(e: Event, steps: Mapping[str, str]) -> str:
    t = e.tensor
    if e.kind == "create":
        text = meta_words(t)
        if e.inputs:
            text += "  ← " + labels(e.inputs, steps)
        if e.note:
            text += f"  ({e.note})"
        return text
    if e.kind == "view":
        base = (steps.get(e.base.id) or e.base.label) if e.base else "?"
        return f"{fmt_shape(t.shape)} view of {base} (shares its memory)"
    if e.kind == "inplace":
        text = write_versions(e)
        if e.aliases:
            text += "; also changes " + ", ".join(steps.get(a.id) or a.label for a in e.aliases)
        return text
    if e.kind == "move":
        parts = []
        if e.from_device != e.to_device:
            parts.append(f"{e.from_device}→{e.to_device}")
        if e.from_dtype != e.to_dtype:
            parts.append(f"{e.from_dtype}→{e.to_dtype}")
        text = " ".join(parts) or "copy"
        text += f"  {fmt_bytes(e.nbytes)}"
        if e.inplace:
            text += "  (in place)"
        return text
    if e.kind == "backward":
        if e.op == AUTOGRAD_GRAD:  # returns the gradients; no tensor's .grad changes
            # the shape in brackets: "the gradient of t6 3" read as one name
            got = ", ".join(f"{g.tensor.label} ({fmt_shape(g.shape)})" for g in e.grads)
            what = "gradients" if len(e.grads) > 1 else "gradient"
            return f"from {t.label}: returns the {what} of {got or 'nothing'}  (fills no .grad)"
        grads = ", ".join(
            f"{g.tensor.label}.grad {fmt_shape(g.shape)}" + (" (accumulated)" if g.accumulated else "")
            for g in e.grads
        )
        return f"from {t.label}" + (f" → {grads}" if grads else "  (left no gradient in any leaf's .grad)")
    if e.kind == "numpy":
        return "NumPy array sharing this tensor's memory: writing one changes the other"
    if e.kind == "compiled":
        return compiled_words(e)
    return ""  # pragma: no cover - unknown kinds come only from newer logs


def compiled_words(e: Event, max_ops: int = 8) -> str:
    """``x → out · 1 graph: linear, relu, linear``: a compiled call's tensors and graphs."""
    ins = labels(e.inputs) or "no tensor"
    outs = ", ".join(r.label for r in e.outputs) or "no tensor seen"
    text = f"torch.compile'd: {ins} → {outs}"
    if e.graphs is not None:
        text += f" · {plural(e.graphs, 'graph')}"
        if e.graph_ops:
            ops = [short_op(o) for o in e.graph_ops[:max_ops]]
            more = len(e.graph_ops) - len(ops)
            text += ": " + ", ".join(ops) + (f", … {plural(more, 'more op')}" if more > 0 else "")
    return text


def line_groups(events: tuple[Event, ...] | list[Event]) -> Iterator[tuple[Event, list[Event]]]:
    """Consecutive events of one source line, as (first event, events)."""
    group: list[Event] = []
    key = None
    for e in events:
        k = (e.cell, e.file, e.line)
        if group and k != key:
            yield group[0], group
            group = []
        key = k
        group.append(e)
    if group:
        yield group[0], group


def fold_words(f: Fold) -> tuple[str, str]:
    """(where, what) for a folded run of events: ``line 5``, ``write .add_ ×200 more (folded)``."""
    what = f"{FOLD_WORD.get(f.kind, f.kind)} {short_op(f.op)} ×{f.count:,} more (folded)"
    return where_label(f.line, f.file, f.cell), what


def capped_line_groups(events: tuple[Event, ...] | list[Event],
                       cap: int) -> Iterator[tuple[Event, list[Event]]]:  # fmt: skip
    """``line_groups`` showing at most ``cap`` events in all (a one-line loop body is one group)."""
    left = cap
    for first, group in line_groups(events):
        if left <= 0:
            return
        yield first, group[:left]
        left -= len(group)


def move_counts(rec: Recording) -> tuple[int, int, int]:
    """(moves between devices, casts on one device, folded moves of either sort): a same-device
    dtype change (``(pred == y).float()``) is a cast, counted apart from device moves."""
    return rec.move_counts()


def count_words(rec: Recording, counts: dict[str, int] | None = None) -> str:
    c = rec.counts() if counts is None else counts
    parts = []
    for k, one, many in COUNT_WORDS:
        if k != "move":
            parts.append(plural(c.get(k, 0), one, many))
            if k == "create" and c.get(SEEN):  # tensors no op made: met first here, made who knows where
                parts.append(f"{c[SEEN]:,} first seen")
            continue
        moves, casts, folded = move_counts(rec) if c.get("move") else (0, 0, 0)  # folds count in c too
        parts.append(f"{plural(moves, 'move')}, {plural(casts, 'cast')}")
        if folded:
            parts.append(folded_moves_words(folded))
    if c.get("compiled"):  # only where there are some: a block without keeps its usual line
        parts.append(plural(c["compiled"], "compiled call"))
    moved = rec.bytes_moved()
    if moved:
        parts.append(f"{fmt_bytes(moved)} between devices")
    return ", ".join(parts)


def folded_moves_words(n: int) -> str:
    """``3 moves/casts folded``: a fold keeps no devices, so it may hold either sort."""
    return f"{plural(n, 'move/cast', 'moves/casts')} folded"


SEVERITIES = ("error", "warning", "info")


def diagnostic_words(diagnostics: Any) -> str:
    """``1 error, 2 warnings``: the findings counted by the severity each one states."""
    counts: dict[str, int] = {}
    for d in diagnostics:
        sev = str(getattr(d, "severity", "warning") or "warning")
        counts[sev] = counts.get(sev, 0) + 1
    order = [s for s in SEVERITIES if s in counts] + sorted(s for s in counts if s not in SEVERITIES)
    return ", ".join(plural(counts[s], s, s if s == "info" else None) for s in order)


def tree_lines(g: GradGraph) -> list[str]:
    """The graph as an indented tree; shared subgraphs are shown once and referred to after."""
    if g.root is None:
        return ["(no grad_fn: not part of an autograd graph)"]
    lines: list[str] = []
    shown: set[int] = set()

    def walk(nid: int, prefix: str, last: bool, top: bool, mult: int) -> None:
        node = g.find(nid)
        branch = "" if top else ("└─ " if last else "├─ ")
        if node is None:  # past a truncated graph's last node
            lines.append(f"{prefix}{branch}…")
            return
        label = node.label + (f"  ×{mult}" if mult > 1 else "")
        if nid in shown and g.children(nid):
            lines.append(f"{prefix}{branch}{label}  (see above)")
            return
        shown.add(nid)
        lines.append(f"{prefix}{branch}{label}")
        kids = g.children(nid)
        uniq = list(dict.fromkeys(kids))
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, k in enumerate(uniq):
            walk(k, child_prefix, i == len(uniq) - 1, False, kids.count(k))

    walk(g.root, "", True, True, 1)
    return lines
