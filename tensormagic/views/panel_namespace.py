"""``%tensorinfo`` with no argument: every tensor in the namespace, filterable, with a card."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Mapping

import ipywidgets as W

from .card import EMPTY_CARD, tensor_card_html
from .common import fmt_bytes, fmt_shape, plural
from .panel_display import live_bundle
from .panel_widgets import TableView, _Owner, click_key
from .table import STYLE, Column, Table, h


@dataclass(slots=True)
class NamespaceRow:
    name: str
    ref: weakref.ref[Any]
    shape: tuple[int, ...]
    dtype: str
    device: str
    requires_grad: bool
    grad_fn: str | None
    nbytes: int


NAMESPACE_COLUMNS: tuple[Column[NamespaceRow], ...] = (
    Column("name", lambda r: r.name, lambda r: r.name.lower()),
    Column("shape", lambda r: fmt_shape(r.shape), lambda r: (len(r.shape), r.shape)),
    Column("dtype", lambda r: r.dtype, lambda r: r.dtype),
    Column("device", lambda r: r.device, lambda r: r.device),
    Column("requires_grad", lambda r: "✓" if r.requires_grad else "", lambda r: r.requires_grad),
    Column("grad_fn", lambda r: r.grad_fn or "", lambda r: r.grad_fn),
    Column("bytes", lambda r: fmt_bytes(r.nbytes), lambda r: r.nbytes),
)  # fmt: skip


def namespace_rows(namespace: Mapping[str, Any]) -> list[NamespaceRow]:
    from ..engine.naming import named_tensors

    rows = []
    for name, t in named_tensors(namespace):
        try:
            gf = t.grad_fn
            gf_name = None if gf is None else type(gf).__name__
        except Exception:  # noqa: BLE001 - a no_grad view whose base was written in place raises
            gf_name = "unreadable"
        rows.append(NamespaceRow(name, weakref.ref(t), tuple(t.shape), str(t.dtype).removeprefix("torch."),
                                 str(t.device), t.requires_grad, gf_name,
                                 t.numel() * t.element_size()))  # fmt: skip
    return rows


def _namespace_search(r: NamespaceRow) -> str:
    return f"{r.name}\x00{r.dtype}\x00{r.device}\x00{r.grad_fn or ''}"


class NamespaceTable(_Owner):
    """``%tensorinfo``: every tensor in the namespace, filterable, with a detail card on pick.

    Rows hold weak references: the table keeps no tensor alive."""

    def __init__(self, namespace: Mapping[str, Any], *, page_size: int = 25) -> None:
        super().__init__()
        self.namespace = namespace
        rows = namespace_rows(namespace)
        self.by_name = {r.name: r for r in rows}
        table: Table[NamespaceRow] = Table(rows, NAMESPACE_COLUMNS, _namespace_search, page_size=page_size,
                                           key=lambda r: f"n:{r.name}")  # fmt: skip
        total = sum(r.nbytes for r in rows)
        self.header = self.make(W.HTML, STYLE + f"<div class='tm-head'><b>tensors in the namespace</b> · "
                                f"{plural(len(rows), 'tensor')}, {h(fmt_bytes(total))}</div>")  # fmt: skip
        self.card = self.make(W.HTML, EMPTY_CARD, css="tm-card-box")
        self.click = self.make(W.Text, layout=W.Layout(display="none"), css="tm-click")
        self.click.observe(lambda ch: self.select(click_key(ch["new"])[2:]), "value")
        self.table = TableView(self, table, placeholder="filter: name, dtype, device, grad_fn",
                               option=lambda r: (r.name, r.name), on_select=self.select,
                               css="tm-namespace")  # fmt: skip
        self.widget = self.make(W.VBox, [self.header, self.table.box, self.card, self.click], css="tm-panel")

    def select(self, name: str) -> None:
        row = self.by_name.get(name)
        t = row.ref() if row is not None else None
        if t is None:
            gone = f"{h(name)} was freed or rebound since the table was made"
            self.card.value = f"<div class='tm-card tm-muted'>{gone}</div>"
            return
        try:
            self.card.value = tensor_card_html(t, name=name, namespace=self.namespace)
        except Exception as e:  # noqa: BLE001 - an observer's exception would vanish into the log
            self.card.value = f"<div class='tm-card tm-warn'>could not show {h(name)}: {h(e)}</div>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..info import namespace_info  # noqa: I001 - info imports torch: only when shown

        info = namespace_info(self.namespace)
        return live_bundle(self.widget, {"text/plain": info.to_text(), "text/html": info.to_html()})


__all__ = ["NamespaceRow", "NamespaceTable", "namespace_rows"]
