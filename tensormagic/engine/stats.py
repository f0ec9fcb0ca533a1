"""Value statistics, safe for every kind of tensor, computed on the tensor's own device."""

from __future__ import annotations

import torch

from ..model.events import Stats


def compute_stats(t: torch.Tensor) -> Stats:
    """min, max, mean, std and NaN/Inf/zero counts; reductions run on the device and only the
    few scalars travel to the host (this synchronises a GPU: callers decide when).  A subclass's
    ``__torch_function__`` does not run; a tensor whose values cannot be summarised (nested,
    a subclass that refuses) gets a note saying why."""
    try:
        with torch._C.DisableTorchFunctionSubclass():
            return _stats(t)
    except Exception as e:  # noqa: BLE001 - statistics are extra: say why there are none
        return Stats(numel=_numel(t), note=f"no statistics: {e}".split("\n")[0])


def _numel(t: torch.Tensor) -> int:
    try:
        with torch._C.DisableTorchFunctionSubclass():
            return int(torch._C.TensorBase.numel(t))
    except Exception:  # noqa: BLE001
        return 0


def _stats(t: torch.Tensor) -> Stats:
    numel = t.numel()
    if t.is_nested:
        return Stats(numel=numel, note="nested tensor: no statistics")
    if t.device.type == "meta":
        return Stats(numel=numel, note="meta tensor: shape only, no values")
    if t.is_sparse or t.layout != torch.strided:
        return Stats(numel=numel, note=f"{str(t.layout).replace('torch.', '')} tensor: no statistics")
    if numel == 0:
        return Stats(numel=0)
    if numel > CHUNK and t.device.type == "cpu" and t.is_contiguous() and not t.is_complex():
        return _chunked_stats(t.detach().reshape(-1))
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


#: elements a chunk of the statistics of a big CPU tensor holds (its float64 copy: 8 MB)
CHUNK = 1 << 20


def _chunked_stats(flat: torch.Tensor) -> Stats:
    """``compute_stats`` exactly, one ``CHUNK`` at a time: no float64 copy of the whole tensor
    (a 1e8-element tensor took +860 MB); mean and std merged per chunk (Chan et al.)."""
    numel = flat.numel()
    zeros = nan = inf = 0
    mn = mx = None
    n_f, mean, m2 = 0, 0.0, 0.0
    is_float = flat.is_floating_point()
    with torch.no_grad():
        for start in range(0, numel, CHUNK):
            x = flat[start : start + CHUNK]
            if x.dtype == torch.bool:
                x = x.to(torch.uint8)
            zeros += int((x == 0).sum())
            if is_float:
                fin = torch.isfinite(x)
                bad = x.numel() - int(fin.sum())
                if bad:
                    nan += int(torch.isnan(x).sum())
                    inf += bad - int(torch.isnan(x).sum())
                    x = x[fin]
                if x.numel() == 0:
                    continue
            f = x.to(torch.float64)
            cmin, cmax = f.min().item(), f.max().item()
            mn = cmin if mn is None else min(mn, cmin)
            mx = cmax if mx is None else max(mx, cmax)
            k = f.numel()
            cmean = f.mean().item()
            cm2 = float(((f - cmean) ** 2).sum())
            delta = cmean - mean
            tot = n_f + k
            mean += delta * k / tot
            m2 += cm2 + delta * delta * n_f * k / tot
            n_f = tot
    if mn is None:
        return Stats(nan=nan, inf=inf, zeros=zeros, numel=numel)
    std = (m2 / (n_f - 1)) ** 0.5 if n_f > 1 else 0.0
    if not is_float:
        mn, mx = int(mn), int(mx)
    return Stats(min=mn, max=mx, mean=mean, std=std, nan=nan, inf=inf, zeros=zeros, numel=numel)


def histogram(t: torch.Tensor, bins: int = 20) -> tuple[list[int], float, float] | None:
    """Counts of finite values in ``bins`` equal bins between min and max, or None (also for a
    tensor whose values cannot be counted: nested, a subclass that refuses)."""
    try:
        with torch._C.DisableTorchFunctionSubclass():
            return _histogram(t, bins)
    except Exception:  # noqa: BLE001 - a histogram is extra
        return None


def _histogram(t: torch.Tensor, bins: int) -> tuple[list[int], float, float] | None:
    if t.device.type == "meta" or t.numel() == 0 or t.layout != torch.strided or t.is_nested:
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
