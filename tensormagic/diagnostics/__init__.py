"""Diagnostics: the classic PyTorch mistakes, recognised while tracking, at the line that makes them.

``track(diagnostics="all")`` (the default) runs every check; ``diagnostics=[...]`` a few of
:data:`IDS`; ``[]`` or ``None`` none.  A finished block's ``rec.diagnostics`` lists
:class:`~tensormagic.events.Diagnostic` items, each also emitted as a Python warning of its own
category (``InplaceSavedWarning`` …, all subclasses of :class:`TensorMagicWarning`), so the usual
``warnings.filterwarnings("ignore", category=…)`` silences it.

The IPython layer (and anything else wrapping ``Tracker`` directly) uses :func:`install` before
the block and ``checks.finish(rec, namespace=…, locator=…)`` plus :func:`emit` after it.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable

from ..model.events import Diagnostic
from .catalog import (
    CATALOG,
    IDS,
    BroadcastWarning,
    DeviceMismatchWarning,
    DtypeFloat64Warning,
    DtypeIntTargetWarning,
    GradAccumulationWarning,
    GradUnfilledWarning,
    InplaceSavedWarning,
    LeafMovedWarning,
    NonFiniteWarning,
    Settings,
    SyncInLoopWarning,
    TensorMagicWarning,
    category,
    select,
    severity,
)


def install(tracker: Any, spec: Any = "all", *, compiled: bool = False) -> Any:
    """Put the selected checks on a Tracker before its block runs; None when none is selected.
    ``compiled``: the block runs the compiled engine, whose C helpers the checks may use too."""
    settings = select(spec)
    if not settings.ids:
        return None
    from .checks import Checks

    return Checks(tracker, settings, compiled=compiled)


def warning_text(d: Diagnostic) -> str:
    return f"{d.message}" + (f" Fix: {d.fix}." if d.fix else "") + (f" (×{d.count})" if d.count > 1 else "")


def emit(diagnostics: Iterable[Diagnostic], *, failed: bool = False) -> None:
    """Emit each diagnostic as a warning of its category, located at its own line.

    When the block failed, a warnings filter set to ``"error"`` must not replace the user's own
    exception, so such a raise is dropped; otherwise it propagates as Python does it.
    """
    from ..views.inert import inert  # a name or source line may hold escapes: the warning prints on a terminal

    for d in diagnostics:
        if d.file is not None and d.cell is None:
            filename = d.file
        elif d.cell is not None:
            filename = f"<cell {d.cell}>"
        else:
            filename = "<tensormagic>"
        try:
            warnings.warn_explicit(inert(warning_text(d)), category(d.id), filename, d.line or 0)
        except Exception:  # noqa: BLE001 - only reached when a filter turned warnings into errors
            if not failed:
                raise


__all__ = [
    "CATALOG",
    "IDS",
    "BroadcastWarning",
    "DeviceMismatchWarning",
    "Diagnostic",
    "DtypeFloat64Warning",
    "DtypeIntTargetWarning",
    "GradAccumulationWarning",
    "GradUnfilledWarning",
    "InplaceSavedWarning",
    "LeafMovedWarning",
    "NonFiniteWarning",
    "Settings",
    "SyncInLoopWarning",
    "TensorMagicWarning",
    "category",
    "emit",
    "install",
    "select",
    "severity",
    "warning_text",
]
