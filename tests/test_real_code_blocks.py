"""Real code around the block itself, on both engines: DataLoader workers (forked while tracking),
a second thread running a module, nested blocks, and the IPython cell magic under ``%trackgrad on``."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
import torch
from realcode import ENGINES, check
from testkit import run
from torch import nn
from torch.nn.modules import module as module_hooks
from torch.overrides import _len_torch_function_stack
from torch.utils.data import DataLoader, Dataset

import tensormagic


class Squares(Dataset):  # type: ignore[type-arg]
    """Items made in the worker (each from its own seeded generator: the same in every run)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, generator=g)
        return x, (x * x).sum(0, keepdim=True)


def dataloader_with_two_workers() -> dict[str, Any]:
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for x, y in DataLoader(Squares(), batch_size=4, num_workers=2):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return {"losses": losses, "model": model, "last_batch": (x, y)}


class Pause(nn.Module):
    """Holds its thread inside the module until told to go on."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.go.wait(10)
        return x


def second_thread_running_a_module() -> dict[str, Any]:
    pause = Pause()
    other = nn.Sequential(nn.Linear(4, 4), pause, nn.Linear(4, 2))
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    xo, xm = torch.randn(2, 4), torch.randn(2, 4)
    got: dict[str, torch.Tensor] = {}
    worker = threading.Thread(target=lambda: got.setdefault("other", other(xo)))
    worker.start()
    pause.entered.wait(10)  # the other thread is inside its module now
    y = model(xm)
    pause.go.set()
    worker.join()
    return {"y": y, "other_out": got["other"], "model": model, "other": other}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scenario", [dataloader_with_two_workers, second_thread_running_a_module],
                         ids=lambda f: f.__name__)  # fmt: skip
def test_block_scenario_runs_bit_identical_and_recorded(scenario: Any, engine: str) -> None:
    """Workers and threads leave results and RNG state bit-identical, the whole block recorded
    without an internal error, and every tensor describable."""
    check(scenario, engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_module_another_thread_runs_leaves_the_tracked_threads_paths(engine: str) -> None:
    """Ops the tracked thread runs in its module are placed in that module, whatever module
    another thread is inside meanwhile."""
    with tensormagic.track(engine=engine) as rec:
        out = second_thread_running_a_module()
    mine = [e for e in rec.events if e.tensor.shape == (2, 3) and e.kind == "create"]
    assert [e.op for e in mine] == ["torch.nn.functional.linear", "torch.nn.functional.relu"], [e.op for e in mine]
    # the namespace names no module: the top-level one is the function's local ``model`` (line 64)
    assert [e.module for e in mine] == ["model.0", "model.1"]
    del out


@pytest.mark.parametrize("engine", ENGINES)
def test_forked_worker_has_no_tracking_left(engine: str) -> None:
    """A child forked inside a block (as a DataLoader worker is) has no tracking mode on its stack,
    no module hooks and no warning redirect: its ops cost nothing and record nothing."""
    before_hooks = len(module_hooks._global_forward_pre_hooks)
    with tensormagic.track(engine=engine) as rec:
        a = torch.ones(3)
        assert _len_torch_function_stack() >= 1
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what it has, run a module, leave without cleanup
            try:
                nn.Linear(3, 3)(a * 2)
                from tensormagic.engine import warnsite

                state = (_len_torch_function_stack(), len(module_hooks._global_forward_pre_hooks) - before_hooks,
                         int(warnsite.installed()))  # fmt: skip
                os.write(write, repr(state).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        child = os.read(read, 100).decode()
        os.close(read)
        b = a + 1
    assert child == "(0, 0, 0)", child
    ops = [e.op for e in rec.events]
    assert ops == ["torch.ones", "torch.Tensor.add"], ops  # nothing of the child's
    del b


@pytest.mark.parametrize("engine", ENGINES)
def test_dataloader_workers_run_no_tracking(engine: str) -> None:
    """DataLoader workers forked while a block records find no tracking mode and no module hooks."""

    class Probe(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            nn.Linear(2, 2)(torch.ones(2))
            return torch.tensor([_len_torch_function_stack(), len(module_hooks._global_forward_pre_hooks)])

    outside = len(module_hooks._global_forward_pre_hooks)
    with tensormagic.track(engine=engine):
        seen = torch.cat(list(DataLoader(Probe(), batch_size=2, num_workers=2)))
    assert seen.view(-1, 2).tolist() == [[0, outside]] * 4


@pytest.mark.parametrize("engine", ENGINES)
def test_nested_blocks_each_record_their_events(engine: str) -> None:
    """A track() inside a track(): the inner recording has the inner block's events, the outer one
    keeps them too, both with their lines."""
    with tensormagic.track(engine=engine) as outer:
        a = torch.ones(3)
        with tensormagic.track(engine=engine) as inner:
            b = a + 1
            c = b * 2
        d = c - 1
    assert [e.op for e in inner.events] == ["torch.Tensor.add", "torch.Tensor.mul"]
    assert [e.op for e in outer.events] == ["torch.ones", "torch.Tensor.add", "torch.Tensor.mul", "torch.Tensor.sub"]
    assert [e.line for e in inner.events] == [e.line for e in outer.events][1:3]
    assert inner.internal_error is None and outer.internal_error is None
    del d


def test_a_track_that_is_recording_refuses_to_be_entered_again() -> None:
    """Entering a track() that is already recording fails before the inner block runs, and says that
    each block needs its own track()."""
    t = tensormagic.track()
    ran = []
    with t:
        with pytest.raises(RuntimeError, match="each with-block needs a track\\(\\) of its own"):
            with t:
                ran.append(1)
    assert ran == []


def test_a_finished_track_keeps_its_recording() -> None:
    """A track() whose block has ended refuses another block instead of overwriting its recording."""
    t = tensormagic.track()
    with t as rec:
        torch.ones(2)
    with pytest.raises(RuntimeError, match="recorded its block already"):
        with t:
            torch.zeros(2)
    assert [e.op for e in rec.events] == ["torch.ones"]


def test_cell_magic_under_auto_tracking_records_its_cell(ip: Any) -> None:
    """A %%trackgrad cell run while %trackgrad on tracks every cell records that cell's events."""
    run(ip, "%trackgrad on --quiet")
    try:
        run(ip, "%%trackgrad --quiet\nq1 = torch.ones(2)\nq2 = q1 + 1\n")
        rec = tensormagic.last_recording()
    finally:
        run(ip, "%trackgrad off")
    assert rec is not None and [e.op for e in rec.events] == ["torch.ones", "torch.Tensor.add"]
