"""The measures that are not timing ratios: heap per event, tensors kept alive, panel build time,
log ``summary`` time and memory, and the CUDA no-synchronisation proof.

Each returns a plain dict for the JSON; a part of tensormagic that does not exist yet gives
``{"na": "<why>"}`` rather than an exception.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import os
import tempfile
import time
import tracemalloc
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn import functional as F
from workloads import make_w2, make_w3, make_w4

REPO = Path(__file__).resolve().parent.parent


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


# -- memory ----------------------------------------------------------------------------------------
def _tensor_objects() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _w2_with_refs(scale: float, refs: list[weakref.ref[torch.Tensor]]) -> Callable[[], object]:
    """The W2 loop with every layer called by hand, so that the benchmark holds a weak reference to
    each tensor the user's code makes or owns: inputs, every intermediate, loss, parameters, gradients."""
    from workloads import _mlp, _n

    steps = _n(200, scale)
    gen = torch.Generator(device="cpu").manual_seed(0)
    model = _mlp("cpu", inplace=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 784, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    refs.extend(weakref.ref(t) for t in (x, y, *model.parameters()))

    def run() -> object:
        loss = None
        for _ in range(steps):
            opt.zero_grad()
            h = model[0](x)
            a = model[1](h)
            out = model[2](a)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            refs.extend(weakref.ref(t) for t in (h, a, out, loss))
            refs.extend(weakref.ref(p.grad) for p in model.parameters() if p.grad is not None)
        return loss

    return run


def _read_every_view(rec: Any) -> None:
    """Build everything a Recording builds lazily, as a person looking at it would: a view that
    kept a tensor alive must be built before the count, or the count cannot see it (issue 25)."""
    rec.events, rec.folds, rec.graphs  # noqa: B018 - reading builds them
    for t in list(rec.tensors.values()):
        t.tensor()
    rec.final_refs()
    rec.results()
    rec.top_results()
    rec.counts()
    rec.to_text()
    rec.to_html()
    rec.summary_line()
    for name in list(rec.final_refs())[:50]:
        with contextlib.suppress(Exception):  # a name without a graph is not what is measured here
            rec.grad_graph(name)


def _user_cell(scale: float, refs: list[weakref.ref[torch.Tensor]]) -> Any:
    """The user's code: a tracked W2 loop whose objects die when this frame ends; every lazily built
    view of the recording is read while they are still alive (a view holding its tensor strongly is
    only caught so).  A function's frame, not a ``del``: tracking reads ``frame.f_locals``, and on
    CPython < 3.13 that snapshot keeps a deleted local alive until the frame ends."""
    import tensormagic

    run = _w2_with_refs(scale, refs)
    with tensormagic.track() as rec:
        run()
    _read_every_view(rec)
    return rec


def _leak_check(scale: float) -> tuple[int, int]:
    """Tensors of a tracked W2 loop still alive once the user's objects are gone: (watched, alive),
    counted with the benchmark's own weak references, the recording still held (issue 25)."""
    refs: list[weakref.ref[torch.Tensor]] = []
    rec = _user_cell(scale, refs)
    gc.collect()
    alive = sum(1 for r in refs if r() is not None)
    del rec
    return len(refs), alive


def memory(scale: float) -> dict[str, Any]:
    """Python heap a W2 recording keeps per event, and whether any user tensor outlives its user."""
    import tensormagic

    def retained(tracked: bool) -> tuple[int, int, Any]:
        run = make_w2("cpu", scale)  # a fresh model: the user's objects die with this frame
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        rec = None
        if tracked:
            with tensormagic.track() as rec:
                run()
        else:
            run()
        del run
        gc.collect()
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return now - base, peak - base, rec

    with tensormagic.track():  # first use: imports and per-function caches are not per-event memory
        make_w2("cpu", 0.01)()
    gc.collect()
    tensors_before = _tensor_objects()
    bare_kept, bare_peak, _ = retained(False)
    kept, peak, rec = retained(True)
    n = len(rec.events)
    recorded = len(rec.tensors)
    del rec
    gc.collect()
    extra_tensors = _tensor_objects() - tensors_before
    watched, alive = _leak_check(scale)
    return {
        "scale": scale,
        "events": n,
        "heap_bytes": kept - bare_kept,
        "bytes_per_event": (kept - bare_kept) / max(n, 1),
        "peak_bytes_per_event": (peak - bare_peak) / max(n, 1),  # raw records + the build, at their peak
        "tensors_recorded": recorded,
        "tensors_watched": watched,
        "tensors_alive_after_user_dropped_them": alive,
        "tensor_objects_left": extra_tensors,
    }


# -- panel -----------------------------------------------------------------------------------------
def _big_recording(n_events: int) -> Any:
    import tensormagic

    x = torch.rand(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tensormagic.track(max_events=n_events) as rec:
            for _ in range(n_events // 2):
                x = x + 1.0
                x = x * 0.5
    return rec


def _panel_builder() -> Callable[[Any], Any] | None:
    """The panel module's entry point, by the names issue 5 may use for it."""
    mod = importlib.import_module("tensormagic.views.panel")
    for name in ("build_panel", "make_panel", "panel_for", "Panel", "InspectorPanel", "panel"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn
    return None


def panel(n_events: int) -> dict[str, Any]:
    if not _has_module("tensormagic.views.panel"):
        return {"na": "n/a (tensormagic/views/panel.py not present)"}
    try:
        build = _panel_builder()
        if build is None:
            return {"na": "n/a (no panel entry point found in tensormagic.views.panel)"}
        rec = _big_recording(n_events)
        times = []
        for _ in range(3):
            gc.collect()
            t0 = time.perf_counter()
            build(rec)
            times.append(time.perf_counter() - t0)
        return {"events": len(rec.events), "entry": getattr(build, "__name__", "?"), "seconds": min(times),
                "all_seconds": times}  # fmt: skip
    except Exception as e:  # noqa: BLE001 - an unfinished panel is reported, not fatal
        return {"na": f"n/a (panel failed: {type(e).__name__}: {e})"}


# -- log summary -----------------------------------------------------------------------------------
def log_summary(n_events: int) -> dict[str, Any]:
    """``summary`` over a synthetic log of real events, by the log issue's own ``log_scale.py``."""
    if not _has_module("tensormagic.log.writer") or not _has_module("tensormagic.log.reader"):
        return {"na": "n/a (tensormagic/log/ not present)"}
    try:
        import log_scale
    except ImportError as e:
        return {"na": f"n/a (benchmarks/log_scale.py not importable: {e})"}
    try:
        rec = log_scale.template()
        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="tm-bench-summary-") as d:
            for label, n in (("small", max(n_events // 10, 1)), ("big", n_events)):
                path = str(Path(d) / f"{label}.jsonl")
                w = log_scale.write_synthetic_log(path, n, per_cell=min(100_000, n), rec=rec)
                s = log_scale.run_summary(path)
                out[label] = {"events": w["events"], "log_bytes": os.path.getsize(path),
                              "seconds": s["summary_s"], "peak_rss": s["summary_peak_rss_mb"] * 2**20}  # fmt: skip
                os.remove(path)
        big, small = out["big"], out["small"]
        return {"events": big["events"], "log_bytes": big["log_bytes"], "seconds": big["seconds"],
                "peak_rss": big["peak_rss"], "small_events": small["events"], "small_seconds": small["seconds"],
                "small_peak_rss": small["peak_rss"]}  # fmt: skip
    except BaseException as e:  # noqa: BLE001 - log_scale exits on a failed summary; report, never crash
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"na": f"n/a (summary failed: {type(e).__name__}: {e})"}


# -- CUDA: no host-device synchronisation ------------------------------------------------------------
def cuda_sync_check(scale: float) -> dict[str, Any]:
    """Run the tracked CUDA workloads with synchronisation turned into an error."""
    if not torch.cuda.is_available():
        return {"na": "n/a (no CUDA device)"}
    import tensormagic

    out: dict[str, Any] = {}
    for key, make in (("W2", make_w2), ("W3", make_w3), ("W4", make_w4)):
        run = make("cuda", scale)
        run()  # warm-up outside the check: cuBLAS handles, allocator
        torch.cuda.synchronize()
        res: dict[str, Any] = {}
        for label, ctx in (("bare", None), ("track", lambda: tensormagic.track(stats=False))):
            torch.cuda.set_sync_debug_mode("error")
            try:
                if ctx is None:
                    run()
                else:
                    with ctx() as rec:
                        run()
                    res["events"] = len(rec.events)
                res[label] = "no sync"
            except RuntimeError as e:
                res[label] = f"SYNC: {str(e).splitlines()[0][:200]}"
            finally:
                torch.cuda.set_sync_debug_mode(0)
            torch.cuda.synchronize()
        out[key] = res
    out["ok"] = all(v.get("track") == "no sync" for v in out.values() if isinstance(v, dict))
    return out
