"""The benchmark workloads (W1–W4 here; W1b, R1–R4 and C1 in realcode.py).

Each ``make_*`` does its setup and returns the timed callable.

Sizes follow issue 4; ``scale`` shrinks the loop counts (not the tensor shapes) for ``--quick``
and ``--smoke`` so that the per-op cost being measured stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

Run = Callable[[], object]


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    make: Callable[[str, float], Run]
    #: the variant keys that run on it (None: all); "bare" always runs
    variants: tuple[str, ...] | None = None
    #: None when it can run here, else why not (a missing package)
    missing: Callable[[], str | None] = lambda: None


def _n(full: int, scale: float) -> int:
    return max(1, round(full * scale))


def make_w1(device: str, scale: float = 1.0) -> Run:
    """10,000 tiny elementwise ops on a 16-element tensor: the worst case per op."""
    n = _n(5_000, scale)  # two ops per iteration
    x0 = torch.rand(16, device=device)

    def run() -> object:
        x = x0
        for _ in range(n):
            x = x + 1.0
            x = x * 0.5
        return x

    return run


def _mlp(device: str, inplace: bool) -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(inplace=inplace), nn.Linear(256, 10)).to(device)


def _train(device: str, scale: float, w4: bool) -> Run:
    steps = _n(200, scale)
    gen = torch.Generator(device="cpu").manual_seed(0)
    model = _mlp(device, inplace=w4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)

    def run() -> object:
        loss = None
        for _ in range(steps):
            opt.zero_grad()
            out = model(x)
            if w4:
                out = out.to(torch.float64)  # a dtype move on every step
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
        return loss

    return run


def make_w2(device: str, scale: float = 1.0) -> Run:
    """MLP 784-256-10, batch 64, 200 SGD steps (forward + backward + step): a typical cell."""
    return _train(device, scale, w4=False)


def make_w3(device: str, scale: float = 1.0) -> Run:
    """20 matmuls of 1024x1024: compute-bound."""
    n = _n(20, scale)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(1024, 1024, generator=gen).to(device)
    b = torch.randn(1024, 1024, generator=gen).to(device)

    def run() -> object:
        c = None
        for _ in range(n):
            c = a @ b
        return c

    return run


def make_w4(device: str, scale: float = 1.0) -> Run:
    """The W2 loop with an in-place ReLU and a ``.to(torch.float64)`` per step."""
    return _train(device, scale, w4=True)


def _real() -> dict[str, Workload]:
    import realcode as r

    return {
        "W1b": Workload("W1b", "10k chained ops", r.make_w1b),
        "R1": Workload("R1", "GPT-2 AdamW 20 st", r.make_r1, missing=r.transformers_missing),
        "R2": Workload("R2", "ResNet BN 20 st", r.make_r2),
        "R3": Workload("R3", "DataLoader 50 st", r.make_r3),
        "R4": Workload("R4", "autograd.Function", r.make_r4),
        # the compiled step: the variants that say something about compiled code today
        "C1": Workload("C1", "compiled MLP step", r.make_c1, variants=("loaded", "track", "python")),
    }


WORKLOADS = {
    "W1": Workload("W1", "10k tiny ops", make_w1),
    "W2": Workload("W2", "MLP 200 steps", make_w2),
    "W3": Workload("W3", "20 matmul 1024", make_w3),
    "W4": Workload("W4", "W2 + inplace + .to", make_w4),
    **_real(),
}
