"""Module paths are per thread: the tracking mode is, and so are the module calls it follows."""

from __future__ import annotations

import threading

import torch
from torch import nn

from tensormagic import track


def test_other_threads_modules_do_not_touch_module_paths():
    """A module that another thread runs during the block leaves the tracked thread's module paths as they are alone."""
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    other = nn.Sequential(nn.Sequential(nn.Linear(4, 4)))
    stop = threading.Event()
    started = threading.Event()

    def busy() -> None:
        with torch.no_grad():
            while not stop.is_set():
                other(torch.randn(2, 4))
                started.set()

    x = torch.randn(2, 4)
    th = threading.Thread(target=busy)
    th.start()
    try:
        started.wait(5)
        with track(namespace={"model": model, "x": x}) as rec:
            for _ in range(30):
                model(x)
    finally:
        stop.set()
        th.join()
    modules = {e.module for e in rec.events}
    assert modules == {"model.0", "model.1"}
