"""Helpers for tests that drive a real InteractiveShell (a module, not conftest: two conftests
exist and only one can be imported as ``conftest``)."""

from __future__ import annotations


def run(ip, source: str):
    """Run a cell as a user would (history stored, so it gets an execution count); return its result."""
    return ip.run_cell(source, store_history=True)
