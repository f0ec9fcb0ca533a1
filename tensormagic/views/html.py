"""Self-contained, escaped HTML: for nbconvert, GitHub and exports (no scripts, no CDN)."""

from __future__ import annotations

from html import escape

from ..model.events import Fold
from ..model.recording import Recording
from .common import KIND_WORD, capped_line_groups, count_words, describe, fold_words, short_op, tree_lines
from .text import summary_line

MAX_ROWS = 2000

STYLE = """
<style>
.tm-report{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;line-height:1.45}
.tm-report table{border-collapse:collapse}
.tm-report td,.tm-report th{padding:1px 8px;text-align:left;vertical-align:top}
.tm-report .tm-src td{background:rgba(127,127,127,.12);font-weight:600}
.tm-report .tm-k-create{color:#1a7f37}.tm-report .tm-k-inplace{color:#bc4c00}
.tm-report .tm-k-move{color:#0969da}.tm-report .tm-k-backward{color:#8250df}
.tm-report .tm-k-view{color:#6e7781}.tm-report .tm-warn{color:#cf222e}
.tm-report pre{margin:2px 0 6px 12px}
</style>
"""


def h(value: object) -> str:
    return escape(str(value), quote=True)


def fold_row(f: Fold) -> str:
    """A folded run of events as one table row (reports and the panel's timeline)."""
    where, what = fold_words(f)
    return f"<tr><td>{h(where)}</td><td colspan=3>{h(what)}</td></tr>"


def render_recording(rec: Recording, *, max_rows: int = MAX_ROWS) -> str:
    parts = [STYLE, '<div class="tm-report">', f"<div><b>{h(summary_line(rec))}</b></div>"]
    if rec.internal_error:
        parts.append(f"<div class='tm-warn'>recording incomplete: {h(rec.internal_error)}</div>")
    parts.extend(f"<div class='tm-muted'>{h(tid)} is {h(why)}</div>" for tid, why in list(rec.unreadable.items())[:5])
    parts.append("<table>")
    n = 0
    for first, group in capped_line_groups(rec.events, max_rows):
        parts.append(f"<tr class='tm-src'><td>{h(first.where)}</td>"
                     f"<td colspan=3>{h(first.source or '')}</td></tr>")  # fmt: skip
        for e in group:
            parts.append(
                f"<tr><td class='tm-k-{h(e.kind)}'>{h(KIND_WORD.get(e.kind, e.kind))}</td>"
                f"<td>{h(e.tensor.label)}</td><td>{h(short_op(e.op))}</td><td>{h(describe(e))}</td></tr>"
            )
        n += len(group)
    if n < len(rec.events):
        parts.append(f"<tr><td colspan=4>… {len(rec.events) - n} more events</td></tr>")
    for f in rec.folds:
        parts.append(fold_row(f))
    parts.append("</table>")
    for d in rec.diagnostics:
        parts.append(f"<div class='tm-warn'>⚠ [{h(d.id)}] {h(d.where)}: {h(d.message)}"
                     + (f"<br>fix: {h(d.fix)}" if getattr(d, "fix", None) else "") + "</div>")  # fmt: skip
    tops = rec.top_results()
    if tops:
        parts.append("<div><b>autograd graphs</b></div>")
        for r in tops:
            g = rec.graphs.graph(r.id, r.label)
            parts.append(f"<div>{h(r.label)}: {h(g.chain())}</div><pre>{h(chr(10).join(tree_lines(g)))}</pre>")
    parts.append("</div>")
    return "".join(parts)


__all__ = ["render_recording", "h", "count_words"]
