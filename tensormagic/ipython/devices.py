"""``%device``: which devices torch can use, where the namespace's tensors live, the default device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..engine import naming
from ..views.common import fmt_bytes, plural
from ..views.inert import inert


@dataclass
class DeviceReport:
    """Devices, the default device and the namespace's tensors grouped by device."""

    devices: list[tuple[str, str]]
    default: str
    by_device: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"devices": [list(d) for d in self.devices], "default": self.default,
                "by_device": {k: [list(x) for x in v] for k, v in self.by_device.items()}}  # fmt: skip

    def to_text(self) -> str:
        lines = ["devices:"] + [f"  {d:<8} {desc}" for d, desc in self.devices]
        lines.append(f"default device: {self.default}")
        if not self.by_device:
            lines.append("no tensors in the namespace")
        for dev, items in sorted(self.by_device.items()):
            total = sum(b for _, b in items)
            names = ", ".join(n for n, _ in items[:12]) + (f", … ({len(items) - 12:,} more)" if len(items) > 12 else "")
            lines.append(f"on {dev}: {plural(len(items), 'tensor')}, {fmt_bytes(total)}: {names}")
        return inert("\n".join(lines))  # names may be dict keys: any text

    def to_html(self) -> str:
        from ..views.html import STYLE, h

        return f"{STYLE}<div class='tm-report'><pre>{h(self.to_text())}</pre></div>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.to_text(), "text/html": self.to_html()}


def available_devices() -> list[tuple[str, str]]:
    """(device, description) for CPU, each CUDA device and MPS; never creates a CUDA context
    on a device the user has not touched (details only once CUDA is initialised)."""
    out = [("cpu", f"{torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        if torch.cuda.is_initialized():
            for i in range(n):
                p = torch.cuda.get_device_properties(i)
                used = torch.cuda.memory_allocated(i)
                out.append((f"cuda:{i}", f"{p.name}, {fmt_bytes(p.total_memory)} total, "
                                         f"{fmt_bytes(used)} allocated by torch"))  # fmt: skip
        else:
            out.extend((f"cuda:{i}", "available (details after first use: not initialising CUDA for you)")
                       for i in range(n))  # fmt: skip
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append(("mps", "Apple Metal"))
    return out


def default_device() -> str:
    return str(torch.get_default_device())


def device_report(namespace: Mapping[str, Any]) -> DeviceReport:
    by_device: dict[str, list[tuple[str, int]]] = {}
    for name, t in naming.named_tensors(namespace):
        by_device.setdefault(str(t.device), []).append((name, t.numel() * t.element_size()))
    return DeviceReport(devices=available_devices(), default=default_device(), by_device=by_device)


def set_default_device(spec: str) -> str:
    """Make ``spec`` torch's default device; ``cpu`` restores the default without a slow mode.

    Raises ValueError with a message that says what to type instead."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{spec!r} is not a device: use cpu, cuda, cuda:N, mps or meta") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{spec} is not available: this machine has no CUDA device (try %device cpu)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"{spec} is not available: this machine has {n} CUDA device(s), cuda:0…cuda:{n - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{spec} is not available on this machine (try %device cpu)")
    elif dev.type not in ("cpu", "meta"):
        raise ValueError(f"{spec!r} is not supported here: use cpu, cuda, cuda:N, mps or meta")
    # torch.set_default_device("cpu") installs a mode that slows every later op ~1.6x: None is
    # the real default
    torch.set_default_device(None if dev.type == "cpu" else dev)
    return default_device()
