"""Issue 21's rows: memory and logs bounded at scale, and ``tensor_info`` of a big tensor.

    python benchmarks/bounds.py --ops 2000000        # one worker: a long logged block
    python benchmarks/bounds.py --info 100000000     # one worker: tensor_info and %tensorinfo

``run.py`` starts each as a subprocess (so RSS is the worker's own) and reads the JSON it prints
on its last line.  The long block is W1's two tiny ops repeated (``x = x + 1.0; x = x * 0.5``)
under ``track(log=...)`` with default settings; "RSS growth" is the resident memory the process
holds after the block, with its recording still held as a notebook holds the last one, over the
resident memory before it; the peak during the block is reported beside it.  The big-tensor
worker resets the kernel's peak-RSS mark (``/proc/self/clear_refs``) before each call, so "extra"
is what the call itself needed above the tensor it was given.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def long_block(ops: int) -> dict[str, Any]:
    """``ops`` tiny ops in one logged block: retained RSS, peak RSS, block end, log size, ``summary`` time."""
    import torch

    import tensormagic
    from tensormagic.log import writer

    warnings.simplefilter("ignore")
    x0 = torch.rand(16)
    with tensormagic.track():  # imports and per-function caches are not what is measured
        (x0 + 1.0) * 0.5
    d = tempfile.mkdtemp(prefix="tm-bench-bounds-")
    path = os.path.join(d, "long.jsonl")
    reset = _reset_peak()
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with tensormagic.track(log=path) as rec:
        x = x0
        for _ in range(ops // 2):
            x = x + 1.0
            x = x * 0.5
        t_body = time.perf_counter()
    t_end = time.perf_counter()
    writer.close_all()
    rss1 = _status_kb("VmRSS")
    peak = _status_kb("VmHWM")
    t_sum = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tensormagic", "summary", path], capture_output=True, text=True,
                          cwd=REPO, timeout=600)  # fmt: skip
    summary_s = time.perf_counter() - t_sum
    out = {"ops": ops, "events_kept": len(rec.events), "body_s": t_body - t0, "block_end_s": t_end - t_body,
           "rss_growth_mb": (rss1 - rss0) / 1024, "peak_growth_mb": (peak - rss0) / 1024 if reset else None,
           "log_mb": os.path.getsize(path) / 2**20, "summary_s": summary_s, "summary_rc": proc.returncode,
           "summary_err": proc.stderr[-300:] if proc.returncode else None}  # fmt: skip
    os.remove(path)
    os.rmdir(d)
    return out


def big_info(numel: int) -> dict[str, Any]:
    """``tensor_info`` and ``%tensorinfo`` (a real IPython shell) of one float32 tensor of ``numel`` elements."""
    import torch

    import tensormagic

    warnings.simplefilter("ignore")
    tensormagic.tensor_info(torch.rand(1000))  # imports outside the measure
    t = torch.rand(numel)
    out: dict[str, Any] = {"numel": numel, "tensor_mb": t.element_size() * numel / 2**20}

    def measured(fn: Any) -> tuple[float, float | None]:
        reset = _reset_peak()
        rss0 = _status_kb("VmRSS")
        t0 = time.perf_counter()
        fn()
        s = time.perf_counter() - t0
        return s, ((_status_kb("VmHWM") - rss0) / 1024 if reset else None)

    out["tensor_info_s"], out["tensor_info_extra_mb"] = measured(lambda: tensormagic.tensor_info(t, "t"))
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.extension_manager.load_extension("tensormagic")
    ip.user_ns["t"] = t
    sink = io.StringIO()
    with redirect_stdout(sink), redirect_stderr(sink):
        ip.run_cell("%tensorinfo t", store_history=False)  # the magic's own first-use imports
        out["magic_s"], out["magic_extra_mb"] = measured(lambda: ip.run_cell("%tensorinfo t", store_history=False))
    out["magic_output_chars"] = len(sink.getvalue())
    ip.extension_manager.unload_extension("tensormagic")
    return out


def run_worker(args: list[str], timeout: float) -> dict[str, Any]:
    """Run this file as a subprocess and return its JSON, or ``{"na": why}``."""
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"na": f"n/a (worker took over {timeout:.0f} s)"}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"na": f"n/a (worker failed, rc {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]} )"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ops", type=int, help="tiny ops in one logged block")
    g.add_argument("--info", type=int, help="elements of the float32 tensor given to tensor_info")
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    res = long_block(a.ops) if a.ops else big_info(a.info)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
