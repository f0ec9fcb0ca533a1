"""Value statistics, safe for every kind of tensor, computed on the tensor's own device."""

from __future__ import annotations

from typing import Iterator

import torch

from ..model.events import Stats


def compute_stats(t: torch.Tensor) -> Stats:
    """min, max, mean, std and NaN/Inf/zero counts; reductions run on the device and only the
    few scalars travel to the host (this synchronises a GPU: callers decide when).  A subclass's
    ``__torch_function__`` does not run; a tensor whose values cannot be summarised (nested,
    a subclass that refuses) gets a note saying why."""
    try:
        with torch._C.DisableTorchFunction():
            return _stats(t)
    except Exception as e:  # noqa: BLE001 - statistics are extra: say why there are none
        return Stats(numel=_numel(t), note=f"no statistics: {e}".split("\n")[0])


def _numel(t: torch.Tensor) -> int:
    try:
        with torch._C.DisableTorchFunction():
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
    if numel > CHUNK and t.device.type == "cpu" and not t.is_complex():
        return _chunked_stats(t.detach())
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
    """Counts of finite values in ``bins`` equal bins between min and max, or None (also for a
    tensor whose values cannot be counted: nested, a subclass that refuses)."""
    try:
        with torch._C.DisableTorchFunction():
            return _histogram(t, bins)
    except Exception:  # noqa: BLE001 - a histogram is extra
        return None


#: elements a chunk of the statistics of a big CPU tensor holds (its float64 copy: 8 MB)
CHUNK = 1 << 20


def chunks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """``t``'s elements as flat pieces of at most ``CHUNK`` (a strided tensor is cut along its
    first dimension: only a piece is ever copied)."""
    if t.is_contiguous() or t.dim() == 0:
        flat = t.reshape(-1)
        for start in range(0, flat.numel(), CHUNK):
            yield flat[start : start + CHUNK]
        return
    per_row = t.numel() // t.shape[0] if t.shape[0] else 0
    if per_row == 0:
        return
    if per_row > CHUNK:
        for i in range(t.shape[0]):
            yield from chunks(t[i])
        return
    rows = CHUNK // per_row
    for i in range(0, t.shape[0], rows):
        yield t[i : i + rows].reshape(-1)


def _chunked_stats(t: torch.Tensor) -> Stats:
    """``compute_stats``, one ``CHUNK`` at a time: no copy of the whole tensor (a 1e8-element
    tensor took +860 MB).  Min, max and the counts are exact; mean and std are merged from each
    chunk's (Chan et al.), each chunk reduced in the dtype ``compute_stats`` reduces it in."""
    numel = t.numel()
    zeros = nan = inf = 0
    mn = mx = None
    n_f, mean, m2 = 0, 0.0, 0.0
    is_float = t.is_floating_point()
    wide = t.dtype in (torch.float16, torch.bfloat16) or not is_float  # reduced in float64, as before
    with torch.no_grad():
        for x in chunks(t):
            if x.dtype == torch.bool:
                x = x.to(torch.uint8)
            zeros += x.numel() - int(torch.count_nonzero(x))
            lo, hi = torch.aminmax(x)
            if is_float and not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
                # NaN or Inf in this chunk (min/max carry a NaN): count them, reduce the rest
                n_nan = int(torch.isnan(x).sum())
                nan += n_nan
                inf += int(torch.isinf(x).sum())
                x = x[torch.isfinite(x)]
                if x.numel() == 0:
                    continue
                lo, hi = torch.aminmax(x)
            cmin, cmax = lo.item(), hi.item()
            mn = cmin if mn is None else min(mn, cmin)
            mx = cmax if mx is None else max(mx, cmax)
            f = x.to(torch.float64) if wide else x
            k = f.numel()
            var, cmean_t = torch.var_mean(f, correction=0)
            cmean, cm2 = float(cmean_t), float(var) * k
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


def _histogram(t: torch.Tensor, bins: int) -> tuple[list[int], float, float] | None:
    """A big CPU tensor is read one ``CHUNK`` at a time, as ``compute_stats`` reads it: no
    whole-tensor copy."""
    if t.device.type == "meta" or t.numel() == 0 or t.layout != torch.strided or t.is_nested:
        return None
    with torch.no_grad():
        x = t.detach()
        if x.is_complex():
            x = x.abs()
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        pieces = list(chunks(x)) if x.device.type == "cpu" and x.numel() > CHUNK else [x]
        lo = hi = None
        n = 0
        for p in pieces:
            p = _finite(p)
            if p.numel():
                n += p.numel()
                a, b = (float(v) for v in torch.aminmax(p))
                lo, hi = (a, b) if lo is None else (min(lo, a), max(hi, b))  # type: ignore[type-var]
        if lo is None or hi is None:
            return None
        if lo == hi:
            return [n], lo, hi
        counts = torch.zeros(bins, dtype=torch.float64)
        for p in pieces:
            p = _finite(p)
            if p.numel():
                counts += torch.histc(p.to(torch.float64), bins=bins, min=lo, max=hi).to(device="cpu")
        return [int(c) for c in counts.tolist()], lo, hi


def _finite(x: torch.Tensor) -> torch.Tensor:
    """``x`` without its NaN and Inf (itself when it has none: no copy)."""
    if not x.is_floating_point():
        return x
    lo, hi = torch.aminmax(x)
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        return x
    return x[torch.isfinite(x)]
