"""Log file at scale: bytes per event, write cost, and ``summary`` time and peak memory.

    python benchmarks/log_scale.py                 # 1,000,000 events (plain and gzip)
    python benchmarks/log_scale.py --events 100000 --json out.json

The log is made of real events: one tracked W4 run (MLP steps with an in-place ReLU, a dtype
move, backward) is replicated with fresh sequence numbers into cells of ``--per-cell`` events
and written through the real writer (``LogWriter.write``).  ``summary`` runs as a subprocess
(``python -m tensormagic summary``) so its time includes start-up and its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def template(steps: int = 10) -> Any:
    """A real recording: ``steps`` W4 training steps, tracked with default settings."""
    from workloads import make_w4

    import tensormagic

    run = make_w4("cpu", steps / 200)
    with tensormagic.track(max_events=10**7) as rec:
        run()
    return rec


def write_synthetic_log(path: str | os.PathLike[str], n_events: int, *, per_cell: int = 100_000,
                        rec: Any = None) -> dict[str, float]:  # fmt: skip
    """Write ``n_events`` real-looking events to ``path`` in cells of ``per_cell``; returns timings."""
    from tensormagic.log.writer import LogWriter

    rec = rec if rec is not None else template()
    base = rec.events
    w = LogWriter(path)
    written = 0
    write_s = 0.0
    cell = 0
    try:
        while written < n_events:
            n = min(per_cell, n_events - written)
            cell += 1
            span = base[-1].time_us or 1.0
            events = tuple(
                replace(
                    base[i % len(base)], seq=i, time_us=base[i % len(base)].time_us + (i // len(base)) * span
                )
                for i in range(n)
            )
            rec.events, rec.cell, rec.source = (
                events,
                cell,
                f"%%trackgrad\nfor step in range({n}):  # cell {cell}",
            )
            t = time.perf_counter()
            w.write(rec)
            write_s += time.perf_counter() - t
            written += n
    finally:
        w.close()
        rec.events = base
    return {
        "events": written,
        "cells": cell,
        "write_s": write_s,
        "write_us_per_event": write_s / written * 1e6,
    }


# The child reports its own peak RSS (VmHWM): ru_maxrss of a child also counts the parent's
# pages it was forked with, and this parent holds torch.
_SUMMARY = """import resource, sys
from tensormagic.cli import main
rc = main(["summary", sys.argv[1]])
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
ru = resource.getrusage(resource.RUSAGE_SELF)
sys.stderr.write("VmHWM_kB %s cpu_s %.3f\\n" % (hwm, ru.ru_utime + ru.ru_stime))
sys.exit(rc)
"""


def run_summary(path: str) -> dict[str, float]:
    """Wall time (start-up included) and peak RSS of the ``summary`` command (output discarded)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _SUMMARY, path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"summary failed with exit status {p.returncode}: {p.stderr.strip()}")
    fields = next(line.split() for line in p.stderr.splitlines() if line.startswith("VmHWM_kB"))
    # CPU time (start-up included) is the steadier figure where other work shares the cores
    return {
        "summary_s": wall,
        "summary_cpu_s": float(fields[3]),
        "summary_peak_rss_mb": int(fields[1]) / 1024,
    }


def write_overhead(steps: int = 200, reps: int = 5) -> dict[str, float]:
    """W2 (200 MLP steps) tracked without and with ``log=``, interleaved, plus the writer's own
    time on the same recording (the steadier figure on a busy machine)."""
    from workloads import make_w2

    import tensormagic
    from tensormagic.log.writer import LogWriter

    out: dict[str, list[float]] = {"track_s": [], "track_log_s": [], "write_s": []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(reps):
            for key, log in (("track_s", None), ("track_log_s", os.path.join(d, f"w2-{i}.jsonl"))):
                run = make_w2("cpu", steps / 200)
                t = time.perf_counter()
                with tensormagic.track(log=log) as rec:
                    run()
                out[key].append(time.perf_counter() - t)
            w = LogWriter(os.path.join(d, f"direct-{i}.jsonl"))
            t = time.perf_counter()
            w.write(rec)
            out["write_s"].append(time.perf_counter() - t)
        n, size = len(rec.events), os.path.getsize(os.path.join(d, f"direct-{reps - 1}.jsonl"))
    med = {k: sorted(v)[len(v) // 2] for k, v in out.items()}
    return {
        **med,
        "w2_events": n,
        "w2_bytes_per_event": size / n,
        "ratio_measured": med["track_log_s"] / med["track_s"],
        "ratio_from_write_time": (med["track_s"] + med["write_s"]) / med["track_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--per-cell", type=int, default=100_000)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--keep", help="folder to keep the generated logs in (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {"events": args.events}
    rec = template()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in (".jsonl", ".jsonl.gz"):
            path = str(folder / f"synthetic-{args.events}{suffix}")
            if os.path.exists(path):
                os.remove(path)
            w = write_synthetic_log(path, args.events, per_cell=args.per_cell, rec=rec)
            size = os.path.getsize(path)
            s = run_summary(path)
            results[suffix] = {**w, "bytes": size, "bytes_per_event": size / args.events, **s}
    results["write_overhead_w2"] = write_overhead()
    try:
        import orjson

        results["parser"] = f"orjson {orjson.__version__}"
    except ImportError:
        results["parser"] = "stdlib json"
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
