"""Interleaved, paired timing: every repetition runs each variant once (A B C A B C …), and
each variant's time is divided by the bare run of the same repetition and workload size."""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from variants import Variant
from workloads import Workload


@dataclass
class Cell:
    """One workload x variant: the paired ratios and the raw seconds."""

    ratios: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    bare_seconds: list[float] = field(default_factory=list)
    end_ratios: list[float] = field(default_factory=list)  # block-end time / bare time
    note: str | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        d: dict[str, Any] = {"note": self.note, "error": self.error}
        if self.ratios:
            d.update(median=statistics.median(self.ratios), min=min(self.ratios), max=max(self.ratios),
                     ratios=self.ratios, seconds=self.seconds, bare_seconds=self.bare_seconds)  # fmt: skip
        if self.end_ratios:
            d["end"] = {"median": statistics.median(self.end_ratios), "min": min(self.end_ratios),
                        "max": max(self.end_ratios)}  # fmt: skip
        return d


def _timer(cuda: bool, clock: str, collect: bool) -> Callable[[Callable[[], object]], float]:
    # "cpu" (process CPU time) is steadier on a machine shared with other work: time this process
    # spends waiting for a core does not count.  Wall time is what a person waits.
    now = time.process_time if clock == "cpu" and not cuda else time.perf_counter

    def timed(fn: Callable[[], object]) -> float:
        if collect:  # every run starts from the same collector state (~0.1 s with IPython loaded)
            gc.collect()
        if cuda:
            torch.cuda.synchronize()
        t0 = now()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return now() - t0

    return timed


#: every timed run follows an untimed run of the same variant on a loop this many times shorter
WARM_SHRINK = 10


def measure_workload(wl: Workload, variants: list[Variant], *, device: str, scale: float, reps: int,
                     log: Callable[[str], None], clock: str = "wall", collect: bool = True) -> dict[str, Cell]:  # fmt: skip
    """All variants on one workload, interleaved; the rotation of the order changes every repetition.

    Right before each timed run, the same variant runs untimed on a loop ``WARM_SHRINK`` times
    shorter: a variant pays for its own work, not for what the one before it left (the first
    tracked block after a ``torch.profiler`` run was measured 3-7 ms slower on W1, and whichever
    tensormagic variant came first after the profiler read ~0.3x higher than the same mode right
    after another tracked block)."""
    timed = _timer(device == "cuda", clock, collect)
    cells = {v.key: Cell(note=v.note) for v in variants}
    runs: dict[int, Callable[[], object]] = {}
    small: dict[int, Callable[[], object]] = {}
    for v in variants:
        if v.shrink not in runs:
            runs[v.shrink] = wl.make(device, scale / v.shrink)
            small[v.shrink] = wl.make(device, scale / v.shrink / WARM_SHRINK)
    wrapped: dict[str, Callable[[], object]] = {}
    warm: dict[str, Callable[[], object]] = {}
    for v in variants:
        if not v.available:
            continue
        try:
            fn = v.wrap(runs[v.shrink])
            v.before()
            try:
                fn()  # warm-up: caches, lazy imports, allocator
            finally:
                v.after()
            wrapped[v.key] = fn
            warm[v.key] = v.wrap(small[v.shrink])
        except Exception as e:  # noqa: BLE001 - one broken variant must not sink the table
            cells[v.key].error = f"{type(e).__name__}: {e}"
            log(f"  {wl.key} {v.key}: failed in warm-up\n{traceback.format_exc()}")
    active = [v for v in variants if v.key in wrapped]
    for rep in range(reps):
        order = active[rep % len(active):] + active[: rep % len(active)]
        bare: dict[int, float] = {}
        times: dict[str, float] = {}
        ends: dict[str, float] = {}
        for v in order:
            if v.shrink != 1:  # its own bare pair, of the same smaller size, right before it
                small[v.shrink]()
                bare[v.shrink] = timed(runs[v.shrink])
            v.before()
            try:
                warm[v.key]()
            finally:
                v.after()
            v.before()
            try:
                times[v.key] = timed(wrapped[v.key])
                if v.end_seconds is not None:
                    ends[v.key] = v.end_seconds()
            finally:
                v.after()
        bare[1] = times["bare"]
        for v in active:
            c = cells[v.key]
            b = bare[v.shrink]
            c.seconds.append(times[v.key])
            c.bare_seconds.append(b)
            c.ratios.append(times[v.key] / b)
            if v.end_seconds is not None and v.shrink == 1:
                c.end_ratios.append(ends[v.key] / b)
        log(f"  {wl.key} rep {rep + 1}/{reps}: bare {times['bare'] * 1e3:.1f} ms")
    return cells


class _CountingMode(TorchFunctionMode):
    """Counts the calls a function mode sees: the calls tracking pays its per-op cost on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # counted only when run, not while Dynamo traces: Dynamo would guard a compiled model (C1)
        # on the count, recompile it at every call up to its limit, then run it eagerly and count
        # the eager calls (800 for C1) instead of the ones the mode sees under the compiled model
        if not torch.compiler.is_compiling():
            self.calls += 1
        return func(*args, **(kwargs or {}))


def count_ops(wl: Workload, device: str, scale: float) -> int:
    """How many torch calls one run of ``wl`` makes, as a function mode sees them (nested calls excluded)."""
    run = wl.make(device, scale)
    run()  # warm-up: lazy initialisation (optimizer state, compiled graphs) makes calls only once
    with _CountingMode() as m:
        run()
    return m.calls
