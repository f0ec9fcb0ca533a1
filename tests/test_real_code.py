"""Real PyTorch code nobody here wrote, tracked on both engines: outputs, gradients, parameters,
buffers and RNG state are bit-identical to the untracked run, the whole block is recorded, and
``tensor_info`` describes every tensor it made (``realcode.check``).

Models and training code; the tensor kinds are in test_real_code_tensors.py, threads, forked
workers and nested blocks in test_real_code_blocks.py.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from realcode import ENGINES, check
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from a config: nothing is downloaded


def gpt2_from_config() -> dict[str, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128, n_positions=32,
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(cfg)
    model.train()  # dropout draws from the RNG
    ids = torch.randint(0, 128, (2, 16))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return {"loss": out.loss, "logits": out.logits, "model": model}


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


def resnet_with_batch_norm() -> dict[str, Any]:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        Block(8), Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        x = torch.randn(4, 3, 16, 16)
        y = torch.randint(0, 10, (4,))
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(torch.randn(2, 3, 16, 16))
    return {"loss": loss, "pred": pred, "net": net, "opt": opt}


def torch_func_transforms() -> dict[str, Any]:
    from torch.func import functional_call, grad, jacrev, vmap

    model = nn.Linear(4, 3)
    params = dict(model.named_parameters())
    x = torch.randn(5, 4)

    def loss_fn(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (xi,)).pow(2).sum()

    per_sample = vmap(grad(loss_fn), in_dims=(None, 0))(params, x)
    jac = jacrev(lambda v: torch.sin(v) * v)(torch.randn(3))
    out = functional_call(model, params, (x,))
    return {"per_sample": per_sample, "jac": jac, "out": out}


def checkpointing() -> dict[str, Any]:
    a, b = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.3), nn.Tanh()), nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    h = checkpoint(a, x, use_reentrant=True)
    y = checkpoint(b, h, use_reentrant=False)
    y.sum().backward()
    return {"y": y, "x": x, "a": a, "b": b}


def checkpoint_stopping_its_recomputation_early() -> dict[str, Any]:
    # non-reentrant checkpointing stops recomputing once it has what backward needs, by raising
    # inside an op: the tracker first meets that op's input there
    block = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4))
    x = torch.randn(8, 4)
    h = checkpoint(block, x, use_reentrant=False)
    h.sum().backward()
    return {"h": h, "block": block}


def attention() -> dict[str, Any]:
    mha = nn.MultiheadAttention(16, 4, dropout=0.1, batch_first=True)
    q = torch.randn(2, 5, 16, requires_grad=True)
    out, weights = mha(q, q, q, need_weights=True)
    qh, kh, vh = (torch.randn(2, 4, 5, 8, requires_grad=True) for _ in range(3))
    sdpa = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
    (out.sum() + sdpa.sum()).backward()
    return {"out": out, "weights": weights, "sdpa": sdpa, "q": q, "mha": mha, "qkv": (qh, kh, vh)}


def lstm_packed_sequences() -> dict[str, Any]:
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    lstm = nn.LSTM(6, 5, num_layers=2, batch_first=True)
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 2])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
    out, (h, c) = lstm(packed)
    padded, _ = pad_packed_sequence(out, batch_first=True)
    padded.sum().backward()
    return {"padded": padded, "h": h, "c": c, "lstm": lstm, "packed": packed}


def jit_script() -> dict[str, Any]:
    @torch.jit.script
    def gelu_ish(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)

    lin = torch.jit.script(nn.Linear(4, 4))
    x = torch.randn(3, 4, requires_grad=True)
    y = gelu_ish(lin(x))
    y.sum().backward()
    return {"y": y, "x": x, "lin": lin}


class ScaleInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * 2


def autograd_function_mark_dirty() -> dict[str, Any]:
    w = torch.randn(4, requires_grad=True)
    h = w * 1.5
    y = ScaleInPlace.apply(h)
    y.sum().backward()
    return {"w": w, "y": y}


def tensor_hooks() -> dict[str, Any]:
    w = torch.randn(3, requires_grad=True)
    seen: list[torch.Tensor] = []
    w.register_hook(lambda g: g * 3)
    h = w.exp()
    h.register_hook(lambda g: seen.append(g.clone()))
    h.retain_grad()
    h.sum().backward()
    return {"w": w, "h_grad": h.grad, "seen": seen}


def bf16_autocast_on_cpu() -> dict[str, Any]:
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2))
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        loss = y.float().pow(2).mean()
    loss.backward()
    return {"y": y, "loss": loss, "model": model}


SCENARIOS = [gpt2_from_config, resnet_with_batch_norm, torch_func_transforms, checkpointing, attention,
             lstm_packed_sequences, jit_script, autograd_function_mark_dirty, tensor_hooks,
             bf16_autocast_on_cpu, checkpoint_stopping_its_recomputation_early]  # fmt: skip


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_real_code_runs_bit_identical_and_recorded(scenario: Any, engine: str) -> None:
    """The scenario's results and RNG state are bit-identical tracked and untracked, its whole block
    is recorded without an internal error, and tensor_info describes every tensor it made."""
    check(scenario, engine)
