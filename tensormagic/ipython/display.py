"""How a recording is shown: widget panel in a kernel, HTML for nbconvert, text in a terminal."""

from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

from ..model.recording import Recording
from ..views.html import h
from ..views.inert import inert_line

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
    """The one line ``%trackgrad on`` shows per cell; the HTML form expands to the full report
    (open from the start when the cell has findings: they are shown there, not on stderr)."""

    def __init__(self, rec: Recording) -> None:
        self.rec = rec

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        line = self.rec.summary_line()
        opened = " open" if self.rec.diagnostics else ""
        return {
            "text/plain": line,
            "text/html": f"<details{opened}><summary>{h(line)}</summary>{self.rec.to_html()}</details>",
        }


def emit(bundle: dict[str, Any], resolved: str) -> None:
    """Display a static bundle; text mode keeps only what terminal IPython prints."""
    from IPython.display import display

    if resolved == "text":
        bundle = {"text/plain": bundle["text/plain"]}
    display(bundle, raw=True)


def touched_nothing(rec: Recording) -> bool:
    """A cell that made, changed or moved no tensor and found nothing (``%trackgrad on`` shows nothing)."""
    # counted, not read: a terminal's summary line then makes no event (the panel makes them)
    return not (any(rec.counts().values()) or rec.diagnostics or rec.internal_error)


def show(rec: Recording, mode: str, shell: Any, *, summary: bool = False) -> Any:
    """Display ``rec`` under the current cell; returns what was displayed (a panel, or None).

    Only what the front end shows is rendered: text mode never builds the HTML report."""
    resolved = resolve_mode(mode, shell)
    if resolved == "widget":
        from ..views.panel import display_recording

        return display_recording(rec, summary=summary)
    if resolved == "text":
        emit({"text/plain": rec.summary_line() if summary else rec.to_text()}, resolved)
        return None
    # not rec._repr_mimebundle_(): in a kernel that is the panel, and html mode asked otherwise
    emit(Summary(rec)._repr_mimebundle_() if summary else {"text/plain": rec.to_text(), "text/html": rec.to_html()},
         resolved)  # fmt: skip
    return None


def shows_diagnostics(mode: str, shell: Any, *, summary: bool, quiet: bool) -> bool:
    """Whether what ``show`` displays states each finding (then stderr need not repeat it): the
    panel and the HTML report do; a terminal's one-line summary does not."""
    if quiet:
        return False
    return not (summary and resolve_mode(mode, shell) == "text")


def _recording_warnings() -> bool:
    # catch_warnings(record=True) sends every shown warning to its list: leave that list whole
    impl = getattr(warnings, "_showwarnmsg_impl", None)
    return isinstance(getattr(impl, "__self__", None), list)


@contextmanager
def diagnostics_shown_once(rec: Recording, shown: bool) -> Iterator[None]:
    """While a tracked cell runs and ends, drop the stderr copy of each diagnostic of ``rec`` that
    the display will show.  Only the printing is replaced: the ``warnings`` filters run first, so
    ``-W error::…``, ``filterwarnings`` and ``catch_warnings`` work as before."""
    if not shown or _recording_warnings():
        yield
        return
    from ..diagnostics import TensorMagicWarning, warning_text

    before = warnings.showwarning

    def showwarning(message: Any, category: Any, filename: Any, lineno: Any, file: Any = None,
                    line: Any = None) -> None:  # fmt: skip
        if isinstance(category, type) and issubclass(category, TensorMagicWarning):
            if str(message) in {warning_text(d) for d in rec.diagnostics}:
                return  # the panel (or report) below the cell shows it
        before(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        yield
    finally:
        if warnings.showwarning is showwarning:  # user code may have put its own in place since
            warnings.showwarning = before


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
        print(inert_line(f"── {label} ──"))
        show(rec, mode, shell)
    return None
