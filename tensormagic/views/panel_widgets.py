"""The panel's building blocks: widget ownership, the paged table view, and the click channel.

Clicks: a table page is one HTML widget, so its rows cannot be widgets.  Each clickable element
carries ``data-tm="KEY"`` (a key the panel made, never user text); one inline handler on the
page's container writes ``KEY`` into a hidden Text widget of the same panel, and the Text's
observer, in the kernel, opens what the key names.  No script element is needed: the HTML
widget keeps the attribute, and the handler is fixed text.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

import ipywidgets as W
from ipywidgets.widgets.widget_string import HTMLStyle

from .table import Table, h

NO_PICK = "— pick a tensor —"
# A Dropdown whose value is None shows nothing selected: real sentinels keep the label visible
NONE = ""
RECORDED_ORDER = ("", False)
#: rows an inspect selector lists for a filter (the matches on every page); past it, "type more"
MAX_PICK = 200

R = TypeVar("R")
Option = tuple[str, Any]

# the nonce makes a second click on the same row a change the kernel sees
CLICK_JS = ("var r=event.target.closest('[data-tm]');if(!r)return;"
            "var p=this.closest('.tm-panel');var i=p&&p.querySelector('.tm-click input');if(!i)return;"
            "i.value=r.getAttribute('data-tm')+' '+Date.now();"
            "i.dispatchEvent(new Event('input',{bubbles:true}));")  # fmt: skip


def clickable(html: str) -> str:
    """Wrap HTML whose ``data-tm`` elements should open what they name when clicked."""
    return f'<div class="tm-clicks" onclick="{h(CLICK_JS)}">{html}</div>'


def click_key(value: str) -> str:
    """The key of a click-channel value (``"t:t3 1712345"`` → ``"t:t3"``)."""
    return value.rsplit(" ", 1)[0] if " " in value else value


def close_widget(w: W.Widget) -> None:
    """Close a widget and the Layout and Style widgets every widget makes for itself
    (``Widget.close`` leaves those in the registry)."""
    for name in ("layout", "style"):
        sub = getattr(w, name, None)
        if isinstance(sub, W.Widget):
            sub.close()
    w.close()


class _Owner:
    """Remembers every widget it makes, so ``close()`` frees them all (containers do not close
    their children)."""

    def __init__(self) -> None:
        self._widgets: list[W.Widget] = []
        self._shared: dict[str, W.Widget] = {}

    def make(self, cls: Callable[..., Any], *args: Any, css: str | None = None, **kw: Any) -> Any:
        # Widgets without a layout (or HTML without a style) of their own share one: each Layout
        # model is ~1 KB of state that an executed notebook saves (nbclient keeps every model).
        if "layout" not in kw and issubclass(cls, W.DOMWidget):
            kw["layout"] = self._one("layout", W.Layout)
        if "style" not in kw and cls is W.HTML:
            kw["style"] = self._one("html-style", HTMLStyle)
        w = cls(*args, **kw)
        if css:
            w.add_class(css)
        self._widgets.append(w)
        return w

    def _one(self, name: str, cls: Callable[[], W.Widget]) -> W.Widget:
        w = self._shared.get(name)
        if w is None:
            w = self._shared[name] = cls()
        return w

    def close(self) -> None:
        widgets, self._widgets = self._widgets, []
        for w in reversed(widgets):
            close_widget(w)
        shared, self._shared = self._shared, {}
        for w in shared.values():
            w.close()

    @property
    def closed(self) -> bool:
        return not self._widgets


class TableView(Generic[R]):
    """Filter box (over every row, not one page), sort, pager with a page box, the page as one
    HTML table, and a selector of the page's rows (of the filter's matches on every page)."""

    def __init__(self, owner: _Owner, table: Table[R], *, placeholder: str,
                 option: Callable[[R], Option | None] | None = None,
                 on_select: Callable[[Any], None] | None = None, sortable: bool = True,
                 css: str = "tm-view") -> None:  # fmt: skip
        self.table, self.option, self.on_select = table, option, on_select
        m = owner.make
        self.filter = m(W.Text, placeholder=placeholder, layout=W.Layout(width="22em"), css="tm-filter")
        sorts = [(f"{t} {arrow}", (t, desc))
                 for t in table.sortable() for arrow, desc in (("↑", False), ("↓", True))]  # fmt: skip
        self.sort = m(W.Dropdown, options=[("recorded order", RECORDED_ORDER), *sorts], description="sort by",
                      layout=W.Layout(width="17em"), css="tm-sort") if sortable else None  # fmt: skip
        self.prev = m(W.Button, description="◀ prev", layout=W.Layout(width="6em"), css="tm-prev")
        self.next = m(W.Button, description="next ▶", layout=W.Layout(width="6em"), css="tm-next")
        self.page = m(W.BoundedIntText, value=1, min=1, max=1, description="page", continuous_update=False,
                      style={"description_width": "initial"}, layout=W.Layout(width="8.5em"),
                      css="tm-page")  # fmt: skip
        self.status = m(W.HTML, css="tm-status")
        self.body = m(W.HTML, css="tm-table")
        sort = [self.sort] if self.sort is not None else []
        controls = [self.filter, *sort, self.prev, self.next, self.page, self.status]
        children: list[W.Widget] = [m(W.HBox, controls), self.body]
        self.picker: W.Dropdown | None = None
        if option is not None:
            self.picker = m(W.Dropdown, options=[(NO_PICK, NONE)], description="inspect",
                            layout=W.Layout(width="30em"), css="tm-pick")  # fmt: skip
            self.picker.observe(self._picked, "value")
            children.append(self.picker)
        self.box = m(W.VBox, children, css=css)
        self.filter.observe(lambda ch: self._refresh(query=ch["new"]), "value")
        if self.sort is not None:
            self.sort.observe(lambda ch: self._refresh(sort=ch["new"]), "value")
        self.prev.on_click(lambda _b: self.go(self.table.page - 1))
        self.next.on_click(lambda _b: self.go(self.table.page + 1))
        self.page.observe(self._jump, "value")
        self._refresh()

    def _refresh(self, query: str | None = None, sort: tuple[str | None, bool] | None = None) -> None:
        if query is not None:
            self.table.set_query(query)
        if sort is not None:
            self.table.set_sort(*sort)
        self.render()

    def _jump(self, change: dict[str, Any]) -> None:
        if change["new"] - 1 != self.table.page:
            self.go(change["new"] - 1)

    def go(self, page: int) -> None:
        self.table.go(page)
        self.render()

    def render(self) -> None:
        t = self.table
        html = t.html()
        self.body.value = clickable(html) if t.key is not None else html
        self.status.value = f"<span class='tm-muted'>{h(t.status())}</span>"
        self.prev.disabled = t.page <= 0
        self.next.disabled = t.page >= t.pages - 1
        # max first: a value above the old max would be clipped
        self.page.max = t.pages
        self.page.value = t.page + 1
        if self.picker is not None and self.option is not None:
            # Unfiltered: the page's rows (what an executed notebook saves stays small).  With a
            # filter: the matches on every page, so any row is reached by typing part of its name.
            rows = t.view[:MAX_PICK] if t.query else t.page_rows()
            opts = list(dict.fromkeys(o for o in map(self.option, rows) if o is not None))
            label = NO_PICK
            if t.query:
                n = t.total
                label = (f"— pick one of {n:,} matches —" if n <= MAX_PICK
                         else f"— {n:,} matches, the first {MAX_PICK} listed: type more to narrow —")  # fmt: skip
            elif t.pages > 1:
                label = "— pick a tensor on this page, or filter to list every page —"
            self.picker.options = [(label, NONE), *opts]

    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"] and self.on_select is not None:
            self.on_select(change["new"])


__all__ = ["CLICK_JS", "NONE", "NO_PICK", "TableView", "clickable", "click_key", "close_widget"]
