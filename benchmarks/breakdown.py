"""Where tracking's time goes on one workload: a ladder of stand-ins, each adding one kind of work.

    python benchmarks/breakdown.py R3 R4 W1b        # CPU time, 1 thread, 15 repetitions
    python benchmarks/breakdown.py W2 --reps 25 --scale 0.5

Each rung is a function mode (or hooks) doing what tracking does, in plain Python, cumulatively:
the mode's floor (a no-op ``TorchFunctionMode``), + metadata reads (the seven attributes the
engine reads per output, a weak reference and an id-table insert), + naming (the frame walk to
the user's line), + module paths (global forward pre/post hooks keeping a stack of module
names), + backward records (the graph walk to the leaves at every ``backward``); then the real
``track(diagnostics=None)`` and ``track()``.  The rungs are stand-ins: they say how much each
kind of work costs on this workload's ops, not what the engine's own code costs for it (its C
hot path does the first three for less).  The last two rows are the engine itself: what is left
above the stand-ins is its own bookkeeping; ``track()`` over ``diagnostics=None`` is the checks.

Timing is ``run.py``'s: interleaved, paired with bare runs of the same repetition, process CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import torch  # noqa: E402
from measure import count_ops, measure_workload  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from variants import Variant, release_own_recording  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


class Floor(TorchFunctionMode):
    """The mode's floor: torch routes every call through ``__torch_function__``."""

    meta = naming = backward = False

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[int, Any] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.backward and func is torch.Tensor.backward:
            from tensormagic.engine.autograd import leaves_of

            leaves_of([args[0]])
        out = func(*args, **(kwargs or {}))
        if self.naming:
            f = sys._getframe(1)
            while f is not None and f.f_code.co_filename.startswith(_TORCH_DIR):  # to the user's frame
                f = f.f_back
            if f is not None:
                _ = (f.f_code.co_filename, f.f_lineno)
        if self.meta and isinstance(out, torch.Tensor):
            _ = (out.shape, out.dtype, out.device, out.requires_grad, out.grad_fn, out._base, out.is_leaf)
            self.table[id(out)] = weakref.ref(out)
        return out


def _ladder_mode(meta: bool, naming: bool, backward: bool) -> type[Floor]:
    return type("Rung", (Floor,), {"meta": meta, "naming": naming, "backward": backward})


class ModuleStack:
    """Global forward pre/post hooks keeping a stack of module names, as module paths need."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.stack: list[str] = []

    def install(self) -> None:
        from torch.nn.modules import module as m

        def pre(mod: Any, args: Any) -> None:
            self.stack.append(type(mod).__name__)

        def post(mod: Any, args: Any, out: Any) -> None:
            if self.stack:
                self.stack.pop()

        self.handles = [m.register_module_forward_pre_hook(pre), m.register_module_forward_hook(post)]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _mode_variant(key: str, title: str, mode: type[Floor], hooks: bool = False) -> Variant:
    stack = ModuleStack()

    def wrap(run: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            if hooks:
                stack.install()
            try:
                with mode():
                    return run()
            finally:
                stack.remove()

        return timed

    return Variant(key, title, wrap)


def _track_variant(key: str, title: str, **kw: Any) -> Variant:
    import tensormagic

    def wrap(run: Callable[[], object]) -> Callable[[], object]:
        def timed() -> object:
            with tensormagic.track(**kw):
                r = run()
            release_own_recording()
            return r

        return timed

    return Variant(key, title, wrap)


def ladder() -> list[Variant]:
    return [
        Variant("bare", "bare PyTorch", lambda run: run),
        _mode_variant("floor", "mode floor (no-op TorchFunctionMode)", _ladder_mode(False, False, False)),
        _mode_variant("meta", "+ metadata reads, weak ref, id table", _ladder_mode(True, False, False)),
        _mode_variant("naming", "+ naming (frame walk to the line)", _ladder_mode(True, True, False)),
        _mode_variant("modules", "+ module paths (global hooks)", _ladder_mode(True, True, False), hooks=True),
        _mode_variant("backward", "+ backward records (graph walk)", _ladder_mode(True, True, True), hooks=True),
        _track_variant("nodiag", "track(diagnostics=None)", diagnostics=None),
        _track_variant("track", "track() (+ diagnostics)"),
    ]


def breakdown(key: str, scale: float, reps: int) -> dict[str, Any]:
    wl = WORKLOADS[key]
    cells = measure_workload(wl, ladder(), device="cpu", scale=scale, reps=reps, clock="cpu",
                             log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    ops = count_ops(wl, "cpu", scale)
    rows = []
    prev = 0.0
    for v in ladder():
        c = cells[v.key]
        if not c.ratios:
            rows.append({"key": v.key, "title": v.title, "error": c.error})
            continue
        extra = statistics.median(t - b for t, b in zip(c.seconds, c.bare_seconds)) / ops * 1e6
        rows.append({"key": v.key, "title": v.title, "ratio": statistics.median(c.ratios), "us_per_op": extra,
                     "step_us_per_op": extra - prev})  # fmt: skip
        prev = extra
    return {"workload": key, "ops": ops, "reps": reps, "scale": scale, "rows": rows}


def print_breakdown(b: dict[str, Any]) -> None:
    print(f"\n{b['workload']} {WORKLOADS[b['workload']].title}: {b['ops']} torch calls per run, "
          f"CPU time, 1 thread, median of {b['reps']} paired repetitions")  # fmt: skip
    print(f"  {'rung':<42}{'ratio':>7}{'+us/op':>9}{'this step':>11}")
    for r in b["rows"]:
        if "error" in r:
            print(f"  {r['title']:<42} error: {r['error']}")
            continue
        print(f"  {r['title']:<42}{r['ratio']:>7.2f}{r['us_per_op']:>9.2f}{r['step_us_per_op']:>+11.2f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workloads", nargs="+", help=f"any of {', '.join(WORKLOADS)}")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--scale", type=float, default=1.0)
    a = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for key in a.workloads:
        print_breakdown(breakdown(key, a.scale, a.reps))
    print(f"\nbreakdown took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
