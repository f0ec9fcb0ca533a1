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
import bounds  # noqa: E402
import cells  # noqa: E402
import extras  # noqa: E402
import realcode  # noqa: E402
import targets as tg  # noqa: E402
import torch  # noqa: E402 - after the path set-up above
from measure import Cell, count_ops, measure_workload  # noqa: E402
from variants import LoadedShell, make_variants  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

#: the variants of the verdict run (process CPU time, one thread): bare, loaded, both engines
VERDICT_VARIANTS = {"loaded", "track", "python"}
#: what --quick runs unless --variants says otherwise
QUICK_VARIANTS = {"loaded", "track", "python", "log"}


class Mode:
    """Sizes by mode: loop scale, repetitions of the wall-time tables and of the verdict run, extras' sizes."""

    def __init__(self, scale: float, reps: int, verdict_reps: int, panel: int, log: int, big_ops: int,
                 info: int, w5_reps: int, c1_backend: str) -> None:  # fmt: skip
        self.scale, self.reps, self.verdict_reps = scale, reps, verdict_reps
        self.panel, self.log, self.big_ops, self.info, self.w5_reps = panel, log, big_ops, info, w5_reps
        self.c1_backend = c1_backend


MODES = {
    "full": Mode(1.0, 5, 25, 100_000, 1_000_000, 2_000_000, 100_000_000, 25, "inductor"),
    "quick": Mode(0.1, 3, 0, 100_000, 100_000, 100_000, 10_000_000, 3, "eager"),
    "smoke": Mode(0.01, 1, 0, 2_000, 5_000, 5_000, 100_000, 1, "eager"),
}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_fmt_ratio = tg.fmt_ratio


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
        wl = WORKLOADS[key]
        why = wl.missing()
        if why is not None:
            table[key] = {v.key: {"note": f"{key} not run: {why}"} for v in variants}
            _log(f"  {key}: not run ({why})")
            continue
        mine = [v for v in variants if v.key == "bare" or wl.variants is None or v.key in wl.variants]
        c0, w0 = time.process_time(), time.perf_counter()
        got = measure_workload(wl, mine, device=device, scale=scale, reps=reps, log=_log,
                               clock=clock, collect=not smoke)  # fmt: skip
        _log(f"  {key} took {time.perf_counter() - w0:.1f} s ({time.process_time() - c0:.1f} s CPU)")
        table[key] = {k: c.summary() for k, c in got.items()}
        table[key]["_log_over_track"] = _paired(got, "log", "track")
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


def print_matrix(m: dict[str, Any], keys: list[str], reps: int, per_block: int = 5) -> None:
    """The ratio table, ``per_block`` workloads side by side (a terminal's width)."""
    print(f"\n{m['label']} — ratio to bare PyTorch, median [min-max] of {reps} paired repetition(s)")
    for i in range(0, len(keys), per_block):
        _print_block(m, keys[i:i + per_block])


def _first_line(err: str | None, limit: int = 160) -> str | None:
    """An error's first line, cut: the table is for reading; the JSON keeps the whole message."""
    if not err:
        return None
    line = err.strip().splitlines()[0]
    return line if len(line) <= limit else line[:limit] + "…"


def _print_block(m: dict[str, Any], keys: list[str]) -> None:
    wl = m["workloads"]
    width = 34
    head = f"{'variant':<{width}}" + "".join(f"{k + ' ' + WORKLOADS[k].title:>24}" for k in keys)
    print()
    print(head)
    print("-" * len(head))
    secs = [wl[k]["bare"].get("seconds") for k in keys]
    bare = "".join(f"{_fmt_s(statistics.median(t)) if t else 'n/a':>24}" for t in secs)
    print(f"{'bare PyTorch (time)':<{width}}{bare}")
    notes: list[str] = []
    for vkey, title in m["variants"]:
        if vkey == "bare":
            continue
        row = []
        for k in keys:
            d = wl[k].get(vkey, {})
            txt = _fmt_ratio(d) if d else "-"
            if d.get("error"):
                txt = "error"
            row.append(f"{txt:>24}")
            for what in (d.get("note"), _first_line(d.get("error"))):
                if what and f"{title}: {what}" not in notes:
                    notes.append(f"{title}: {what}")
        print(f"{title:<{width}}" + "".join(row))
        if vkey == "track":
            ends = [wl[k].get("track", {}).get("end") for k in keys]
            if any(ends):
                print(f"{'  of which at block end (build)':<{width}}"
                      + "".join(f"{('+' + _fmt_ratio(d)) if d else 'n/a':>24}" for d in ends))  # fmt: skip
    log_rows = [wl[k].get("_log_over_track", {}) for k in keys]
    if any(log_rows):
        print(f"{'log file on, over track()':<{width}}" + "".join(f"{_fmt_ratio(d):>24}" for d in log_rows))
    goal = "".join(f"{('<= ' + str(tg.RATIO_TARGETS[k][0]) + 'x') if k in tg.RATIO_TARGETS else '':>24}" for k in keys)
    print(f"{'target for track() (must)':<{width}}{goal}")
    for n in notes:
        print(f"  note — {n}")
    if any(not wl[k].get(v) for k in keys for v, _ in m["variants"]):
        print("  ('-': that variant does not run on this workload)")


def _scaled(full: bool) -> str:
    return "" if full else " (scaled-down run: no verdict)"


def extra_rows(ext: dict[str, Any], judged: dict[str, Any]) -> list[tg.Row]:
    """The rows that are not ratio targets: log, memory, panel, summaries, W5, issue 21's bounds."""
    rows: list[tg.Row] = []
    lt = judged["workloads"].get("W2", {}).get("_log_over_track", {})
    if lt:
        rows.append(("log file on (W2)", f"<= {tg.LOG_OVER_TRACK}x of track()", _fmt_ratio(lt),
                     lt["median"] <= tg.LOG_OVER_TRACK))  # fmt: skip
    mem = ext.get("memory", {})
    if "bytes_per_event" in mem:
        # per event, a block's fixed costs weigh more on a shorter loop: the target is W2's own size
        full = mem.get("scale", 1.0) >= 1.0
        none_kept = mem["tensors_alive_after_user_dropped_them"] == 0  # at any size
        rows.append(("memory (W2)", f"<= {tg.BYTES_PER_EVENT} B/event, 0 tensors kept",
                     f"{mem['bytes_per_event']:.0f} B/event kept (peak {mem.get('peak_bytes_per_event', 0):.0f}) "
                     f"over {mem['events']} events; {mem['tensors_alive_after_user_dropped_them']} of "
                     f"{mem['tensors_watched']} tensors alive (the benchmark's weak refs, every view read)"
                     + ("" if full else " (scaled-down run: no verdict on B/event)"),
                     none_kept and mem["bytes_per_event"] <= tg.BYTES_PER_EVENT if full
                     else (None if none_kept else False)))  # fmt: skip
    pan = ext.get("panel") or {"na": "n/a (not measured: --no-extras)"}
    rows.append(("panel, 100,000 events", f"opens < {tg.PANEL_S} s",
                 pan.get("na") or f"{pan['seconds']:.3f} s for {pan['events']} events" + _scaled(pan["events"] >= 100_000),
                 None if "na" in pan or pan["events"] < 100_000 else pan["seconds"] < tg.PANEL_S))  # fmt: skip
    log = ext.get("summary") or {"na": "n/a (not measured: --no-extras)"}
    rows.append(("1,000,000-event log: summary", f"< {tg.SUMMARY_S} s, flat memory",
                 log.get("na") or (f"{log['seconds']:.2f} s for {log['events']} events, peak RSS "
                                   f"{log['peak_rss'] / 2**20:.0f} MiB ({log['small_peak_rss'] / 2**20:.0f} MiB "
                                   f"for {log['small_events']})" + _scaled(log["events"] >= 1_000_000)),
                 None if "na" in log or log["events"] < 1_000_000 else log["seconds"] < tg.SUMMARY_S))  # fmt: skip
    w5 = ext.get("w5") or {"na": "n/a (not measured: --no-extras)"}
    rows.append(("W5 %trackgrad on cell", f"<= {tg.W5_RATIO}x of the cell untracked",
                 w5.get("na") or (f"{_fmt_ratio(w5['cpu'])} CPU time, {_fmt_ratio(w5['wall'])} wall, "
                                  f"{w5['reps']} reps (untracked {w5['untracked_wall_s'] * 1e3:.1f} ms)"),
                 None if "na" in w5 else w5["cpu"]["median"] <= tg.W5_RATIO))  # fmt: skip
    big = ext.get("big_block") or {"na": "n/a (not measured: --no-extras)"}
    full = big.get("ops", 0) >= 2_000_000
    if "na" in big:
        rows.append(("2,000,000 ops, log=", "", big["na"], None))
    else:
        peak = big["peak_growth_mb"]
        rows.append(("2,000,000 ops, log=: RSS", f"growth <= {tg.BIG_RSS_MB} MB",
                     f"+{big['rss_growth_mb']:.0f} MB after the block (peak +{peak:.0f} MB) for {big['ops']} ops"
                     + _scaled(full), None if not full else big["rss_growth_mb"] <= tg.BIG_RSS_MB))  # fmt: skip
        rows.append(("2,000,000 ops, log=: log", f"<= {tg.BIG_LOG_MB} MB", f"{big['log_mb']:.1f} MB" + _scaled(full),
                     None if not full else big["log_mb"] <= tg.BIG_LOG_MB))  # fmt: skip
        ok_sum = big["summary_rc"] == 0 and big["summary_s"] < tg.BIG_SUMMARY_S
        rows.append(("2,000,000 ops, log=: summary", f"< {tg.BIG_SUMMARY_S} s",
                     f"{big['summary_s']:.2f} s" + ("" if big["summary_rc"] == 0 else f" (exit {big['summary_rc']})")
                     + _scaled(full), None if not full else ok_sum))  # fmt: skip
        rows.append(("2,000,000 ops, log=: block end", "reported",
                     f"{big['block_end_s']:.2f} s at block end after {big['body_s']:.1f} s of body; "
                     f"{big['events_kept']} events kept", None))  # fmt: skip
    info = ext.get("big_info") or {"na": "n/a (not measured: --no-extras)"}
    if "na" in info:
        rows.append(("tensor_info, 1e8 float32", "", info["na"], None))
    else:
        full = info["numel"] >= 100_000_000

        def mb(x: float | None) -> str:
            return "n/a" if x is None else f"+{x:.0f} MB"

        for what, s_key, mb_key in (("tensor_info", "tensor_info_s", "tensor_info_extra_mb"),
                                    ("%tensorinfo", "magic_s", "magic_extra_mb")):  # fmt: skip
            extra = info[mb_key]
            ok = info[s_key] <= tg.INFO_S and extra is not None and extra <= tg.INFO_MB
            rows.append((f"{what}, 1e8 float32", f"<= {tg.INFO_S} s, <= {tg.INFO_MB} MB extra",
                         f"{info[s_key]:.2f} s, {mb(extra)} peak over the tensor ({info['numel']:.0e} elements)"
                         + _scaled(full), ok if full else None))  # fmt: skip
    return rows


def print_targets(judged: dict[str, Any], reps: int, ops: dict[str, int], ext: dict[str, Any],
                  shell: LoadedShell | None, judge: bool) -> tuple[list[dict[str, Any]], list[tg.Row]]:  # fmt: skip
    """The verdicts: ratio rows (with microseconds per op), then every other target."""
    ratio = tg.ratio_rows(judged, ops)
    rows = [tg.loaded_row(judged, shell.clean() if shell is not None else None), *extra_rows(ext, judged)]
    if not judge:  # a smoke run checks the harness; its sizes say nothing about the targets
        for r in ratio:
            r["ok"] = r["moonshot_met"] = None
        rows = [(a, b, c, None) for a, b, c, _ in rows]
    tg.print_ratio_rows(ratio, judged["label"], reps)
    print("\nOther targets")
    for what, target, got, ok in rows:
        print(f"  {what:<30} {target:<42} {got}  [{tg.verdict(ok)}]")
    return ratio, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="smaller loops, 3 repetitions, 1 thread, the variants that have targets (under a minute)")
    g.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition: checks the harness only")
    p.add_argument("--cuda", action="store_true", help="the CUDA workloads W2-W4 and the no-sync proof")
    p.add_argument("--reps", type=int, help="repetitions of the wall-time tables (default by mode)")
    p.add_argument("--verdict-reps", type=int,
                   help="repetitions of the verdict run (CPU time, 1 thread; default 25 in a full run, "
                        "0 elsewhere: then the 1-thread table gives the verdicts)")  # fmt: skip
    p.add_argument("--scale", type=float, help="loop-count scale (default by mode)")
    p.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    p.add_argument("--variants", help="comma-separated subset of variant keys (bare always runs)")
    p.add_argument("--threads", help="comma-separated torch thread counts (default: 1 and the default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time (default) or process CPU time (steadier on a shared machine)")
    p.add_argument("--no-extras", action="store_true", help="skip memory, panel, log, W5 and bounds rows")
    p.add_argument("--json", type=Path, default=HERE / "results" / "latest.json", help="where to write the JSON")
    args = p.parse_args(argv)

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    md = MODES[mode]
    scale = args.scale if args.scale is not None else md.scale
    reps = args.reps if args.reps is not None else md.reps
    vreps = args.verdict_reps if args.verdict_reps is not None else md.verdict_reps
    realcode.C1_BACKEND = md.c1_backend
    only = set(args.variants.split(",")) if args.variants else None
    if only is None and mode == "quick":
        only = QUICK_VARIANTS  # the full table has every variant; --quick must stay under a minute
    warnings.simplefilter("ignore")  # TrackingWarning etc. must not flood the table
    t_start = time.perf_counter()
    default_threads = torch.get_num_threads()

    runs: list[dict[str, Any]] = []
    ext: dict[str, Any] = {}
    shell: LoadedShell | None = None
    judged: dict[str, Any] | None = None
    ops: dict[str, int] = {}
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
        if (args.smoke or args.quick) and not args.threads:
            threads = [1]  # the 2-thread table is the full run's: --quick must stay under a minute
        shell = LoadedShell() if only is None or "loaded" in only else None
        for n in dict.fromkeys(threads):
            runs.append(run_matrix("cpu", n, keys, scale, reps, shell, only, args.smoke, args.clock))
        torch.set_num_threads(1)
        if vreps > 0:
            _log(f"== verdict run: CPU time, 1 thread, {vreps} repetitions")
            vonly = VERDICT_VARIANTS & only if only else VERDICT_VARIANTS
            judged = run_matrix("cpu", 1, keys, scale, vreps, shell, vonly, args.smoke, "cpu")
        for k in keys:
            if WORKLOADS[k].missing() is None:
                ops[k] = count_ops(WORKLOADS[k], "cpu", scale)
        if not args.no_extras:
            _log("== extras: memory, panel, log summary, W5, bounds")
            jobs = {"memory": lambda: extras.memory(max(scale, 0.05)), "panel": lambda: extras.panel(md.panel),
                    "summary": lambda: extras.log_summary(md.log), "w5": lambda: cells.w5(shell, md.w5_reps),
                    "big_block": lambda: bounds.run_worker(["--ops", str(md.big_ops)], timeout=900),
                    "big_info": lambda: bounds.run_worker(["--info", str(md.info)], timeout=300)}  # fmt: skip
            for name, job in jobs.items():
                w0 = time.perf_counter()
                ext[name] = job()
                _log(f"  {name} took {time.perf_counter() - w0:.1f} s")
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
    ratio: list[dict[str, Any]] = []
    rows: list[tg.Row] = []
    if runs and not args.cuda:
        ratio, rows = print_targets(judged or runs[0], vreps if judged else reps, ops, ext, shell, not args.smoke)

    elapsed = time.perf_counter() - t_start
    meta = {"mode": mode, "scale": scale, "reps": reps, "verdict_reps": vreps if judged else 0, "clock": args.clock,
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "default_threads": default_threads, "seconds": elapsed,
            "c1_backend": md.c1_backend,
            "gpu": torch.cuda.get_device_name() if args.cuda and torch.cuda.is_available() else None,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    if shell is not None:
        meta["installed_state"] = {"before": shell.state_before, "loaded": shell.state_loaded,
                                   "after_unload": shell.state_after, "clean": shell.clean()}  # fmt: skip
    out = {"meta": meta, "runs": runs, "verdict_run": judged, "ops": ops, "extras": ext, "ratio_targets": ratio,
           "targets": [{"measure": a, "target": b, "result": c, "ok": d} for a, b, c, d in rows]}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=str))
    print(f"\n{mode} run took {elapsed:.0f} s; JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
