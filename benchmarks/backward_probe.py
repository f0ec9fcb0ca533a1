"""Where the time of W2's ``backward()`` calls goes under tracking, step by step.

``python benchmarks/backward_probe.py [--device cuda] [--steps 200] [--reps 5]`` runs the W2
loop (workloads.py's MLP and SGD step) with each ``backward()`` call timed on its own, under:
nothing; a no-op function mode; one that keeps a weak reference to every output (as the id table
does); one that walks each graph before backward (``leaves_of``, as the backward records do); and
``track(diagnostics=None)``.  It prints each variant's median block time and the time spent in its
``backward()`` calls.  On a GPU, W2 is launch-bound and the differences show what tracking adds
around backward on the CPU side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import tensormagic  # noqa: E402 - after the path insert, so that a checkout runs without install
from tensormagic.engine.autograd import leaves_of  # noqa: E402


class NoopMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


class WeakRefMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, Any] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        r = func(*args, **(kwargs or {}))
        if isinstance(r, torch.Tensor):
            self.refs[id(r)] = weakref.ref(r)
        return r


class WalkMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.backward:
            leaves_of([args[0]])
        return func(*args, **(kwargs or {}))


VARIANTS: dict[str, Callable[[], Any] | None] = {
    "bare": None,
    "no-op mode": NoopMode,
    "weak refs": WeakRefMode,
    "graph walk": WalkMode,
    "track(diagnostics=None)": lambda: tensormagic.track(diagnostics=None),
}


def make_loop(device: str, steps: int, in_backward: list[float]) -> Callable[[], None]:
    """W2 (workloads._train), with each backward() call's time added to ``in_backward[0]``."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)

    def loop() -> None:
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            t = time.perf_counter()
            loss.backward()
            in_backward[0] += time.perf_counter() - t
            opt.step()

    return loop


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    in_backward = [0.0]
    loop = make_loop(args.device, args.steps, in_backward)

    def once(ctx: Callable[[], Any] | None) -> tuple[float, float]:
        in_backward[0] = 0.0
        sync()
        t = time.perf_counter()
        if ctx is None:
            loop()
        else:
            with ctx():
                loop()
        sync()
        return time.perf_counter() - t, in_backward[0]

    times: dict[str, list[tuple[float, float]]] = {k: [] for k in VARIANTS}
    for ctx in VARIANTS.values():
        once(ctx)  # warm-up
    for _ in range(args.reps):
        for k, ctx in VARIANTS.items():  # interleaved
            times[k].append(once(ctx))
    out = {}
    print(f"W2, {args.steps} steps on {args.device}, median of {args.reps}:")
    for k, v in times.items():
        total, bw = statistics.median(t for t, _ in v), statistics.median(b for _, b in v)
        out[k] = (total, bw)
        print(f"  {k:26s} block {total * 1e3:8.1f} ms   in backward() {bw * 1e3:8.1f} ms")
    return out


if __name__ == "__main__":
    main()
