"""W5 (issue 23): a 10-step small-MLP training cell under ``%trackgrad on`` in a real IPython shell.

The same cell runs through ``InteractiveShell.run_cell`` with the extension loaded, tracking off
and on, interleaved (the order alternates every repetition); each tracked time is divided by the
untracked time of the same repetition.  ``%trackgrad on``/``off`` run outside the timed region;
everything the shell does for the cell (compiling it, the hooks, the report it prints) is inside.
Output goes to a sink: a terminal would print the text report, which the tracked cell pays for.
"""

from __future__ import annotations

import gc
import io
import statistics
import time
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

SETUP = """\
import torch
from torch import nn
from torch.nn import functional as F
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
xb = torch.randn(32, 20)
yb = torch.randint(0, 2, (32,))
"""

CELL = """\
for step in range(10):
    opt.zero_grad()
    logits = model(xb)
    loss = F.cross_entropy(logits, yb)
    loss.backward()
    opt.step()
"""


def w5(shell: Any, reps: int) -> dict[str, Any]:
    """Paired ratios of the tracked cell over the untracked one: CPU time (the verdict) and wall time.

    ``shell`` is run.py's ``LoadedShell``: its load/unload record what stays installed, so the
    "nothing left installed" check covers this row too."""
    ip = getattr(shell, "ip", None)
    if ip is None:
        return {"na": "n/a (no IPython shell)"}
    sink = io.StringIO()
    shell.load()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            ip.run_cell(SETUP, store_history=False)

            def cell(tracked: bool) -> tuple[float, float]:
                if tracked:
                    ip.run_cell("%trackgrad on", store_history=False)
                gc.collect()
                w0, c0 = time.perf_counter(), time.process_time()
                res = ip.run_cell(CELL, store_history=True)
                w1, c1 = time.perf_counter(), time.process_time()
                if tracked:
                    ip.run_cell("%trackgrad off", store_history=False)
                if not res.success:
                    raise RuntimeError(f"the W5 cell failed: {res.error_in_exec or res.error_before_exec!r}")
                sink.seek(0)
                sink.truncate()
                return c1 - c0, w1 - w0

            cell(False), cell(True)  # warm-up: imports, the shell's caches, the first tracked cell
            cpu: list[float] = []
            wall: list[float] = []
            base: list[float] = []
            for rep in range(reps):
                order = (False, True) if rep % 2 == 0 else (True, False)
                got = {t: cell(t) for t in order}
                cpu.append(got[True][0] / got[False][0])
                wall.append(got[True][1] / got[False][1])
                base.append(got[False][1])
    except Exception as e:  # noqa: BLE001 - reported, never fatal to the table
        return {"na": f"n/a (W5 failed: {type(e).__name__}: {e})"}
    finally:
        shell.unload()
    return {"reps": reps, "cpu": _summ(cpu), "wall": _summ(wall), "untracked_wall_s": statistics.median(base)}


def _summ(r: list[float]) -> dict[str, float]:
    return {"median": statistics.median(r), "min": min(r), "max": max(r)}
