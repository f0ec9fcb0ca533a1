"""What tracking costs: ``python benchmarks/run.py`` prints a table of overhead ratios and writes JSON.

Every variant runs in this one process, interleaved with bare PyTorch (A B C … A B C …); each
ratio is paired with the bare run of the same repetition; cells show the median [min-max].
``--quick`` (under a minute), ``--smoke`` (seconds, for the test suite), ``--cuda`` (the GPU
workloads and the no-synchronisation proof).  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # run from a checkout without installing

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler variant's start/stop chatter
import extras  # noqa: E402
import torch  # noqa: E402 - after the path set-up above
from measure import Cell, measure_workload  # noqa: E402
from variants import LoadedShell, make_variants  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

#: issue 4's "must" targets for track() by workload, and the other rows
TARGETS = {"W1": 2.5, "W2": 1.35, "W3": 1.02, "W4": 1.5}
MOONSHOT = {"W1": 2.0, "W2": 1.25, "W3": 1.00, "W4": 1.35}
LOADED_NOISE = 1.03  # "1.00x within noise"
LOG_OVER_TRACK = 1.10
BYTES_PER_EVENT = 400
PANEL_S = 1.0
SUMMARY_S = 5.0

MODES = {
    #        scale  reps  panel events  log events
    "full": (1.0, 7, 100_000, 1_000_000),
    "quick": (0.1, 3, 100_000, 100_000),
    "smoke": (0.01, 1, 2_000, 5_000),
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_ratio(d: dict[str, Any]) -> str:
    if "median" not in d:
        return "n/a"
    return f"{d['median']:.2f} [{d['min']:.2f}-{d['max']:.2f}]"


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"


def run_matrix(device: str, threads: int | None, keys: list[str], scale: float, reps: int,
               shell: LoadedShell | None, only: set[str] | None, smoke: bool, clock: str) -> dict[str, Any]:  # fmt: skip
    if threads is not None:
        torch.set_num_threads(threads)
    now = time.process_time if clock == "cpu" and device == "cpu" else time.perf_counter
    variants = make_variants(cuda=device == "cuda", shell=shell, smoke=smoke, now=now)
    if only:
        variants = [v for v in variants if v.key == "bare" or v.key in only]
    label = f"{device.upper()}, {torch.get_num_threads()} thread(s)" if device == "cpu" else "CUDA"
    _log(f"== {label}: {', '.join(v.key for v in variants if v.available)}")
    table: dict[str, dict[str, Any]] = {}
    for key in keys:
        cells = measure_workload(WORKLOADS[key], variants, device=device, scale=scale, reps=reps, log=_log,
                                 clock=clock, collect=not smoke)  # fmt: skip
        table[key] = {k: c.summary() for k, c in cells.items()}
        table[key]["_log_over_track"] = _paired(cells, "log", "track")
    if clock == "cpu" and device == "cpu":
        label += ", CPU time"
    return {"label": label, "device": device, "threads": torch.get_num_threads(),
            "variants": [(v.key, v.title) for v in variants], "workloads": table}  # fmt: skip


def _paired(cells: dict[str, Cell], a: str, b: str) -> dict[str, Any]:
    ca, cb = cells.get(a), cells.get(b)
    if ca is None or cb is None or not ca.seconds or not cb.seconds:
        return {}
    r = [x / y for x, y in zip(ca.seconds, cb.seconds)]
    return {"median": statistics.median(r), "min": min(r), "max": max(r)}


def print_matrix(m: dict[str, Any], keys: list[str], reps: int) -> None:
    wl = m["workloads"]
    width = 34
    print(f"\n{m['label']} — ratio to bare PyTorch, median [min-max] of {reps} paired repetition(s)")
    head = f"{'variant':<{width}}" + "".join(f"{k + ' ' + WORKLOADS[k].title:>24}" for k in keys)
    print(head)
    print("-" * len(head))
    bare = "".join(f"{_fmt_s(statistics.median(wl[k]['bare'].get('seconds', [0]))):>24}" for k in keys)
    print(f"{'bare PyTorch (time)':<{width}}{bare}")
    notes: list[str] = []
    for vkey, title in m["variants"]:
        if vkey == "bare":
            continue
        cells = []
        for k in keys:
            d = wl[k].get(vkey, {})
            txt = _fmt_ratio(d)
            if d.get("error"):
                txt = "error"
            cells.append(f"{txt:>24}")
            for what in (d.get("note"), d.get("error")):
                if what and f"{title}: {what}" not in notes:
                    notes.append(f"{title}: {what}")
        print(f"{title:<{width}}" + "".join(cells))
        if vkey == "track":
            ends = [wl[k].get("track", {}).get("end") for k in keys]
            if any(ends):
                print(f"{'  of which at block end (build)':<{width}}"
                      + "".join(f"{('+' + _fmt_ratio(d)) if d else 'n/a':>24}" for d in ends))  # fmt: skip
    log_rows = [wl[k]["_log_over_track"] for k in keys]
    if any(log_rows):
        print(f"{'log file on, over track()':<{width}}" + "".join(f"{_fmt_ratio(d):>24}" for d in log_rows))
    targets = "".join(f"{'<= ' + str(TARGETS[k]) + 'x':>24}" for k in keys)
    print(f"{'target for track() (must)':<{width}}{targets}")
    for n in notes:
        print(f"  note — {n}")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def print_targets(runs: list[dict[str, Any]], ext: dict[str, Any], shell: LoadedShell | None) -> list[Any]:
    """The issue's target table against this run (single-thread CPU, or CUDA if that is all)."""
    ref = runs[0]
    wl = ref["workloads"]
    rows: list[tuple[str, str, str, bool | None]] = []
    for k in TARGETS:
        d = wl.get(k, {}).get("track", {})
        if "median" in d:
            rows.append((f"{k} track()", f"<= {TARGETS[k]}x (moonshot {MOONSHOT[k]}x)", _fmt_ratio(d),
                         d["median"] <= TARGETS[k]))  # fmt: skip
    loaded = [wl[k]["loaded"] for k in wl if "median" in wl[k].get("loaded", {})]
    if loaded:
        worst = max(d["median"] for d in loaded)
        # within noise: every workload's paired ratios straddle 1.00, or its median is within 3%
        quiet = all(d["min"] <= 1.0 <= d["max"] or abs(d["median"] - 1.0) <= LOADED_NOISE - 1 for d in loaded)
        clean = shell.clean() if shell is not None else None
        rows.append(("loaded, not tracking", "1.00x within noise; nothing installed",
                     f"worst median {worst:.2f}x, ranges straddle 1.00: {quiet}; nothing left installed: {clean}",
                     quiet and bool(clean)))  # fmt: skip
    lt = wl.get("W2", {}).get("_log_over_track", {})
    if lt:
        rows.append(("log file on (W2)", f"<= {LOG_OVER_TRACK}x of track()", _fmt_ratio(lt),
                     lt["median"] <= LOG_OVER_TRACK))  # fmt: skip
    scaled = " (scaled-down run: no verdict)"
    mem = ext.get("memory", {})
    if "bytes_per_event" in mem:
        # per event, a block's fixed costs weigh more on a shorter loop: the target is W2's own size
        full = mem.get("scale", 1.0) >= 1.0
        none_kept = mem["tensors_alive_after_user_dropped_them"] == 0  # at any size
        rows.append(("memory (W2)", f"<= {BYTES_PER_EVENT} B/event, 0 tensors kept",
                     f"{mem['bytes_per_event']:.0f} B/event kept (peak {mem.get('peak_bytes_per_event', 0):.0f}) "
                     f"over {mem['events']} events; "
                     f"{mem['tensors_alive_after_user_dropped_them']} of {mem['tensors_recorded']} tensors alive"
                     + ("" if full else " (scaled-down run: no verdict on B/event)"),
                     none_kept and mem["bytes_per_event"] <= BYTES_PER_EVENT if full
                     else (None if none_kept else False)))  # fmt: skip
    pan = ext.get("panel") or {"na": "n/a (not measured: --no-extras)"}
    rows.append(("panel, 100,000 events", f"opens < {PANEL_S} s",
                 pan.get("na") or f"{pan['seconds']:.3f} s for {pan['events']} events"
                 + (scaled if pan["events"] < 100_000 else ""),
                 None if "na" in pan or pan["events"] < 100_000 else pan["seconds"] < PANEL_S))  # fmt: skip
    log = ext.get("summary") or {"na": "n/a (not measured: --no-extras)"}
    rows.append(("1,000,000-event log: summary", f"< {SUMMARY_S} s, flat memory",
                 log.get("na") or (f"{log['seconds']:.2f} s for {log['events']} events, peak RSS "
                                   f"{log['peak_rss'] / 2**20:.0f} MiB ({log['small_peak_rss'] / 2**20:.0f} MiB "
                                   f"for {log['small_events']})" + (scaled if log["events"] < 1_000_000 else "")),
                 None if "na" in log or log["events"] < 1_000_000 else log["seconds"] < SUMMARY_S))  # fmt: skip
    print(f"\nTargets (issue 4), against {ref['label']}")
    for what, target, got, ok in rows:
        print(f"  {what:<30} {target:<42} {got}  [{_verdict(ok)}]")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smaller loops, 3 repetitions (under a minute)")
    g.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition: checks the harness only")
    p.add_argument("--cuda", action="store_true", help="the CUDA workloads W2-W4 and the no-sync proof")
    p.add_argument("--reps", type=int, help="repetitions (default by mode)")
    p.add_argument("--scale", type=float, help="loop-count scale (default by mode)")
    p.add_argument("--workloads", help="comma-separated subset of W1,W2,W3,W4")
    p.add_argument("--variants", help="comma-separated subset of variant keys (bare always runs)")
    p.add_argument("--threads", help="comma-separated torch thread counts (default: 1 and the default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default) or process CPU time (steadier on a shared machine)")
    p.add_argument("--no-extras", action="store_true", help="skip memory, panel and log-summary rows")
    p.add_argument("--json", type=Path, default=HERE / "results" / "latest.json", help="where to write the JSON")
    args = p.parse_args(argv)

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    scale, reps, panel_events, log_events = MODES[mode]
    scale = args.scale if args.scale is not None else scale
    reps = args.reps if args.reps is not None else reps
    only = set(args.variants.split(",")) if args.variants else None
    warnings.simplefilter("ignore")  # TrackingWarning etc. must not flood the table
    t_start = time.perf_counter()
    default_threads = torch.get_num_threads()

    runs: list[dict[str, Any]] = []
    ext: dict[str, Any] = {}
    shell: LoadedShell | None = None
    if args.cuda:
        keys = args.workloads.split(",") if args.workloads else ["W2", "W3", "W4"]
        if not torch.cuda.is_available():
            print("--cuda: no CUDA device here; skipping the GPU benchmarks.")
            return 0
        runs.append(run_matrix("cuda", None, keys, scale, reps, None, only, args.smoke, "wall"))
        ext["cuda_sync"] = extras.cuda_sync_check(scale)
    else:
        keys = args.workloads.split(",") if args.workloads else list(WORKLOADS)
        threads = [int(t) for t in args.threads.split(",")] if args.threads else [1, default_threads]
        if args.smoke and not args.threads:
            threads = [1]
        shell = LoadedShell() if only is None or "loaded" in only else None
        for n in dict.fromkeys(threads):
            runs.append(run_matrix("cpu", n, keys, scale, reps, shell, only, args.smoke, args.clock))
        torch.set_num_threads(1)
        if not args.no_extras:
            _log("== extras: memory, panel, log summary")
            ext["memory"] = extras.memory(max(scale, 0.05))
            ext["panel"] = extras.panel(panel_events)
            ext["summary"] = extras.log_summary(log_events)
        torch.set_num_threads(default_threads)

    for m in runs:
        print_matrix(m, keys, reps)
    if shell is not None and shell.ip is None:
        print(f"\nextension loaded: {shell.note}")
    elif shell is not None:
        print(f"\nextension loaded into a real IPython shell; torch state while loaded == before: "
              f"{shell.state_loaded in (None, shell.state_before)}; after unload == before: "
              f"{shell.state_after == shell.state_before and shell.shell_hooks_after == shell.shell_hooks_before}")
    if "cuda_sync" in ext:
        print("\nCUDA, tracked under torch.cuda.set_sync_debug_mode('error') with stats off:")
        for k, v in ext["cuda_sync"].items():
            print(f"  {k}: {v}")
    rows = print_targets(runs, ext, shell) if runs and not args.cuda else []

    elapsed = time.perf_counter() - t_start
    meta = {"mode": mode, "scale": scale, "reps": reps, "clock": args.clock, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "default_threads": default_threads, "seconds": elapsed,
            "gpu": torch.cuda.get_device_name() if args.cuda and torch.cuda.is_available() else None,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    if shell is not None:
        meta["installed_state"] = {"before": shell.state_before, "loaded": shell.state_loaded,
                                   "after_unload": shell.state_after, "clean": shell.clean()}  # fmt: skip
    out = {"meta": meta, "runs": runs, "extras": ext,
           "targets": [{"measure": a, "target": b, "result": c, "ok": d} for a, b, c, d in rows]}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))
    print(f"\n{mode} run took {elapsed:.0f} s; JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
