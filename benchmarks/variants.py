"""The variants compared in one run: bare PyTorch, tensormagic's modes, and what people use today.

Each variant wraps a workload's callable into the callable that is timed.  Setup that is not
part of the variant's cost (loading the extension, opening the log) happens in ``before`` /
``after``, outside the timed region.  A variant that cannot run here says why in ``note`` and
is reported as n/a instead of failing the whole benchmark.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

Run = Callable[[], object]


@dataclass
class Variant:
    key: str
    title: str
    wrap: Callable[[Run], Run]
    note: str | None = None
    available: bool = True
    #: slow variants run on a workload this many times smaller, paired with a bare run of that size
    shrink: int = 1
    before: Callable[[], None] = lambda: None
    after: Callable[[], None] = lambda: None
    #: seconds of the last timed run spent at the block's end (building the Recording), if known
    end_seconds: Callable[[], float] | None = None


def _ctx(factory: Callable[[], Any], *, own: bool = False) -> Callable[[Run], Run]:
    """``with factory(): run()``; ``own``: a tensormagic block, which frees its own recording."""

    def wrap(run: Run) -> Run:
        def timed() -> object:
            with factory():
                r = run()
            if own:
                release_own_recording()
            return r

        return timed

    return wrap


def _same(run: Run) -> Run:
    return run


# -- what stays installed ------------------------------------------------------------------------
def installed_state() -> dict[str, Any]:
    """Everything global that a tracker could leave behind and that would slow torch down."""
    from torch.nn.modules import module as m
    from torch.overrides import _len_torch_function_stack

    state: dict[str, Any] = {
        "torch_function_modes": _len_torch_function_stack(),
        "torch_dispatch_modes": torch._C._len_torch_dispatch_stack(),
        "module_global_hooks": sum(
            len(getattr(m, name, {}))
            for name in ("_global_forward_pre_hooks", "_global_forward_hooks", "_global_backward_hooks",
                         "_global_backward_pre_hooks", "_global_forward_hooks_always_called")
        ),  # fmt: skip
        "sys_trace": sys.gettrace() is not None,
        "sys_profile": sys.getprofile() is not None,
        "anomaly_mode": torch.is_anomaly_enabled(),
        "tensor_repr": torch.Tensor.__repr__.__module__,
    }
    return state


class LoadedShell:
    """A real IPython shell with the extension loaded before and unloaded after each timed run."""

    def __init__(self) -> None:
        self.ip: Any = None
        self.note: str | None = None
        self.state_before = installed_state()
        self.state_loaded: dict[str, Any] | None = None
        self.state_after: dict[str, Any] | None = None
        self.shell_hooks_before: dict[str, int] = {}
        self.shell_hooks_after: dict[str, int] = {}
        self.checks_magic: bool | None = None
        try:
            from IPython.testing.globalipapp import start_ipython

            self.ip = start_ipython()
        except Exception as e:  # noqa: BLE001 - no IPython: fall back to importing the package
            self.note = f"no IPython shell ({type(e).__name__}); imported tensormagic only"
            import tensormagic.api  # noqa: F401 - importing is what "loaded" means without a shell

    def _hooks(self) -> dict[str, int]:
        if self.ip is None:
            return {}
        return {name: len(cbs) for name, cbs in self.ip.events.callbacks.items()}

    def load(self) -> None:
        if self.ip is None:
            return
        if not self.shell_hooks_before:
            self.shell_hooks_before = self._hooks()
        self.ip.extension_manager.load_extension("tensormagic")
        if self.state_loaded is None:
            self.state_loaded = installed_state()
            # prove the magics really are there while we measure
            self.checks_magic = "trackgrad" in self.ip.magics_manager.magics["cell"]

    def unload(self) -> None:
        if self.ip is None:
            return
        self.ip.extension_manager.unload_extension("tensormagic")
        self.state_after = installed_state()
        self.shell_hooks_after = self._hooks()

    def clean(self) -> bool:
        """Nothing torch-global while loaded, and nothing at all left after unloading."""
        ok = self.state_loaded in (None, self.state_before)
        if self.state_after is not None:
            ok = ok and self.state_after == self.state_before and self.shell_hooks_after == self.shell_hooks_before
        return ok


# -- tensormagic variants ------------------------------------------------------------------------
def release_own_recording() -> None:
    """Free the block's own recording now, inside its own timed run.

    ``track`` keeps the last recording (for ``%tensorinfo``) until the next block ends, which then
    frees it.  In a notebook that is the previous cell's, of a similar size.  Here the next
    tensormagic block is another variant's, and the rotation puts the same one after each (the
    ``track()`` run freed the logged recording, whose events the log had built: ~3 ms on W1, an
    unbuilt one ~1 ms).  So every tensormagic variant pays for freeing its own."""
    from tensormagic import api

    api._last.clear()


def _track(**kw: Any) -> Callable[[], Any]:
    import tensormagic

    def factory() -> Any:
        return tensormagic.track(**kw)

    return factory


def log_support() -> str | None:
    """None if ``track(log=...)`` writes a log here, else why not."""
    try:
        import tensormagic

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "probe.jsonl"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with tensormagic.track(log=str(path)):
                    torch.ones(2) + 1
            with contextlib.suppress(Exception):
                from tensormagic.log import writer as logfile

                logfile.close_all()
            if not path.exists() or path.stat().st_size == 0:
                return "n/a (log not available)"
    except Exception as e:  # noqa: BLE001 - a missing feature is reported, not fatal
        return f"n/a (log not available: {type(e).__name__})"
    return None


class LogTarget:
    """A fresh log file per timed run, so every run pays for writing the same amount."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tm-bench-log-")
        self.n = 0
        self.path = ""

    def before(self) -> None:
        self.n += 1
        self.path = os.path.join(self.dir, f"run{self.n}.jsonl")

    def after(self) -> None:
        with contextlib.suppress(Exception):
            from tensormagic.log import writer as logfile

            logfile.close_all()
        with contextlib.suppress(OSError):
            os.remove(self.path)

    def wrap(self, run: Run) -> Run:
        import tensormagic

        def timed() -> object:
            with tensormagic.track(log=self.path):
                r = run()
            release_own_recording()
            return r

        return timed


class SplitTrack:
    """``with track(): run()``, also noting how long the block's end (building the Recording) took."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.last_end = 0.0

    def wrap(self, run: Run) -> Run:
        import tensormagic

        def timed() -> object:
            with tensormagic.track():
                r = run()
                t_body = self.now()
            self.last_end = self.now() - t_body
            release_own_recording()
            return r

        return timed


# -- what people use today -----------------------------------------------------------------------
def _profiler(cuda: bool) -> Callable[[], Any]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        acts.append(torch.profiler.ProfilerActivity.CUDA)

    def factory() -> Any:
        return torch.profiler.profile(record_shapes=True, activities=acts)

    return factory


@contextlib.contextmanager
def _anomaly() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns on every enter that it slows things down
        with torch.autograd.detect_anomaly():
            yield


def snooper_variant() -> Variant:
    """TorchSnooper traces every line of the workload function (written to a null stream)."""
    try:
        import torchsnooper
    except Exception as e:  # noqa: BLE001 - it fails to import on setuptools>=81 (pkg_resources)
        return Variant("snooper", "TorchSnooper", _same, available=False,
                       note=f"skipped: torchsnooper not importable ({type(e).__name__}); "
                            "see benchmarks/README.md for a throwaway venv with setuptools<81")  # fmt: skip

    sink = io.StringIO()

    def wrap(run: Run) -> Run:
        traced = torchsnooper.snoop(output=sink)(run)

        def timed() -> object:
            sink.seek(0)
            sink.truncate()
            return traced()

        return timed

    return Variant("snooper", "TorchSnooper", wrap, shrink=10,
                   note="snoop() on the workload function (depth 1), output to a null stream; "
                        "measured on a 10x shorter loop, paired with a bare run of that length")  # fmt: skip


def make_variants(*, cuda: bool, shell: LoadedShell | None, smoke: bool = False,
                  now: Callable[[], float] = time.perf_counter) -> list[Variant]:  # fmt: skip
    out = [Variant("bare", "bare PyTorch", _same)]
    if shell is not None:
        out.append(Variant("loaded", "extension loaded, not tracking", _same, note=shell.note,
                           before=shell.load, after=shell.unload))  # fmt: skip
    split = SplitTrack(now)
    from tensormagic.engine.mode import default_engine

    engine = default_engine()
    out.append(Variant("track", "track()", split.wrap, end_seconds=lambda: split.last_end,
                       note=f"engine {engine!r}: " + ("the compiled hot path" if engine == "c" else
                                                      "the compiled hot path was not built here")))  # fmt: skip
    out.append(Variant("nodiag", "track(diagnostics=None)", _ctx(_track(diagnostics=None), own=True),
                       note="default tracking without the diagnostics (issue 7) on top"))  # fmt: skip
    out.append(Variant("python", "track(engine='python')", _ctx(_track(engine="python"), own=True),
                       note="the pure-Python hot path (what installs without a C compiler get)"))  # fmt: skip
    out.append(Variant("stats", "track(stats=True)", _ctx(_track(stats=True), own=True),
                       note="synchronises the GPU by design" if cuda else None))  # fmt: skip
    why = log_support()
    if why is None:
        target = LogTarget()
        out.append(Variant("log", "track(log=file)", target.wrap, before=target.before, after=target.after))
    else:
        out.append(Variant("log", "track(log=file)", _same, available=False, note=why))
    out.append(Variant("profiler", "torch.profiler(record_shapes)", _ctx(_profiler(cuda))))
    out.append(Variant("anomaly", "detect_anomaly()", _ctx(_anomaly)))
    snoop = snooper_variant()
    if smoke and snoop.available:
        snoop.shrink = 1
    out.append(snoop)
    return out
