"""Shared fixtures: a real IPython shell, and CUDA/browser markers."""

from __future__ import annotations

import gc

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_mode_left_behind():
    """Every test must leave torch's function-mode stack as it found it."""
    from torch.overrides import _len_torch_function_stack

    before = _len_torch_function_stack()
    yield
    gc.collect()
    assert _len_torch_function_stack() == before, "a torch function mode was left on the stack"
