"""Helpers for tests that drive a real InteractiveShell (a module, not conftest: two conftests
exist and only one can be imported as ``conftest``)."""

from __future__ import annotations

from types import SimpleNamespace


def run(ip, source: str):
    """Run a cell as a user would (history stored, so it gets an execution count); return its result."""
    return ip.run_cell(source, store_history=True)


def autograd_example() -> SimpleNamespace:
    """The core issue's example, tracked: ``.rec`` and the live tensors ``x``, ``y``, ``z``, ``out``
    (drop the ones a test wants freed)."""
    import torch

    import tensormagic

    with tensormagic.track() as rec:
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
        out.backward()
    return SimpleNamespace(rec=rec, x=x, y=y, z=z, out=out)
