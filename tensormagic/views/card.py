"""The detail card of one tensor, as escaped HTML: metadata, grad_fn chain, history, statistics.

A tracked tensor (``TensorRecord``) that is still alive gets the live facts of ``tensor_info``
plus its recorded history; a freed one gets the metadata recorded at the end of the block and any
statistics recorded with ``--stats``.  Statistics run here, when the card opens, never during
the tracked cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..model.events import Stats, TensorRef
from ..model.recording import Recording, TensorRecord
from .common import describe, fmt_bytes, fmt_shape, kind_word, plural, short_op, version_words
from .lines import step_labels
from .panel_tables import made_before_words, origin_event
from .table import h, nbytes_of

if TYPE_CHECKING:  # pragma: no cover
    from ..info import TensorInfo

MAX_HISTORY = 50
HIST_BINS = 24
EMPTY_CARD = "<div class='tm-card tm-muted'>Pick a tensor to see its details.</div>"


def histogram_svg(hist: tuple[list[int], float, float] | None, *, width: int = 240, height: int = 44) -> str:
    """A small bar chart of value counts, inline SVG (no scripts), with the range under it."""
    if hist is None or hist[1] == hist[2]:
        return ""  # one bar says nothing the "all 3" summary does not
    counts, lo, hi = hist
    top = max(counts) or 1
    bw = width / len(counts)
    bars = "".join(
        f'<rect x="{i * bw:.1f}" y="{height - c / top * height:.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{c / top * height:.1f}" fill="#0969da"><title>{c:,}</title></rect>'
        for i, c in enumerate(counts)
    )
    return (f'<div><svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="histogram of values">{bars}</svg>'
            f"<div class='tm-muted'>{h(f'{lo:.4g}')} … {h(f'{hi:.4g}')}</div></div>")  # fmt: skip


def _histogram_of(t: Any) -> tuple[list[int], float, float] | None:
    from ..engine.stats import histogram

    try:
        return histogram(t, bins=HIST_BINS)
    except Exception:  # noqa: BLE001 - a dtype without histc, a tensor kind without values to count
        return None


def _rows_html(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td class='tm-muted'>{h(k)}</td><td>{h(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _card(title: str, badge: str, rows: Sequence[tuple[str, str]], extra: str = "", below: str = "") -> str:
    return (f"<div class='tm-card'><h4>{h(title)} {badge}</h4>"
            f"<div style='display:flex;gap:24px;flex-wrap:wrap'><div>{_rows_html(rows)}</div>{extra}</div>"
            f"{below}</div>")  # fmt: skip


def _ref_rows(ref: TensorRef) -> list[tuple[str, str]]:
    nbytes = nbytes_of(ref.shape, ref.dtype)
    size = f", {fmt_bytes(nbytes)}" if nbytes else ""
    rows = [
        ("shape", f"{fmt_shape(ref.shape)}  ({plural(ref.numel, 'element')}{size})"),
        ("dtype / device", f"{ref.dtype} on {ref.device}"),
    ]
    if ref.grad_fn == "?":  # the recorder's mark of a grad_fn that raised when read
        rg = "requires_grad, " if ref.requires_grad else ""
        rows.append(("autograd", f"{rg}grad_fn could not be read: leaf or not is not known"))
    elif ref.requires_grad or ref.grad_fn:
        rows.append(("autograd", f"requires_grad, {'leaf' if ref.is_leaf else 'not a leaf'}"))
    if ref.grad_fn and ref.grad_fn != "?":
        rows.append(("grad_fn", ref.grad_fn))
    rows.append(("version", version_words(ref.version)))
    return rows


def history_html(trec: TensorRecord, home: int | None = None) -> str:
    """Every recorded event that touched this tensor, oldest first; ``home`` is the recording's
    cell (another cell's line names its cell)."""
    if not trec.events:
        return ""
    rows = []
    for e in trec.events[:MAX_HISTORY]:
        kind = f"<td class='tm-k-{h(e.kind)}'>{h(kind_word(e))}</td>"
        text = h(describe(e))
        rows.append(f"<tr><td>{h(e.where_in(home))}</td>{kind}<td>{h(e.tensor.label)}</td>"
                    f"<td>{h(short_op(e.op))}</td><td title='{text}'>{text}</td></tr>")  # fmt: skip
    more = len(trec.events) - MAX_HISTORY
    if more > 0:
        rows.append(f"<tr><td colspan=5 class='tm-muted'>… {more:,} more events</td></tr>")
    table = f"<table class='tm-t'><tbody>{''.join(rows)}</tbody></table>"
    return f"<div style='margin-top:6px'><b>history</b>{table}</div>"


def _recorded_stats_row(stats: Stats | None) -> tuple[str, str]:
    if stats is None:
        return ("values", "not recorded: the tensor is freed (track with --stats to keep statistics)")
    zeros = f", {plural(stats.zeros, 'zero')}" if stats.zeros else ""
    return ("values (recorded)", stats.summary() + zeros)


def record_card_html(rec: Recording, trec: TensorRecord) -> str:
    """The card of a tracked tensor: live facts when it is alive, the recorded ones when freed."""
    t = trec.tensor()
    stepped = step_labels(rec).get(trec.id)  # ``xb (step 3)``: the name with the step that made it
    names = ", ".join((stepped or trec.label, *trec.names[1:])) if trec.names else trec.id
    created = origin_event(trec)
    where = f"{created.where_in(rec.cell)} by {short_op(created.op)}" if created is not None else None
    if created is not None and created.source:
        where += f":  {created.source}"
    elif created is None and trec.existed_before:
        where = made_before_words(trec)
    chain = rec.graphs.graph(trec.id, trec.label).chain() if trec.id in rec.graphs.roots else None
    hist = ""
    if t is not None:
        from ..info import tensor_info

        info = tensor_info(t, name=trec.label, stats=True)
        rows = [(k, v) for k, v in info.rows() if k not in ("created", "grad_fn chain")]
        badge = "<span class='tm-ok'>● alive</span>"
        hist = histogram_svg(_histogram_of(t))
    else:
        rows = [*_ref_rows(trec.ref), _recorded_stats_row(trec.recorded_stats)]
        if trec.history:  # across cells, as it stood at the block's end (a live tensor's is read now)
            rows.append(("history", trec.history))
        badge = "<span class='tm-muted'>○ freed: recorded metadata</span>"
    if chain:
        at = next((i + 1 for i, (k, _v) in enumerate(rows) if k in ("autograd", "grad_fn")), len(rows))
        rows.insert(at, ("grad_fn chain", chain))
    if where:
        rows.append(("created", where))
    if trec.ref.storage_id:
        rows.append(("id", f"{trec.id} (storage {trec.ref.storage_id})"))
    return _card(names, badge, rows, hist, history_html(trec, rec.cell))


def info_card_html(info: TensorInfo, tensor: Any = None) -> str:
    """The card of a live tensor from ``tensor_info`` (``%tensorinfo x``), with a histogram."""
    hist = histogram_svg(_histogram_of(tensor)) if tensor is not None else ""
    title = info.name or "tensor"
    badge = f"<span class='tm-muted'>[{h(info.id)}]</span>" if info.id else ""
    return _card(title, badge, info.rows(), hist)


def tensor_card_html(t: Any, name: str | None = None, namespace: Mapping[str, Any] | None = None) -> str:
    from ..info import tensor_info

    return info_card_html(tensor_info(t, name=name, namespace=namespace), t)


__all__ = [
    "EMPTY_CARD",
    "histogram_svg",
    "history_html",
    "info_card_html",
    "record_card_html",
    "tensor_card_html",
]
