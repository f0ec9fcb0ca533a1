"""CUDA behaviour: device moves, no added synchronisation, identical results. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tensormagic

pytestmark = pytest.mark.cuda


def test_tutorial_cuda_moves():
    """``ones_like(device=d)``, ``x.to(d)``, ``x + y`` and ``z.to("cpu", double)`` on a real GPU."""
    d = torch.device("cuda")
    x = torch.ones(5)
    with tensormagic.track() as rec:
        y = torch.ones_like(x, device=d)
        xd = x.to(d)
        z = xd + y
        back = z.to("cpu", torch.double)
    assert [(e.kind, e.tensor.label) for e in rec.events] == [
        ("create", "y"), ("move", "xd"), ("create", "z"), ("move", "back")]
    to_gpu, to_cpu = rec.filter(kind="move")
    assert (to_gpu.from_device, to_gpu.to_device, to_gpu.nbytes) == ("cpu", "cuda:0", 20)
    assert (to_cpu.from_device, to_cpu.to_device, to_cpu.to_dtype) == ("cuda:0", "cpu", "float64")
    assert rec.bytes_moved() == 20 + 40 and back.sum().item() == 10.0


def test_module_cuda_moves_each_parameter():
    """``model.cuda()`` reports one cpu→cuda move per parameter."""
    model = nn.Linear(8, 4)
    with tensormagic.track() as rec:
        model.cuda()
    moves = rec.filter(kind="move")
    assert sorted(m.tensor.label for m in moves) == ["model.bias", "model.weight"]
    assert all(m.to_device == "cuda:0" for m in moves)


def _steps(tracked: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(inplace=True), nn.Linear(128, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(32, 64, device="cuda")
    t = torch.randint(0, 10, (32,), device="cuda")

    def run():
        for _ in range(20):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), t).backward()
            opt.step()

    if tracked:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with tensormagic.track() as rec:
                run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert rec.counts()["backward"] == 20
    else:
        run()
    return model


def test_tracking_adds_no_device_sync():
    """A tracked CUDA training loop runs under sync debug mode 'error' without raising."""
    _steps(tracked=True)


def test_cuda_results_are_identical():
    """Parameters after 20 tracked CUDA steps equal the untracked ones bit for bit."""
    bare, tracked = _steps(False), _steps(True)
    for p, q in zip(bare.parameters(), tracked.parameters()):
        assert torch.equal(p, q)


def test_tensor_info_on_cuda():
    """``tensor_info`` of a CUDA tensor reports its device and statistics."""
    from tensormagic.info import tensor_info

    info = tensor_info(torch.arange(4.0, device="cuda"))
    assert info.device == "cuda:0" and info.stats.max == 3.0


def test_device_magic_on_cuda(ip):
    """``%device cuda:0`` sets the default device and ``%device`` lists the GPU by name."""
    from IPython.utils.capture import capture_output

    try:
        ip.run_line_magic("device", "cuda:0")
        assert torch.ones(1).device.type == "cuda"
        with capture_output() as cap:
            ip.run_line_magic("device", "")
        text = "".join(o.data.get("text/plain", "") for o in cap.outputs)
        assert "cuda:0" in text and torch.cuda.get_device_name(0) in text
    finally:
        ip.run_line_magic("device", "cpu")
