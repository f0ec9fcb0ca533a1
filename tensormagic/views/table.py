"""A table as plain data: rows, column specs, filter, sort and paging; escaped HTML per page.

No ipywidgets here, so it tests fast.  Filtering, sorting and paging work on the row objects and
only the visible page is ever formatted: a 100,000-row table costs one pass to build its rows and
a few dozen rows of HTML per page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

PAGE_SIZE = 25

R = TypeVar("R")

ITEMSIZE = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8,
    "complex32": 4, "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}  # fmt: skip

# Colours: GitHub's palettes, darker in light themes and lighter in dark ones, every kind colour
# at >= 4.5:1 (WCAG AA) against the theme's background and the striped rows.  JupyterLab marks a
# dark theme with data-jp-theme-light="false" on <body>; VS Code with the vscode-dark class.
_DARK = ':is(body[data-jp-theme-light="false"],body.vscode-dark)'
# The sheet's text is an HTML comment (ignored by CSS) so a sanitizer that drops <style> drops it too.
STYLE = ("""<style><!--
.tm-panel{font-size:12px}
.tm-panel .widget-html-content{line-height:1.45}
.tm-panel .tm-table .widget-html-content{overflow-x:auto}
.tm-panel table.tm-t{border-collapse:collapse;font-family:var(--jp-code-font-family,ui-monospace,monospace);
 font-size:12px;width:100%}
.tm-panel table.tm-t th{text-align:left;padding:2px 8px;border-bottom:1px solid rgba(127,127,127,.5);
 white-space:nowrap}
.tm-panel table.tm-t td{padding:1px 8px;vertical-align:top;white-space:nowrap;max-width:28em;
 overflow:hidden;text-overflow:ellipsis}
.tm-panel .tm-lines table.tm-t td:nth-child(2){max-width:12em}
.tm-panel .tm-lines table.tm-t td:nth-child(3){max-width:12em}
.tm-panel table.tm-t tr:nth-child(even) td{background:rgba(127,127,127,.07)}
.tm-panel .tm-src td{background:rgba(127,127,127,.16)!important;font-weight:600}
.tm-panel table.tm-clickable tr[data-tm]{cursor:pointer}
.tm-panel table.tm-clickable tr[data-tm]:hover td{background:rgba(127,127,127,.22)}
.tm-panel .tm-link,.tm-panel .tm-graph g.node[data-tm]{cursor:pointer;text-decoration:underline dotted}
.tm-panel .tm-muted{opacity:.7}
.tm-panel .tm-k-create,.tm-panel .tm-ok{color:#116329}.tm-panel .tm-k-inplace{color:#953800}
.tm-panel .tm-k-move{color:#0550ae}.tm-panel .tm-k-backward{color:#6639ba}
.tm-panel .tm-k-view{color:#57606a}.tm-panel .tm-k-numpy{color:#7d4e00}
.tm-panel .tm-warn{color:#a40e26}
.tm-panel .tm-head{font-size:13px;padding:2px 0 4px 0}
.tm-panel .tm-badge{display:inline-block;margin-left:8px;padding:0 8px;border-radius:9px;
 background:#cf222e;color:#fff;font-weight:600}
.tm-panel .tm-badge.tm-sev-warning{background:#bc4c00}.tm-panel .tm-badge.tm-sev-info{background:#0969da}
.tm-panel .tm-sev-word{font-weight:600;text-transform:uppercase;font-size:11px}
.tm-panel .tm-card{border:1px solid rgba(127,127,127,.45);border-radius:6px;padding:6px 10px;
 margin-top:4px}
.tm-panel .tm-card h4{margin:0 0 4px 0;font-size:13px}
.tm-panel .tm-card table td{padding:0 10px 0 0;vertical-align:top}
.tm-panel .tm-diag{border-left:3px solid #cf222e;padding:2px 8px;margin:4px 0}
.tm-panel .tm-diag.tm-sev-info{border-left-color:#0969da}
.tm-panel .tm-diag.tm-sev-warning{border-left-color:#bc4c00}
.tm-panel .tm-graph svg{max-width:100%;height:auto}
.tm-panel .tm-graph svg text{fill:var(--jp-content-font-color1,#1f2328)}
.tm-panel .tm-graph svg .node path,.tm-panel .tm-graph svg .node polygon{
 fill:var(--jp-layout-color2,#eef2f7);stroke:var(--jp-border-color1,#6e7781)}
.tm-panel .tm-graph svg .node.tm-leaf path,.tm-panel .tm-graph svg .node.tm-leaf polygon{
 stroke:var(--jp-success-color1,#1a7f37);stroke-width:1.5}
.tm-panel .tm-graph svg .node.tm-root path,.tm-panel .tm-graph svg .node.tm-root polygon{
 stroke:var(--jp-brand-color1,#8250df);stroke-width:2}
.tm-panel .tm-graph svg .edge path{stroke:var(--jp-content-font-color2,#6e7781)}
.tm-panel .tm-graph svg .edge polygon{fill:var(--jp-content-font-color2,#6e7781);
 stroke:var(--jp-content-font-color2,#6e7781)}
.tm-panel pre{margin:2px 0}
DARK .tm-panel .tm-k-create,DARK .tm-panel .tm-ok{color:#3fb950}DARK .tm-panel .tm-k-inplace{color:#f0883e}
DARK .tm-panel .tm-k-move{color:#58a6ff}DARK .tm-panel .tm-k-backward{color:#bc8cff}
DARK .tm-panel .tm-k-view{color:#9198a1}DARK .tm-panel .tm-k-numpy{color:#d29922}
DARK .tm-panel .tm-warn{color:#ff7b72}
--></style>""").replace("DARK", _DARK)


def h(value: object) -> str:
    """Escape anything shown in HTML: names, source lines and op names come from user code."""
    return escape("" if value is None else str(value), quote=True)


def nbytes_of(shape: tuple[int, ...], dtype: str) -> int | None:
    size = ITEMSIZE.get(dtype)
    if size is None:
        return None
    n = size
    for s in shape:
        n *= s
    return n


# -- a generic table model: filter, sort, page ---------------------------------------------------


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column: its title, the text of a cell, and a sort key (None: not sortable)."""

    title: str
    text: Callable[[R], str]
    key: Callable[[R], Any] | None = None
    css: Callable[[R], str] | None = None


@dataclass
class Table(Generic[R]):
    """Rows, their columns and the view state (filter text, sort, page) as plain data."""

    rows: Sequence[R]
    columns: Sequence[Column[R]]
    search_text: Callable[[R], str]
    page_size: int = PAGE_SIZE
    query: str = ""
    sort_by: str | None = None
    descending: bool = False
    page: int = 0
    key: Callable[[R], str] | None = None  # a row's click key (``data-tm``): the panel opens what it names
    _view: list[R] | None = field(default=None, repr=False)
    _search: list[str] | None = field(default=None, repr=False)

    def set_query(self, text: str) -> None:
        self.query, self.page, self._view = text, 0, None

    def set_sort(self, column: str | None, descending: bool = False) -> None:
        self.sort_by, self.descending, self.page, self._view = column, descending, 0, None

    @property
    def view(self) -> list[R]:
        """The rows that pass the filter, in the chosen order."""
        if self._view is None:
            self._view = self._compute()
        return self._view

    def _compute(self) -> list[R]:
        words = self.query.lower().split()
        if words:
            if self._search is None:  # built on the first filter only: opening stays cheap
                self._search = [self.search_text(r).lower() for r in self.rows]
            rows = [r for r, s in zip(self.rows, self._search) if all(w in s for w in words)]
        else:
            rows = list(self.rows)
        col = next((c for c in self.columns if c.title == self.sort_by and c.key is not None), None)
        if col is not None:
            key = col.key
            assert key is not None
            # None sorts last either way: a missing module or line is not "smallest"
            present = [r for r in rows if key(r) is not None]
            missing = [r for r in rows if key(r) is None]
            present.sort(key=key, reverse=self.descending)
            rows = present + missing
        return rows

    @property
    def total(self) -> int:
        return len(self.view)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    def go(self, page: int) -> None:
        self.page = min(max(0, page), self.pages - 1)

    def page_rows(self) -> list[R]:
        start = self.page * self.page_size
        return self.view[start : start + self.page_size]

    def sortable(self) -> list[str]:
        return [c.title for c in self.columns if c.key is not None]

    def status(self) -> str:
        n = self.total
        if n == 0:
            return "no rows" + (f" match “{self.query}”" if self.query else "")
        start = self.page * self.page_size
        of = f" of {n:,}" + (f" (filtered from {len(self.rows):,})" if self.query else "")
        rows = f"rows {start + 1:,}–{min(n, start + self.page_size):,}{of}"
        return f"{rows} · page {self.page + 1}/{self.pages}"

    def html(self) -> str:
        return render_table(self.columns, self.page_rows(), self.key)


def render_table(columns: Sequence[Column[R]], rows: Iterable[R], key: Callable[[R], str] | None = None) -> str:
    head = "".join(f"<th>{h(c.title)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            cls = c.css(r) if c.css is not None else ""
            attr = f' class="{h(cls)}"' if cls else ""
            text = c.text(r)
            cells.append(f'<td{attr} title="{h(text)}">{h(text)}</td>')
        k = key(r) if key is not None else ""
        body.append((f'<tr data-tm="{h(k)}">' if k else "<tr>") + "".join(cells) + "</tr>")
    cls = "tm-t tm-clickable" if key is not None else "tm-t"
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


__all__ = ["ITEMSIZE", "PAGE_SIZE", "STYLE", "Column", "Table", "h", "nbytes_of", "render_table"]
