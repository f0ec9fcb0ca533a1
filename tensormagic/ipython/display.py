"""How a recording is shown: widget panel in a kernel, HTML for nbconvert, text in a terminal."""

from __future__ import annotations

import sys
from typing import Any

from ..model.recording import Recording
from ..views.html import h

MODES = ("auto", "widget", "html", "text")


def in_kernel(shell: Any) -> bool:
    """A Jupyter kernel with comms (where widgets render); terminal IPython is not one."""
    return type(shell).__name__ == "ZMQInteractiveShell"


def current_shell_in_kernel() -> bool:
    """Whether code runs in a Jupyter kernel right now (never imports IPython to find out)."""
    ipython = sys.modules.get("IPython")
    return ipython is not None and in_kernel(ipython.get_ipython())


def resolve_mode(mode: str, shell: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"display must be one of {', '.join(MODES)}, not {mode!r}")
    if mode != "auto":
        return mode
    if not in_kernel(shell):
        return "text"
    return "widget" if panel_available() else "html"


def panel_available() -> bool:
    try:
        from ..views import panel
    except ImportError:  # ipywidgets missing: HTML still shows everything
        return False
    return hasattr(panel, "display_recording")


class Summary:
    """The one line ``%trackgrad on`` shows per cell; the HTML form expands to the full report."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        line = self.rec.summary_line()
        return {
            "text/plain": line,
            "text/html": f"<details><summary>{h(line)}</summary>{self.rec.to_html()}</details>",
        }


def emit(bundle: dict[str, Any], resolved: str) -> None:
    """Display a static bundle; text mode keeps only what terminal IPython prints."""
    from IPython.display import display

    if resolved == "text":
        bundle = {"text/plain": bundle["text/plain"]}
    display(bundle, raw=True)


def show(rec: Recording, mode: str, shell: Any, *, summary: bool = False) -> Any:
    """Display ``rec`` under the current cell; returns what was displayed (a panel, or None)."""
    resolved = resolve_mode(mode, shell)
    if resolved == "widget":
        from ..views.panel import display_recording

        return display_recording(rec, summary=summary)
    # not rec._repr_mimebundle_(): in a kernel that is the panel, and html/text mode asked otherwise
    emit(Summary(rec)._repr_mimebundle_() if summary else {"text/plain": rec.to_text(), "text/html": rec.to_html()},
         resolved)  # fmt: skip
    return None


def show_info(obj: Any, mode: str, shell: Any, *, tensor: Any = None) -> Any:
    """``%tensorinfo`` output: in the panel's style (with a histogram) for a tensor in a kernel,
    else the object's own text/HTML."""
    resolved = resolve_mode(mode, shell)
    if resolved == "widget" and tensor is not None:
        from ..views.panel import display_tensor_info

        return display_tensor_info(obj, tensor)
    emit(obj._repr_mimebundle_(), resolved)
    return None


def show_namespace(namespace: Any, mode: str, shell: Any) -> Any:
    """``%tensorinfo`` alone: the filterable table widget in a kernel, else a static table."""
    resolved = resolve_mode(mode, shell)
    if resolved == "widget":
        from ..views.panel import display_namespace

        return display_namespace(namespace)
    from ..info import namespace_info

    emit(namespace_info(namespace)._repr_mimebundle_(), resolved)
    return None


def show_log(recs: Any, labels: list[str], mode: str, shell: Any) -> Any:
    """``%tensorlog``: a cell selector above the panel in a kernel, else each cell's report."""
    resolved = resolve_mode(mode, shell)
    if resolved == "widget":
        from ..views.panel import display_log

        return display_log(recs, labels)
    for label, rec in zip(labels, recs):
        print(f"── {label} ──")
        show(rec, mode, shell)
    return None
