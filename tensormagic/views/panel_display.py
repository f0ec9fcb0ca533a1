"""Displaying panels in a notebook, and closing the ones a re-run cell replaced.

Two outputs per panel, so a notebook stays readable without its kernel.  JupyterLab's widget
renderer always prefers the widget view to the ``text/html`` of the same output, and prints
"model not found" once the kernel that owned the model is gone; so the live panel is an output
of its own (the widget view and an empty ``text/plain``), followed by the static report
(``text/plain`` and self-contained ``text/html``).  The static report carries a small script:
in a trusted JupyterLab or Notebook 7 page it hides itself while the panel beside it renders, and
shows itself again, hiding the widget's error, when the panel cannot render (a reopened notebook,
a restarted kernel).  Where scripts do not run (untrusted notebooks, GitHub) the widget output
shows nothing and the static report everything; nbconvert's HTML keeps the script and shows the
report offline.

A displayed widget lives in the kernel's widget registry until it is closed; a notebook that
re-runs a cell replaces its output but closes nothing.  So each recording's panel is registered
under its cell id (``Recording.cell_id``): displaying a new panel for the same cell closes the
previous one, and panels without a cell id are kept to the ``MAX_UNKEYED`` most recent.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import ipywidgets as W

from ..model.recording import Recording
from .card import info_card_html
from .table import STYLE, h

if TYPE_CHECKING:  # pragma: no cover
    from ..info import TensorInfo
    from .panel import Panel
    from .panel_namespace import NamespaceTable

MAX_UNKEYED = 100
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# Runs only where the page runs output scripts (trusted JupyterLab / Notebook 7, nbconvert HTML,
# VS Code).  It finds the live panel by the key both outputs carry.  In JupyterLab and Notebook 7
# the panel's output is the one just before this one: it follows changes of the output area and
# hides that output while it shows "Loading widget..." or "Error displaying widget".  Elsewhere it
# hides the report itself once the panel appears (looking for a minute, then giving up).
TOGGLE_JS = """(function(){var s=document.currentScript,k='KEY',n=0;if(!s)return;
function tick(){var c=s.closest('.jp-OutputArea-child'),d=s.previousElementSibling,live=document.querySelector(
'.tm-live-'+k),v=live?'none':'';if(d)d.style.display=v;if(!c)return !!live;c.style.display=v;
var prev=c.previousElementSibling;if(prev&&!prev.querySelector('.tm-static'))prev.style.display=live||
!/^(Loading widget|Error displaying widget)/.test((prev.textContent||'').trim())?'':'none';return true;}
function wait(){var a=s.closest('.jp-OutputArea');if(a){tick();new MutationObserver(tick).observe(a,
{childList:true,subtree:true,attributes:true,attributeFilter:['class']});}
else if(!tick()&&n++<600)setTimeout(wait,100);}wait();})();"""


def widget_output(widget: W.Widget) -> dict[str, Any]:
    """The live output: the widget view, and an empty text/plain (what shows where it cannot render)."""
    return {"text/plain": "", WIDGET_MIME: {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}}


def static_output(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The static report, with the script that hides it while the live panel ``key`` shows."""
    out = dict(data)
    if "text/html" in out:
        script = TOGGLE_JS.replace("KEY", "".join(c for c in key if c.isalnum()))
        body = f"<div class='tm-static' data-tm-live='{h(key)}'>{out['text/html']}</div>"
        # "<!--" opens a one-line comment in a classic script: the code runs as before, and a
        # sanitizer that drops or escapes <script> (nbconvert --sanitize-html) drops the code too
        out["text/html"] = f"{body}<script><!--\n{script}\n//--></script>"
    return out


def live_bundle(widget: W.Widget, data: dict[str, Any]) -> dict[str, Any]:
    """Display the live widget as its own output and return the static report's bundle, to be
    displayed right after it (the caller's output)."""
    from IPython.display import display

    if not widget.model_id:
        return dict(data)
    key = widget.model_id
    widget.add_class(f"tm-live-{key}")
    display(widget_output(widget), raw=True)
    return static_output(data, key)


def bundle(widget: W.Widget, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` plus the widget view in one output (what a front end without a fallback shows as
    "model not found" once the kernel is gone: the panel uses ``live_bundle``)."""
    out = dict(data)
    if widget.model_id:
        out[WIDGET_MIME] = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
    return out
_CELL = "cell"  # default key: the recording's own cell id


class Closable(Protocol):
    def close(self) -> None: ...


_keyed: dict[str, Closable] = {}
_unkeyed: deque[Closable] = deque()


def _register(obj: Closable, key: str | None) -> None:
    if key is not None:
        old = _keyed.pop(key, None)
        if old is not None and old is not obj:
            old.close()
        _keyed[key] = obj
        return
    _unkeyed.append(obj)
    while len(_unkeyed) > MAX_UNKEYED:
        _unkeyed.popleft().close()


def open_panels() -> int:
    """How many displayed panels are still open (registered and not closed)."""
    return len(_keyed) + len(_unkeyed)


def close_all() -> None:
    """Close every panel this module displayed (``%unload_ext``)."""
    items = [*_keyed.values(), *_unkeyed]
    _keyed.clear()
    _unkeyed.clear()
    for obj in items:
        obj.close()


class PanelDisplay:
    """What a notebook shows for a recording: the panel, or (``summary=True``) its one-line
    summary that expands into the panel, built only when first expanded.  The bundle also carries
    ``text/plain`` and self-contained ``text/html`` for terminals, nbconvert and GitHub."""

    def __init__(self, rec: Recording, *, summary: bool = False, page_size: int = 25) -> None:
        from .panel import Panel

        self.rec = rec
        self.summary = summary
        self.page_size = page_size
        self.panel: Panel | None = None
        self._own: list[W.Widget] = []
        if summary:
            self._holder = W.VBox([])
            self.widget = W.Accordion(children=[self._holder], titles=(rec.summary_line(),),
                                      selected_index=None)  # fmt: skip
            self.widget.add_class("tm-summary")
            self._own = [self._holder, self.widget]
            self.widget.observe(self._expand, "selected_index")
            if rec.diagnostics:  # findings are shown here, not on stderr: open the panel on them
                self.widget.selected_index = 0
        else:
            self.panel = Panel(rec, page_size=page_size)
            self.widget = self.panel.widget

    def _expand(self, change: dict[str, Any]) -> None:
        if change["new"] == 0 and self.panel is None:
            from .panel import Panel

            self.panel = Panel(self.rec, page_size=self.page_size)
            self._holder.children = (self.panel.widget,)

    def close(self) -> None:
        if self.panel is not None:
            self.panel.close()
        from .panel import close_widget

        for w in self._own:
            close_widget(w)
        self._own = []

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..ipython.display import Summary

        if self.summary:
            data = Summary(self.rec)._repr_mimebundle_()
        else:
            data = {"text/plain": self.rec.to_text(), "text/html": self.rec.to_html()}
        return live_bundle(self.widget, data)


def display_recording(rec: Recording, *, summary: bool = False, key: str | None = _CELL,
                      page_size: int = 25) -> PanelDisplay:  # fmt: skip
    """Display the inspector panel of ``rec`` under the current cell and return it.

    ``key`` (default: ``rec.cell_id``) names the output the panel belongs to: the previous panel
    displayed with the same key is closed, so re-running a cell frees the old widgets."""
    from IPython.display import display

    p = PanelDisplay(rec, summary=summary, page_size=page_size)
    _register(p, rec.cell_id if key == _CELL else key)
    display(p)
    return p


def recording_bundle(rec: Recording, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """The bundle of a Recording displayed by itself in a kernel (``rec`` as a cell's last
    expression): the panel plus text/plain and text/html.  Kept with the unkeyed panels."""
    p = PanelDisplay(rec)
    _register(p, None)
    return p._repr_mimebundle_(include, exclude)


class LogPanel:
    """``%tensorlog``: a selector of the logged cells above the panel of the chosen one (only one
    panel is built at a time; choosing another cell closes the previous panel)."""

    def __init__(self, recs: Sequence[Recording], labels: Sequence[str], *, page_size: int = 25) -> None:
        self.recs = list(recs)
        self.page_size = page_size
        self.panel: Panel | None = None
        self.select = W.Dropdown(options=[(label, i) for i, label in enumerate(labels)], value=0,
                                 description="cell", layout=W.Layout(width="70%"))  # fmt: skip
        self._holder = W.VBox([])
        self.widget = W.VBox([self.select, self._holder])
        self.widget.add_class("tm-log")
        self.select.observe(self._show, "value")
        self._show({"new": 0})

    def _show(self, change: dict[str, Any]) -> None:
        from .panel import Panel

        if self.panel is not None:
            self.panel.close()
        self.panel = Panel(self.recs[change["new"]], page_size=self.page_size)
        self._holder.children = (self.panel.widget,)

    def close(self) -> None:
        from .panel import close_widget

        if self.panel is not None:
            self.panel.close()
            self.panel = None
        for w in (self.select, self._holder, self.widget):
            close_widget(w)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        rec = self.recs[self.select.value]
        return live_bundle(self.widget, {"text/plain": rec.to_text(), "text/html": rec.to_html()})


def display_log(recs: Sequence[Recording], labels: Sequence[str], *, key: str | None = None) -> LogPanel:
    """Display logged recordings behind a cell selector, and return the panel."""
    from IPython.display import display

    lp = LogPanel(recs, labels)
    _register(lp, key)
    display(lp)
    return lp


class TensorCard:
    """``%tensorinfo x``: the detail card as self-contained HTML (no widget, nothing to close)."""

    def __init__(self, info: TensorInfo, tensor: Any = None) -> None:
        self.info = info
        # the histogram is computed now: the card keeps no reference to the tensor
        self.html = f"{STYLE}<div class='tm-panel'>{info_card_html(info, tensor)}</div>"

    def to_html(self) -> str:
        return self.html

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.info.to_text(), "text/html": self.html}


def display_tensor_info(info: TensorInfo, tensor: Any = None) -> TensorCard:
    from IPython.display import display

    card = TensorCard(info, tensor)
    display(card)
    return card


def display_namespace(namespace: Mapping[str, Any], *, key: str | None = None) -> NamespaceTable:
    """``%tensorinfo`` with no argument: the namespace table widget, displayed and returned."""
    from IPython.display import display

    from .panel_namespace import NamespaceTable

    table = NamespaceTable(namespace)
    _register(table, key)
    display(table)
    return table


__all__ = [
    "MAX_UNKEYED",
    "WIDGET_MIME",
    "bundle",
    "live_bundle",
    "static_output",
    "widget_output",
    "LogPanel",
    "PanelDisplay",
    "TensorCard",
    "close_all",
    "display_log",
    "display_namespace",
    "display_recording",
    "display_tensor_info",
    "open_panels",
    "recording_bundle",
]
