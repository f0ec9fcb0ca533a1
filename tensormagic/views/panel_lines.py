"""The Lines and Steps tabs as tables and escaped HTML (no ipywidgets here): one row per source
line × op, the events behind a row, and named tensors over the steps of a loop as sparklines."""

from __future__ import annotations

from typing import Mapping, Sequence

from ..model.recording import Recording
from .common import describe, fmt_bytes, fmt_shape, kind_word, plural, short_op
from .lines import LineRow, StepHistory, line_rows, step_history
from .table import PAGE_SIZE, Column, Table, h

MAX_ROW_EVENTS = 200


def _made(r: LineRow) -> str:
    """``40 · float32 · 64×16, 64×2``: how many tensors the op made here, their dtypes and their
    shapes (two at most)."""
    # a tensor first met here that no recorded op made: made before the cell, or where no mode
    # sees (an nn.Parameter wrapping a tensor, a DataLoader worker's batch)
    seen = f"{r.seen:,} first seen here, made by no recorded op" if r.seen else ""
    if not r.made:
        return seen
    shown = list(r.shapes)[:2]
    more = " +more" if len(r.shapes) > len(shown) else ""
    made = f"{r.made:,} · {', '.join(r.dtypes)} · " + ", ".join(fmt_shape(s) for s in shown) + more
    return f"{made}; {seen}" if seen else made


def calls_words(r: LineRow) -> str:
    """``10``, or ``10 +2,000 folded events`` past max_events (folds count events, not calls)."""
    folded = f" +{plural(r.folded, 'folded event')}" if r.folded else ""
    return f"{r.calls:,}{folded}"


def _moves(r: LineRow) -> str:
    parts = [f"{plural(r.moves, 'move')} · {fmt_bytes(r.moved_bytes)}"] if r.moves else []
    if r.casts:
        parts.append(f"{plural(r.casts, 'cast')} · {fmt_bytes(r.cast_bytes)}" if r.cast_bytes else plural(r.casts, "cast"))
    return ", ".join(parts)


def _n(v: int) -> str:
    return f"{v:,}" if v else ""


LINE_COLUMNS: tuple[Column[LineRow], ...] = (
    Column("line", lambda r: r.where, lambda r: r.line),
    Column("source", lambda r: r.source.strip()),
    Column("op", lambda r: short_op(r.op), lambda r: r.op, lambda r: "tm-k-create"),
    Column("calls", calls_words, lambda r: r.calls + r.folded),
    Column("made", _made, lambda r: r.made),
    Column("allocated", lambda r: fmt_bytes(r.allocated) if r.allocated else "", lambda r: r.allocated),
    Column("writes", lambda r: _n(r.writes), lambda r: r.writes, lambda r: "tm-k-inplace"),
    Column("moves & casts", _moves, lambda r: (r.moved_bytes, r.casts), lambda r: "tm-k-move"),
    Column("diagnostics", lambda r: ", ".join(r.diagnostics), lambda r: len(r.diagnostics), lambda r: "tm-warn"),
)  # fmt: skip


def _line_search(r: LineRow) -> str:
    return f"{r.where}\x00{r.source}\x00{r.op}\x00{' '.join(r.dtypes)}\x00{' '.join(r.diagnostics)}"


def lines_table(rec: Recording, page_size: int = PAGE_SIZE, counts: dict[str, int] | None = None) -> Table[LineRow]:
    """The Lines tab: a row per source line × op; a click on a row shows its events.  Columns no
    row fills (no write, move or finding in the cell) are left out: the table must fit a notebook."""
    counts = rec.counts() if counts is None else counts
    empty = {"writes": not (counts.get("inplace") or any(e.inplace for e in rec.events if e.kind == "move")),
             "moves & casts": not counts.get("move"), "diagnostics": not rec.diagnostics}  # fmt: skip
    columns = [c for c in LINE_COLUMNS if not empty.get(c.title)]
    return Table(line_rows(rec), columns, _line_search, page_size=page_size, key=lambda r: f"l:{r.index}")


def row_events_html(r: LineRow, labels: Mapping[str, str] | None = None) -> str:
    """The events behind one Lines row (the first ``MAX_ROW_EVENTS``), each tensor clickable and
    named with its step where ``labels`` (``step_labels``) gives one."""
    labels = labels or {}
    head = (f"<div class='tm-card'><h4>{h(r.where)} · {h(short_op(r.op))} · {calls_words(r)} "
            f"{'call' if r.calls == 1 and not r.folded else 'calls'}, {plural(r.count, 'event')}</h4>"
            f"<div><code title='{h(r.source)}'>{h(r.source.strip())}</code></div>")  # fmt: skip
    rows = []
    for e in r.events[:MAX_ROW_EVENTS]:
        text = describe(e, labels)
        rows.append(f"<tr data-tm='t:{h(e.tensor.id)}'><td class='tm-k-{h(e.kind)}'>"
                    f"{h(kind_word(e))}</td><td class='tm-link'>{h(labels.get(e.tensor.id) or e.tensor.label)}</td>"
                    f"<td title='{h(text)}'>{h(text)}</td></tr>")  # fmt: skip
    more = r.count - min(len(r.events), MAX_ROW_EVENTS)
    tail = f"<div class='tm-muted'>… {more:,} more events</div>" if more > 0 else ""
    return f"{head}<table class='tm-t tm-clickable'><tbody>{''.join(rows)}</tbody></table>{tail}</div>"


# -- Steps ----------------------------------------------------------------------------------------


def sparkline_svg(values: Sequence[float | int | None], *, width: int = 140, height: int = 22,
                  label: str = "") -> str:  # fmt: skip
    """A line of the values over steps, inline SVG; missing steps leave gaps.  The stroke is the
    theme's text colour so it reads in light and dark themes."""
    pts = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if not pts:
        return "<span class='tm-muted'>—</span>"
    lo = min(v for _i, v in pts)
    hi = max(v for _i, v in pts)
    span = (hi - lo) or 1.0
    n = max(len(values) - 1, 1)
    coords = " ".join(f"{i / n * (width - 2) + 1:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
                      for i, v in pts)  # fmt: skip
    title = f"{label}: first {pts[0][1]:.4g}, last {pts[-1][1]:.4g}, min {lo:.4g}, max {hi:.4g}"
    return (f"<svg class='tm-spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
            f"aria-label='{h(title)}'><title>{h(title)}</title><polyline fill='none' "
            f"style='stroke:var(--jp-content-font-color1,currentColor)' stroke-width='1.2' "
            f"points='{coords}'/></svg>")  # fmt: skip


def _versions_text(s: StepHistory) -> str:
    got = [v for v in s.versions if v is not None]
    if s.grad:
        acc = sum(1 for v in got if v)
        return f"received in {plural(len(got), 'step')}" + (f" ({acc:,} accumulated)" if acc else "")
    if not got:
        return ""
    return f"{got[0]} → {got[-1]} (written in {plural(len(got), 'step')})"


def steps_html(rec: Recording) -> str:
    """Named tensors written during the loop, and the gradients they received, per step."""
    n, hist = step_history(rec)
    if not hist:
        return "<div class='tm-muted'>no named tensor was written or given a gradient inside a loop</div>"
    stats = any(v is not None for s in hist for v in s.means)
    note = ("mean and norm from the statistics recorded with --stats" if stats else
            "track with --stats to see each tensor's mean and norm per step")  # fmt: skip
    head = "<tr><th>tensor</th><th>version per step</th><th></th>" + (
        "<th>mean</th><th>norm</th>" if stats else "") + "</tr>"  # fmt: skip
    rows = []
    for s in hist:
        versions = [None if v is None else float(v) for v in s.versions]
        # a gradient has no version history worth a line: it is new, or accumulated, each step
        spark = "" if s.grad else sparkline_svg(versions, label=s.name + " version")
        cells = [f"<td class='tm-link' title='{h(s.name)}'>{h(s.name)}</td>", f"<td>{spark}</td>",
                 f"<td>{h(_versions_text(s))}</td>"]  # fmt: skip
        if stats:
            cells.append(f"<td>{sparkline_svg(s.means, label=s.name + ' mean')}</td>")
            cells.append(f"<td>{sparkline_svg(s.norms, label=s.name + ' norm')}</td>")
        key = f" data-tm='t:{h(s.tensor_id)}'" if s.tensor_id else ""
        rows.append(f"<tr{key}>{''.join(cells)}</tr>")
    return (f"<div><b>{n:,}</b> steps (a step starts where the loop's first line runs again); {h(note)}</div>"
            f"<table class='tm-t tm-clickable'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")


__all__ = ["LINE_COLUMNS", "lines_table", "row_events_html", "sparkline_svg", "steps_html"]
