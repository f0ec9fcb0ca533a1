"""Value statistics, safe for every kind of tensor, computed on the tensor's own device."""

from __future__ import annotations

import torch

from ..model.events import Stats


def compute_stats(t: torch.Tensor) -> Stats:
    """min, max, mean, std and NaN/Inf/zero counts; reductions run on the device and only the
    few scalars travel to the host (this synchronises a GPU: callers decide when)."""
    numel = t.numel()
    if t.device.type == "meta":
        return Stats(numel=numel, note="meta tensor: shape only, no values")
    if t.is_sparse or t.layout != torch.strided:
        return Stats(numel=numel, note=f"{str(t.layout).replace('torch.', '')} tensor: no statistics")
    if numel == 0:
        return Stats(numel=0)
    with torch.no_grad():
        x = t.detach()
        if x.is_complex():
            x = x.abs()  # complex values are summarised by their magnitudes
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        zeros = int((x == 0).sum())
        if x.is_floating_point():
            nan = int(torch.isnan(x).sum())
            inf = int(torch.isinf(x).sum())
            finite = x[torch.isfinite(x)] if (nan or inf) else x
            if finite.numel() == 0:
                return Stats(nan=nan, inf=inf, zeros=zeros, numel=numel)
            f = finite.to(torch.float64) if finite.dtype in (torch.float16, torch.bfloat16) else finite
            mn, mx = float(f.min()), float(f.max())
            mean = float(f.mean())
            std = float(f.std()) if f.numel() > 1 else 0.0
        else:
            nan = inf = 0
            mn, mx = int(x.min()), int(x.max())
            f = x.to(torch.float64)
            mean = float(f.mean())
            std = float(f.std()) if f.numel() > 1 else 0.0
        return Stats(min=mn, max=mx, mean=mean, std=std, nan=nan, inf=inf, zeros=zeros, numel=numel)


def histogram(t: torch.Tensor, bins: int = 20) -> tuple[list[int], float, float] | None:
    """Counts of finite values in ``bins`` equal bins between min and max, or None."""
    if t.device.type == "meta" or t.numel() == 0 or t.layout != torch.strided:
        return None
    with torch.no_grad():
        x = t.detach()
        if x.is_complex():
            x = x.abs()
        x = x.to(torch.float64)
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return None
        lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            return [int(x.numel())], lo, hi
        counts = torch.histc(x, bins=bins, min=lo, max=hi)
        return [int(c) for c in counts.tolist()], lo, hi
