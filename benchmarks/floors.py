"""The floor of a function-mode tracker on a row: the same workload under modes that record nothing.

    python benchmarks/floors.py cpu W5 C1 --reps 25          # CPU time, interleaved, paired
    python benchmarks/floors.py callgrind W5 C1 --n 4        # instructions, one process per variant

Variants, each against the row's own untracked run ("bare": for W5 the cell with the extension
loaded and tracking off, as the W5 row measures it):
- ``noop``: a Python ``TorchFunctionMode`` whose ``__torch_function__`` only calls the function;
- ``cmode``: the compiled engine's mode (``make_mode(Tracker(), "c")``) with recording off
  (``make_inert``): torch's dispatch to the mode plus the compiled object's first test;
- ``track``: ``track()`` (W5: ``%trackgrad on``), what the row measures;
- on request: ``hooks`` (``cmode`` plus tensormagic's global module hooks, ``engine/modules.py``)
  and ``nodiag`` (``track(diagnostics=None)``; W5: ``%config TensorMagic.diagnostics = 'none'``).
For W5 the two floors are pushed and popped by ``pre_run_cell``/``post_run_cell`` callbacks, as
``%trackgrad on`` does.  No row's tracked ratio can go below its ``noop``/``cmode`` ratio while
tracking is a function mode: these say whether a row's line is reachable at all.

``callgrind`` runs each variant in its own ``valgrind --tool=callgrind --instr-atstart=no``
process: imports, warm-up and compiles uninstrumented, then two measured regions of N and 3N
cells/runs (``cgtoggle.region``); per cell/run = (3N region - N region) / 2N.  There torch runs
its AVX2 kernels (valgrind has no AVX-512) and inductor compiles for AVX2
(``ATEN_CPU_CAPABILITY``, ``TORCHINDUCTOR_CPP_MARCH``).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import torch  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

VARIANTS = ("bare", "noop", "cmode", "track")
#: breakdown rungs, on request (--variants): the compiled mode off plus tensormagic's global module
#: hooks (what module paths cost before anything is recorded); W5 with no diagnostics selected
EXTRA = ("hooks", "nodiag")


class Noop(TorchFunctionMode):
    """The cheapest function mode written in Python."""

    def __torch_function__(self, f: Any, t: Any, a: Any = (), k: Any = None) -> Any:
        return f(*a, **(k or {}))


def _inert_compiled_mode() -> TorchFunctionMode:
    from tensormagic.engine.mode import make_mode
    from tensormagic.engine.tracker import Tracker

    m = make_mode(Tracker(), "c")
    m.make_inert()
    return m


class _WithHooks:
    """The compiled mode off, with tensormagic's global module hooks following this thread."""

    def __init__(self) -> None:
        from tensormagic.engine.modules import ModuleStack

        self.mode, self.stack = _inert_compiled_mode(), ModuleStack()

    def __enter__(self) -> None:
        self.stack.__enter__()
        self.mode.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(None, None, None)
        self.stack.__exit__()


def _floors() -> dict[str, Any]:
    return {"noop": Noop(), "cmode": _inert_compiled_mode(), "hooks": _WithHooks()}


# -- W5: the %trackgrad on cell in a real shell -----------------------------------------------------------
class W5:
    """One cell of ``cells.CELL`` per call, under the variant chosen by ``use``."""

    def __init__(self) -> None:
        from cells import CELL, SETUP
        from IPython.testing.globalipapp import start_ipython

        self.cell = CELL
        self.ip = start_ipython()
        self.sink = io.StringIO()
        self.ip.extension_manager.load_extension("tensormagic")
        self._quiet(lambda: self.ip.run_cell(SETUP, store_history=False))
        self.modes = _floors()
        self.current: str = "bare"
        self._cbs: dict[str, list[tuple[str, Callable[..., None]]]] = {}

    def _quiet(self, fn: Callable[[], Any]) -> Any:
        with redirect_stdout(self.sink), redirect_stderr(self.sink):
            r = fn()
        self.sink.seek(0)
        self.sink.truncate()
        return r

    def use(self, variant: str) -> None:
        """Switch the shell to ``variant`` (outside any timed region)."""
        if variant == self.current:
            return
        if self.current in ("track", "nodiag"):
            self._quiet(lambda: self.ip.run_cell("%trackgrad off", store_history=False))
            self._quiet(lambda: self.ip.run_cell("%config TensorMagic.diagnostics = 'all'", store_history=False))
        elif self.current != "bare":
            for ev, cb in self._callbacks(self.current):
                self.ip.events.unregister(ev, cb)
        self.current = variant
        if variant in ("track", "nodiag"):
            if variant == "nodiag":
                self._quiet(lambda: self.ip.run_cell("%config TensorMagic.diagnostics = 'none'", store_history=False))
            self._quiet(lambda: self.ip.run_cell("%trackgrad on", store_history=False))
        elif variant != "bare":
            for ev, cb in self._callbacks(variant):
                self.ip.events.register(ev, cb)

    def _callbacks(self, variant: str) -> list[tuple[str, Callable[..., None]]]:
        if variant not in self._cbs:
            mode: Any = self.modes[variant]

            def pre(info: Any) -> None:
                mode.__enter__()

            def post(result: Any) -> None:
                mode.__exit__(None, None, None)

            self._cbs[variant] = [("pre_run_cell", pre), ("post_run_cell", post)]
        return self._cbs[variant]

    def __call__(self) -> None:
        res = self._quiet(lambda: self.ip.run_cell(self.cell, store_history=True))
        if not res.success:
            raise RuntimeError(f"the W5 cell failed: {res.error_in_exec or res.error_before_exec!r}")

    def ops(self) -> int:
        from measure import _CountingMode

        self.use("bare")
        m = _CountingMode()
        self.ip.events.register("pre_run_cell", lambda info: m.__enter__())
        self.ip.events.register("post_run_cell", lambda r: m.__exit__(None, None, None))
        try:
            self()
        finally:
            self.ip.events.callbacks["pre_run_cell"].pop()
            self.ip.events.callbacks["post_run_cell"].pop()
        return m.calls


# -- C1 (and any workloads.py row): one run of the row's callable per call -----------------------------
class Row:
    def __init__(self, key: str, scale: float) -> None:
        from workloads import WORKLOADS

        self.wl = WORKLOADS[key]
        self.run = self.wl.make("cpu", scale)
        self.scale = scale
        self.modes = _floors()
        self.current = "bare"

    def use(self, variant: str) -> None:
        self.current = variant

    def __call__(self) -> None:
        v = self.current
        if v == "bare":
            self.run()
        elif v in ("track", "nodiag"):
            from variants import release_own_recording

            import tensormagic

            with tensormagic.track(**({"diagnostics": None} if v == "nodiag" else {})):
                self.run()
            release_own_recording()
        else:
            with self.modes[v]:
                self.run()

    def ops(self) -> int:
        from measure import count_ops

        return count_ops(self.wl, "cpu", self.scale)


def make(key: str, scale: float) -> Any:
    return W5() if key == "W5" else Row(key, scale)


# -- CPU time ---------------------------------------------------------------------------------------
def cpu(key: str, reps: int, scale: float, variants: tuple[str, ...]) -> dict[str, Any]:
    w = make(key, scale)
    for v in variants:  # warm-up: compiles under each mode state, caches
        w.use(v)
        w()
        w()
    secs: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(reps):
        order = variants[rep % len(variants):] + variants[: rep % len(variants)]
        for v in order:
            w.use(v)
            w()  # the same variant once untimed right before: it pays for its own state only
            gc.collect()
            c0 = time.process_time()
            w()
            secs[v].append(time.process_time() - c0)
    w.use("bare")
    ops = w.ops()
    out: dict[str, Any] = {"key": key, "reps": reps, "ops": ops, "variants": {}}
    for v in variants:
        ratios = [t / b for t, b in zip(secs[v], secs["bare"])]
        extra = statistics.median(t - b for t, b in zip(secs[v], secs["bare"]))
        out["variants"][v] = {"median_ms": statistics.median(secs[v]) * 1e3, "ratio": statistics.median(ratios),
                              "min": min(ratios), "max": max(ratios), "extra_us_per_op": extra / ops * 1e6}  # fmt: skip
    return out


# -- callgrind ---------------------------------------------------------------------------------------
def child(key: str, variant: str, n: int, scale: float) -> None:
    """Runs inside valgrind: warm up, then regions of n and 3n calls."""
    from cgtoggle import region

    w = make(key, scale)
    w.use(variant)
    for _ in range(3):
        w()
    gc.collect()
    with region(f"{key}.{variant}.n"):
        for _ in range(n):
            w()
    gc.collect()
    with region(f"{key}.{variant}.3n"):
        for _ in range(3 * n):
            w()
    if variant == "bare":
        print(json.dumps({"ops": w.ops()}))


def callgrind(key: str, n: int, scale: float, variants: tuple[str, ...]) -> dict[str, Any]:
    from cgtoggle import totals

    out: dict[str, Any] = {"key": key, "n": n, "variants": {}}
    for v in variants:
        d = tempfile.mkdtemp(prefix="tm_cg_")
        prefix = os.path.join(d, "cg.out")
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={prefix}",
               sys.executable, __file__, "_child", key, v, str(n), "--scale", str(scale)]  # fmt: skip
        t0 = time.perf_counter()
        # valgrind 3.19 runs no AVX-512: inductor must compile for AVX2 there, into its own cache
        # (a kernel cached by a run outside valgrind may use AVX-512)
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "ATEN_CPU_CAPABILITY": "avx2",
               "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3",
               "TORCHINDUCTOR_CACHE_DIR": os.path.join(tempfile.gettempdir(), "tm_inductor_avx2")}  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{key} {v}: valgrind exit {p.returncode}\n{p.stderr[-3000:]}")
        got = totals(prefix)
        a, b = got[f"{key}.{v}.n"], got[f"{key}.{v}.3n"]
        out["variants"][v] = {"n_region": a, "3n_region": b, "per_call": (b - a) / (2 * n), "per_call_n": a / n,
                              "seconds": time.perf_counter() - t0}  # fmt: skip
        if v == "bare":
            out["ops"] = json.loads(p.stdout.strip().splitlines()[-1])["ops"]
        print(f"  {key} {v}: {out['variants'][v]['per_call']:,.0f} instructions per call "
              f"({out['variants'][v]['seconds']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    return out


def report(r: dict[str, Any], kind: str) -> None:
    vs = r["variants"]
    if kind == "cpu":
        print(f"\n{r['key']}: CPU time, median of {r['reps']} paired repetitions, {r['ops']} torch calls per run")
        print(f"  {'variant':<8}{'ms/run':>9}{'ratio':>8}{'[min-max]':>14}{'+us/op':>9}")
        for v, x in vs.items():
            rng = f"[{x['min']:.2f}-{x['max']:.2f}]"
            print(f"  {v:<8}{x['median_ms']:>9.2f}{x['ratio']:>8.2f}  {rng}{x['extra_us_per_op']:>9.2f}")
    else:
        ops = r.get("ops") or 0
        base = vs["bare"]["per_call"] if "bare" in vs else None
        print(f"\n{r['key']}: callgrind instructions per run ((3N - N regions) / 2N, N={r['n']}), {ops} torch calls per run")
        print(f"  {'variant':<8}{'per run':>14}{'ratio':>8}{'+per op':>10}{'N region/N':>14}")
        for v, x in vs.items():
            ratio = x["per_call"] / base if base else float("nan")
            extra = (x["per_call"] - base) / ops if base and ops else float("nan")
            print(f"  {v:<8}{x['per_call']:>14,.0f}{ratio:>8.3f}{extra:>10,.0f}{x['per_call_n']:>14,.0f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("how", choices=("cpu", "callgrind", "_child"))
    p.add_argument("args", nargs="+")
    p.add_argument("--reps", type=int, default=25)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if a.how == "_child":
        key, variant, n = a.args
        child(key, variant, int(n), a.scale)
        return 0
    variants = tuple(a.variants.split(","))
    if variants[0] != "bare":
        variants = ("bare", *(v for v in variants if v != "bare"))
    results = []
    for key in a.args:
        r = cpu(key, a.reps, a.scale, variants) if a.how == "cpu" else callgrind(key, a.n, a.scale, variants)
        report(r, a.how)
        results.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
