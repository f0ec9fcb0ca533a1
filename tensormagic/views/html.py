"""Self-contained, escaped HTML: for nbconvert, GitHub and exports (no scripts, no CDN)."""

from __future__ import annotations

from html import escape

from ..model.events import Fold
from ..model.recording import Recording
from .common import capped_line_groups, count_words, describe, fmt_bytes, fold_words, kind_word, plural, short_op, tree_lines
from .lines import step_labels
from .text import summary_line, unreadable_notes

MAX_ROWS = 2000
#: Events listed under the per-line summary of a cell with loops (the summary says the rest).
MAX_LOOP_ROWS = 200

# The style sheet's text sits in an HTML comment: CSS ignores the <!-- and --> tokens, and a
# sanitizer that drops or escapes <style> (nbconvert --sanitize-html, GitHub) drops the comment
# with it, so no CSS shows as text where the report is sanitized.
STYLE = """
<style><!--
.tm-report{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;line-height:1.45}
.tm-report table{border-collapse:collapse}
.tm-report table td,.tm-report table th{padding:1px 8px!important;text-align:left!important;vertical-align:top!important}
.tm-report table td:first-child{white-space:nowrap}
.tm-report .tm-src td{background:rgba(127,127,127,.12);font-weight:600}
.tm-report .tm-k-create{color:#116329}.tm-report .tm-k-inplace{color:#953800}
.tm-report .tm-k-move{color:#0550ae}.tm-report .tm-k-backward{color:#6639ba}
.tm-report .tm-k-view{color:#57606a}.tm-report .tm-warn{color:#a40e26}
.tm-report pre{margin:2px 0 6px 12px}
:is(body[data-jp-theme-light="false"],body.vscode-dark) .tm-report .tm-k-create{color:#3fb950}
:is(body[data-jp-theme-light="false"],body.vscode-dark) .tm-report .tm-k-inplace{color:#f0883e}
:is(body[data-jp-theme-light="false"],body.vscode-dark) .tm-report .tm-k-move{color:#58a6ff}
:is(body[data-jp-theme-light="false"],body.vscode-dark) .tm-report .tm-k-backward{color:#bc8cff}
:is(body[data-jp-theme-light="false"],body.vscode-dark) .tm-report .tm-k-view{color:#9198a1}
:is(body[data-jp-theme-light="false"],body.vscode-dark) .tm-report .tm-warn{color:#ff7b72}
--></style>
"""


def h(value: object) -> str:
    return escape(str(value), quote=True)


def fold_row(f: Fold) -> str:
    """A folded run of events as one table row (reports and the panel's timeline)."""
    where, what = fold_words(f)
    return f"<tr><td>{h(where)}</td><td colspan=3>{h(what)}</td></tr>"


def lines_summary_html(rec: Recording) -> str:
    """A cell with loops, one row per source line × op: calls, tensors made, bytes, writes, moves."""
    from .lines import line_rows
    from .panel_lines import _made, calls_words

    head = ("<tr><th>line</th><th>source</th><th>op</th><th>calls</th><th>made</th><th>allocated</th>"
            "<th>writes</th><th>moves</th><th>diagnostics</th></tr>")  # fmt: skip
    rows = []
    for r in line_rows(rec):
        moved = ", ".join([f"{r.moves:,} · {fmt_bytes(r.moved_bytes)}"] * bool(r.moves)
                          + [plural(r.casts, "cast")] * bool(r.casts))
        rows.append(f"<tr><td>{h(r.where)}</td><td>{h(r.source.strip())}</td><td class='tm-k-create'>"
                    f"{h(short_op(r.op))}</td><td>{h(calls_words(r))}</td><td>{h(_made(r))}</td>"
                    f"<td>{h(fmt_bytes(r.allocated) if r.allocated else '')}</td>"
                    f"<td>{f'{r.writes:,}' if r.writes else ''}</td>"
                    f"<td>{h(moved)}</td><td class='tm-warn'>{h(', '.join(r.diagnostics))}</td></tr>")  # fmt: skip
    return f"<div><b>per line</b></div><table>{head}{''.join(rows)}</table><div><b>events</b></div>"


def render_recording(rec: Recording, *, max_rows: int = MAX_ROWS) -> str:
    from .lines import has_loops

    rec.events  # noqa: B018 - made first: a build that fails says so in ``internal_error``
    parts = [STYLE, '<div class="tm-report">', f"<div><b>{h(summary_line(rec))}</b></div>"]
    if rec.internal_error:
        parts.append(f"<div class='tm-warn'>recording incomplete: {h(rec.internal_error)}</div>")
    parts.extend(f"<div class='tm-muted'>note: {h(note)}</div>" for note in unreadable_notes(rec))
    if has_loops(rec):
        parts.append(lines_summary_html(rec))
        max_rows = min(max_rows, MAX_LOOP_ROWS)
    parts.append("<table>")
    n = 0
    steps = step_labels(rec)
    for first, group in capped_line_groups(rec.events, max_rows):
        parts.append(f"<tr class='tm-src'><td>{h(first.where_in(rec.cell))}</td>"
                     f"<td colspan=3>{h(first.source or '')}</td></tr>")  # fmt: skip
        for e in group:
            parts.append(
                f"<tr><td class='tm-k-{h(e.kind)}'>{h(kind_word(e))}</td>"
                f"<td>{h(steps.get(e.tensor.id) or e.tensor.label)}</td><td>{h(short_op(e.op))}</td>"
                f"<td>{h(describe(e, steps))}</td></tr>"
            )
        n += len(group)
    if n < len(rec.events):
        parts.append(f"<tr><td colspan=4>… {plural(len(rec.events) - n, 'more event')}</td></tr>")
    for f in rec.folds:
        parts.append(fold_row(f))
    parts.append("</table>")
    for d in rec.diagnostics:
        sev = getattr(d, "severity", None) or "warning"
        parts.append(f"<div class='tm-warn'>⚠ {h(sev)} [{h(d.id)}] {h(d.where_in(rec.cell))}: {h(d.message)}"
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
