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
    if _len_torch_function_stack() != before:
        # a block left open only by garbage (a generator never finished) pops in its finalizer; a
        # full collection costs ~0.5 s once inductor is imported, so only a test that needs it pays
        gc.collect()
    assert _len_torch_function_stack() == before, "a torch function mode was left on the stack"


@pytest.fixture(scope="session")
def _ipython():
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def ip(_ipython):
    """A real InteractiveShell with tensormagic loaded and torch imported; unloaded afterwards."""
    import tensormagic

    _ipython.run_line_magic("load_ext", "tensormagic")
    _ipython.run_cell("import torch", store_history=True)
    yield _ipython
    _ipython.run_line_magic("unload_ext", "tensormagic")
    for k in [k for k, v in _ipython.user_ns.items() if isinstance(v, (torch.Tensor, tensormagic.Recording))]:
        del _ipython.user_ns[k]

