"""tensormagic: see what your PyTorch code does to its tensors — in Jupyter, IPython and scripts.

Heavy imports (torch, ipywidgets) happen on first use, so ``import tensormagic`` and
``%load_ext tensormagic`` stay cheap until something is tracked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .api import TrackingWarning, last_recording, track
    from .log.reader import load_log
    from .log.writer import LogWarning
    from .model.recording import Recording, TensorRecord

_LAZY = {
    "track": "api",
    "last_recording": "api",
    "TrackingWarning": "api",
    "Recording": "model.recording",
    "TensorRecord": "model.recording",
    "tensor_info": "info",
    "TensorInfo": "info",
    "load_log": "log.reader",
    "LogWarning": "log.writer",
}

__all__ = [*_LAZY, "load_ipython_extension", "unload_ipython_extension", "__version__"]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'tensormagic' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext tensormagic``."""
    from .ipython.magics import load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext tensormagic``: removes every magic, hook and mode it installed."""
    from .ipython.magics import unload

    unload(ip)
