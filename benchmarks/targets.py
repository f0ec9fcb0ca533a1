"""The targets and the verdicts: which measure each row is judged on, and the table that says so.

Ratios are judged on the steady measure (``verdict`` run: process CPU time, one thread, at least
25 paired repetitions in a full run); the wall-time tables are for people.  docs/performance.md
is where the targets are explained; the numbers here are the same ones.
"""

from __future__ import annotations

import statistics
from typing import Any

#: track() with default settings, compiled engine: (must, moonshot); issue 4, 24 and 20 (C1)
RATIO_TARGETS: dict[str, tuple[float, float | None]] = {
    "W1": (2.5, 2.0),
    "W1b": (2.5, 2.0),
    "W2": (1.35, 1.25),
    "W3": (1.02, 1.00),
    "W4": (1.5, 1.35),
    "R1": (1.8, 1.4),
    "R2": (1.3, 1.15),
    "R3": (1.6, 1.3),
    "R4": (2.5, 2.0),
    "C1": (1.10, None),
}
LOADED_TOLERANCE = 0.03  # "loaded, not tracking": every row's median within 1.00 +- this (issue 25)
LOG_OVER_TRACK = 1.10
BYTES_PER_EVENT = 400
PANEL_S = 0.3  # issue 23
SUMMARY_S = 5.0
W5_RATIO = 1.5  # issue 23: a %trackgrad on cell over the same cell untracked
# issue 21: 2,000,000 tiny ops with a log, and tensor_info of a 1e8-element tensor
BIG_RSS_MB = 100
BIG_LOG_MB = 50
BIG_SUMMARY_S = 2.0
INFO_S = 1.0
INFO_MB = 50

Row = tuple[str, str, str, "bool | None"]


def fmt_ratio(d: dict[str, Any]) -> str:
    if "median" not in d:
        return "n/a"
    return f"{d['median']:.2f} [{d['min']:.2f}-{d['max']:.2f}]"


def per_op_us(cell: dict[str, Any], ops: int | None) -> float | None:
    """Median over repetitions of (variant time - bare time of the same repetition) / ops, in microseconds."""
    if not ops or "seconds" not in cell:
        return None
    extra = [v - b for v, b in zip(cell["seconds"], cell["bare_seconds"])]
    return statistics.median(extra) / ops * 1e6


def bare_us(cell: dict[str, Any], ops: int | None) -> float | None:
    if not ops or "bare_seconds" not in cell:
        return None
    return statistics.median(cell["bare_seconds"]) / ops * 1e6


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def ratio_rows(judged: dict[str, Any], ops: dict[str, int]) -> list[dict[str, Any]]:
    """One row per workload with a target: track() and the Python engine, ratios and microseconds per op."""
    out = []
    wl = judged["workloads"]
    for key, (must, moon) in RATIO_TARGETS.items():
        cells = wl.get(key)
        if not cells:
            continue
        t, py = cells.get("track", {}), cells.get("python", {})
        n = ops.get(key)
        row = {"workload": key, "must": must, "moonshot": moon, "ops": n, "track": fmt_ratio(t),
               "python": fmt_ratio(py), "bare_us_per_op": bare_us(t, n), "track_us_per_op": per_op_us(t, n),
               "python_us_per_op": per_op_us(py, n), "note": t.get("error") or t.get("note")}  # fmt: skip
        row["ok"] = t["median"] <= must if "median" in t else None
        row["moonshot_met"] = (t["median"] <= moon) if moon is not None and "median" in t else None
        out.append(row)
    return out


def print_ratio_rows(rows: list[dict[str, Any]], label: str, reps: int) -> None:
    def us(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    print(f"\nVerdicts for track() (default settings), judged on {label}, {reps} paired repetition(s); "
          "us/op = extra time per torch call")  # fmt: skip
    head = (f"  {'row':<5}{'must / moonshot':<17}{'track() ratio':<20}{'bare us/op':>11}{'+us/op':>9}"
            f"   {'python engine':<20}{'+us/op':>8}  verdict")  # fmt: skip
    print(head)
    print("  " + "-" * (len(head) - 2))
    for r in rows:
        goal = f"<= {r['must']}x / {r['moonshot']}x" if r["moonshot"] is not None else f"<= {r['must']}x"
        v = verdict(r["ok"]) + (" (moonshot met)" if r["moonshot_met"] else "")
        print(f"  {r['workload']:<5}{goal:<17}{r['track']:<20}{us(r['bare_us_per_op']):>11}{us(r['track_us_per_op']):>9}"
              f"   {r['python']:<20}{us(r['python_us_per_op']):>8}  {v}")  # fmt: skip
    ops = ", ".join(f"{r['workload']} {r['ops']}" for r in rows if r["ops"])
    print(f"  torch calls per run (what a function mode sees): {ops}")


def loaded_row(judged: dict[str, Any], clean: bool | None) -> Row:
    """The extension loaded, not tracking: every row's median within the fixed tolerance, nothing left installed."""
    meds = {k: c["loaded"]["median"] for k, c in judged["workloads"].items() if "median" in c.get("loaded", {})}
    if not meds:
        return ("loaded, not tracking", "", "n/a (not measured)", None)
    worst = max(meds, key=lambda k: abs(meds[k] - 1.0))
    quiet = all(abs(m - 1.0) <= LOADED_TOLERANCE for m in meds.values())
    return ("loaded, not tracking", f"every median within 1.00 +- {LOADED_TOLERANCE}; nothing installed",
            f"furthest median {meds[worst]:.3f}x ({worst}); nothing left installed: {clean}",
            quiet and bool(clean))  # fmt: skip
