"""Workloads that look like what people run (issue 24): W1b and R1-R4, and the compiled step C1 (issue 20).

Each ``make_*`` does its setup (models, data, optimizer) outside the timed region and returns the
timed callable; ``scale`` shrinks the loop count, never the shapes, so the per-op cost measured
stays the same in ``--quick`` and ``--smoke``.  Every workload is deterministic (seeded) and
offline: R1 builds GPT-2 from a ``transformers`` config, no weights are fetched.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

Run = Callable[[], object]


def _n(full: int, scale: float) -> int:
    return max(1, round(full * scale))


def make_w1b(device: str, scale: float = 1.0) -> Run:
    """10,000 tiny ops written as chained expressions: ``x = x * a + b``, the product never bound."""
    n = _n(5_000, scale)  # two ops per line
    gen = torch.Generator(device="cpu").manual_seed(0)
    x0 = torch.rand(16, generator=gen).to(device)
    a = torch.full((16,), 0.5, device=device)
    b = torch.rand(16, generator=gen).to(device)

    def run() -> object:
        x = x0
        for _ in range(n):
            x = x * a + b
        return x

    return run


# -- R1: GPT-2 from a transformers config --------------------------------------------------------------
def transformers_missing() -> str | None:
    """None when R1 can run here, else why not (it needs the ``transformers`` package)."""
    try:
        import transformers  # noqa: F401
    except Exception as e:  # noqa: BLE001 - reported as n/a, never fatal
        return f"transformers not importable ({type(e).__name__}); pip install transformers"
    return None


def make_r1(device: str, scale: float = 1.0) -> Run:
    """GPT-2 (2 layers, 64 wide, 4 heads, vocabulary 1,024): forward + backward + AdamW, batch 4 x 32 tokens."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    steps = _n(20, scale)
    torch.manual_seed(0)
    # a small vocabulary: the default 50,257 would make the LM head's matmul the whole step
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=1024,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    model = GPT2LMHeadModel(cfg).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (4, 32), generator=gen).to(device)

    def run() -> object:
        loss = None
        for _ in range(steps):
            opt.zero_grad()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
        return loss

    return run


# -- R2: a small ResNet-style conv net -------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.short(x))


class SmallResNet(nn.Module):
    """A stem and three residual stages (16, 32, 64 channels) with batch norm: ResNet's shape, small."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(_Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2))
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_r2(device: str, scale: float = 1.0) -> Run:
    """The small ResNet, 20 SGD steps (momentum 0.9) on 8x3x32x32 images."""
    steps = _n(20, scale)
    torch.manual_seed(0)
    model = SmallResNet().to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(8, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (8,), generator=gen).to(device)

    def run() -> object:
        loss = None
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return loss

    return run


# -- R3: a DataLoader training loop ----------------------------------------------------------------------
def make_r3(device: str, scale: float = 1.0) -> Run:
    """A DataLoader (``num_workers=0``, shuffled) feeding an MLP: Adam, ``clip_grad_norm_``, a scheduler; 50 steps."""
    from torch.utils.data import DataLoader, TensorDataset

    steps = _n(50, scale)
    batch = 32
    gen = torch.Generator(device="cpu").manual_seed(0)
    data = TensorDataset(torch.randn(steps * batch, 32, generator=gen), torch.randint(0, 4, (steps * batch,), generator=gen))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.9)
    loader_gen = torch.Generator(device="cpu")

    def run() -> object:
        loader_gen.manual_seed(0)  # every run sees the same batches in the same order
        loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=0, generator=loader_gen)
        loss = None
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        return loss

    return run


# -- R4: a custom autograd.Function ----------------------------------------------------------------------
class ScaledLeakyClamp(torch.autograd.Function):
    """A hand-written op with its own backward, as people write for a custom activation."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.where(x > 0, x, 0.1 * x) * w

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, w = ctx.saved_tensors
        slope = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, 0.1))
        return grad * slope * w, (grad * torch.where(x > 0, x, 0.1 * x)).sum(0)


def make_r4(device: str, scale: float = 1.0) -> Run:
    """The custom Function in a loop of 200: forward, a loss, backward, a plain SGD update under ``no_grad``."""
    n = _n(200, scale)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(8, 16, generator=gen).to(device)
    w0 = torch.rand(16, generator=gen).to(device)

    def run() -> object:
        w = w0.clone().requires_grad_(True)
        loss = None
        for _ in range(n):
            loss = ScaledLeakyClamp.apply(x, w).square().mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
            w.grad = None
        return loss

    return run


# -- C1: a compiled training step (issue 20) -------------------------------------------------------------
#: the backend C1 compiles with; ``--smoke`` sets "eager" (an inductor compile takes ~20 s here)
C1_BACKEND = "inductor"
_c1_cache: dict[tuple[str, str], Any] = {}


def _c1_model(device: str, backend: str) -> Any:
    # one compiled model per (device, backend), shared by the timed and the warm-up loops:
    # a second torch.compile would pay for a second compile
    key = (device, backend)
    if key not in _c1_cache:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
        _c1_cache[key] = (model, torch.compile(model, backend=backend), torch.optim.SGD(model.parameters(), lr=0.01))
    return _c1_cache[key]


def make_c1(device: str, scale: float = 1.0) -> Run:
    """``torch.compile(model)`` (inductor on CPU) of a small MLP; 20 steps of forward + backward + SGD.

    The model is compiled lazily by its first call: the harness's untimed warm-up run of each
    variant pays for the compiles (one without the mode on the stack, one with it), so the timed
    runs measure the steady state, "after warm-up"."""
    steps = _n(20, scale)
    _, compiled, opt = _c1_model(device, C1_BACKEND)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(32, 64, generator=gen).to(device)
    y = torch.randint(0, 10, (32,), generator=gen).to(device)

    def run() -> object:
        loss = None
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(compiled(x), y)
            loss.backward()
            opt.step()
        return loss

    return run
