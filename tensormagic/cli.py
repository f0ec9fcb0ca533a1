"""The command line: ``python -m tensormagic`` / ``tensormagic``.

``demo`` opens the first lesson in JupyterLab (``--text``: in this terminal), ``example`` prints
the autograd example's report, ``doctor`` the versions and the engine in use; ``summary``, ``show``
and ``export`` review a log file written with ``track(log=...)``, ``%%trackgrad --log`` or
``TensorMagic.log_path``.  Errors are one line on stderr and exit status 1 (2 for a wrong command line, as argparse does).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, TextIO

from .model.events import KINDS, SEEN
from .views.common import fit, plural
from .views.inert import inert_line
from .views.text import MIN_WIDTH

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem the user can fix, reported as one line on stderr."""


def _cmd_demo(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from .ipython.lesson import find_notebook, run_lesson

    try:
        notebook = find_notebook(args.notebook)
    except FileNotFoundError as e:
        print(f"tensormagic: {e}", file=sys.stderr)
        return 1
    if args.text:
        return 1 if run_lesson(notebook) else 0
    cmd = [sys.executable, "-m", "jupyterlab", str(notebook), *args.jupyter_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI machines run as root; Jupyter refuses otherwise
    print("Starting JupyterLab on", notebook, "(Ctrl-C to stop; add --text to run the lesson here instead)")
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from .ipython.demo import DEMO_SOURCE, run_demo

    print("Tracking this code with tensormagic.track():\n")
    print("    " + DEMO_SOURCE.strip().replace("\n", "\n    ") + "\n")
    print(run_demo())
    return EXIT_OK


def doctor_report() -> str:
    """Versions of what tensormagic runs on, and which engine records (the compiled one, or why not)."""
    import importlib
    import platform

    from . import __version__
    from .engine.availability import HOW_TO_GET, compiled_error, compiled_path, engine_in_use

    def version(module: str) -> str:
        # the imported module's own __version__ (a local build tag such as +cpu included), and a
        # module that is installed but fails to import says why
        try:
            return str(importlib.import_module(module).__version__)
        except ModuleNotFoundError:
            return "not installed"
        except Exception as e:  # noqa: BLE001 - a broken install is what doctor is for
            return f"installed, but import fails: {type(e).__name__}: {e}".replace("\n", " ")

    rows = [("tensormagic", __version__), ("python", f"{platform.python_version()} ({sys.executable})"),
            ("platform", platform.platform()), ("torch", version("torch")), ("IPython", version("IPython")),
            ("ipywidgets", version("ipywidgets"))]  # fmt: skip
    err = compiled_error()
    if engine_in_use() == "c":
        engine = f"compiled (C), {compiled_path()}"
    elif err is None:
        engine = "Python: TENSORMAGIC_ENGINE=python chooses it (the compiled engine is built)"
    else:
        engine = f"Python, because the compiled engine is missing: {err}"
    rows.append(("engine", engine))
    lines = [f"{k:<12}{v}" for k, v in rows]
    if err is not None:
        lines.append(f"{'':<12}The Python engine records the same events, more slowly. To get the compiled one: "
                     f"{HOW_TO_GET}.")  # fmt: skip
    return "\n".join(lines)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .engine.availability import compiled_error

    print(doctor_report())
    if args.require_compiled and compiled_error() is not None:
        raise CliError("--require-compiled: the compiled engine does not import")
    return EXIT_OK


# -- reviewing a log -------------------------------------------------------------------------
class Progress:
    """A progress bar on a terminal's stderr, shown only once work has taken ``delay`` seconds."""

    def __init__(self, label: str, stream: Any, *, delay: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.label = label
        self.stream = stream
        self.delay = delay
        self.clock = clock
        self.t0 = clock()
        self.last = -1.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.t0 < self.delay or now - self.last < 0.1 and done < total:
            return
        self.last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {frac * 100:3.0f}%  {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        )
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _progress(label: str) -> Progress | None:
    """A progress bar when stderr is a terminal (never in a pipe); shown after ~1 s of work."""
    return Progress(label, sys.stderr) if sys.stderr.isatty() else None


def _run_scan(label: str, work: Callable[[Any, Any], Any], path: str) -> tuple[Any, Any]:
    from .log.reader import ScanStats

    stats = ScanStats(path)
    bar = _progress(label)
    try:
        result = work(stats, bar)
    finally:
        if bar is not None:
            bar.close()
    for note in stats.notes():
        print(inert_line(f"tensormagic: note: {note}"), file=sys.stderr)
    return result, stats


def _cmd_summary(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from .log.reader import iter_cells
    from .views.common import KIND_WORD, fmt_bytes, folded_moves_words

    out = out or sys.stdout
    # a same-device dtype change is a cast: its own column, apart from moves between devices
    # and a tensor no op made (first seen in the cell) is no "new" one: a column of its own
    kind_cols = [col for k in KINDS for col in ([("move", "move"), ("cast", "cast")] if k == "move"
                                                else [(k, KIND_WORD[k]), (SEEN, SEEN)] if k == "create"
                                                else [(k, KIND_WORD.get(k, k))])]  # fmt: skip
    head = f"{'#':>4} {'exec':>5}  {'first line':<40}" + "".join(f" {w:>8}" for _, w in kind_cols)
    head += f" {'moved':>9} {'warn':>4}  status"

    def work(stats: Any, bar: Any) -> list[Any]:
        totals = dict.fromkeys(KINDS, 0)
        n = moved = warns = failed = incomplete = folded = 0
        printed = False
        for c in iter_cells(args.log, stats, progress=bar):
            if not printed:
                print(head, file=out)
                printed = True
            counts = c.all_counts()
            fm = c.folded_moves()
            counts["move"] = counts.get("move", 0) - c.casts - fm  # the events between devices
            counts["cast"] = c.casts
            folded += fm
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            n += 1
            moved += c.bytes_moved
            warns += c.warnings
            status = "ok" if c.complete and not c.failed else ("FAILED" if c.failed else "incomplete")
            if fm:  # a fold keeps no devices: neither column may claim them
                status += f" ({folded_moves_words(fm)})"
            failed += c.failed
            incomplete += not c.complete
            ec = "" if c.exec_count is None else f"[{c.exec_count}]"
            first = inert_line(c.first_line()) or "(no source)"
            first = fit(first, 40)
            row = f"{c.position:>4} {ec:>5}  {first:<40}" + "".join(
                f" {counts.get(k, 0):>8}" for k, _ in kind_cols
            )
            print(row + f" {fmt_bytes(c.bytes_moved) or '0 B':>9} {c.warnings:>4}  {status}", file=out)
        if not printed:
            print(inert_line(f"{args.log}: no cells logged yet"), file=out)
            return []
        cells = "total: " + plural(n, "cell")
        total = f"{'':>4} {'':>5}  {cells:<40}" + "".join(
            f" {totals.get(k, 0):>8}" for k, _ in kind_cols
        )
        extra = [f"{failed} failed"] * bool(failed) + [f"{incomplete} incomplete"] * bool(incomplete)
        extra += [folded_moves_words(folded)] * bool(folded)
        print(total + f" {fmt_bytes(moved) or '0 B':>9} {warns:>4}  {', '.join(extra)}".rstrip(), file=out)
        return []

    _run_scan("reading", work, args.log)
    return EXIT_OK


def _width(text: str) -> int:
    """``--width``: a whole number of characters, at least ``MIN_WIDTH`` (argparse says so in one line)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of characters, not {text!r}") from None
    if n < MIN_WIDTH:
        raise argparse.ArgumentTypeError(f"at least {MIN_WIDTH} characters, not {n}")
    return n


def _cmd_show(args: argparse.Namespace) -> int:
    from .log.reader import iter_cells, to_recording

    def wanted(c: Any) -> bool:
        return c.position == args.cell if args.cell is not None else c.exec_count == args.exec_count

    def work(stats: Any, bar: Any) -> int:
        shown = n = 0
        for c in iter_cells(args.log, stats, keep_events=wanted, progress=bar):
            n += 1
            if not wanted(c):
                continue
            if shown:
                print()
            rec = to_recording(c, stats)
            print(f"── cell #{c.position} (execution count {c.exec_count}) ──")
            print(rec.to_text(width=args.width))
            shown += 1
        if not shown:
            what = (
                f"cell {args.cell}"
                if args.cell is not None
                else f"cell with execution count {args.exec_count}"
            )
            raise CliError(f"{args.log} has {plural(n, 'cell')}; there is no {what}")
        return shown

    _run_scan("reading", work, args.log)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from .log.export import check_output, export_chrome, export_html

    if args.chrome is None and args.html is None:
        raise CliError("export needs --chrome OUT.json and/or --html OUT.html")
    outs = [o for o in (args.chrome, args.html) if o is not None]
    if len(outs) == 2 and os.path.abspath(outs[0]) == os.path.abspath(outs[1]):
        raise CliError("--chrome and --html name the same file")
    for o in outs:  # all checked before anything is written
        check_output(args.log, o, force=args.force)
    if args.chrome is not None:
        (cells, events), _ = _run_scan("exporting", lambda s, b: export_chrome(args.log, args.chrome, stats=s,
                                                                               progress=b), args.log)  # fmt: skip
        print(f"wrote {args.chrome}: {plural(cells, 'cell')}, {plural(events, 'event')} (open in https://ui.perfetto.dev "
              "or chrome://tracing)")  # fmt: skip
    if args.html is not None:
        cells, _ = _run_scan("exporting", lambda s, b: export_html(args.log, args.html, stats=s, progress=b),
                             args.log)  # fmt: skip
        print(f"wrote {args.html}: {plural(cells, 'cell')}")
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormagic", description="See what PyTorch code does to its tensors.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="open the first lesson (01_tensor_basics.ipynb) in JupyterLab",
                       description="Open the first lesson in JupyterLab; --text runs it in this terminal "
                       "and prints the text reports.")  # fmt: skip
    d.add_argument("notebook", nargs="?", help="a notebook (default: demo_notebooks/01_tensor_basics.ipynb)")
    d.add_argument("--text", action="store_true", help="run the lesson here, in terminal IPython, as text")
    d.epilog = "Options after -- go to JupyterLab, e.g.: tensormagic demo -- --no-browser --port 8888"
    d.set_defaults(func=_cmd_demo)

    x = sub.add_parser("example", help="track the autograd example and print the report",
                       description="Track the autograd example and print the text report.")  # fmt: skip
    x.set_defaults(func=_cmd_example)

    dr = sub.add_parser("doctor", help="versions, and which engine records (the compiled one, or why not)",
                        description="Print the versions of Python, torch, IPython and ipywidgets, and which "
                        "engine records: the compiled one, or the Python one and why (with how to get the "
                        "compiled one).")  # fmt: skip
    dr.add_argument("--require-compiled", action="store_true",
                    help="exit with status 1 when the compiled engine does not import (for wheel builds)")  # fmt: skip
    dr.set_defaults(func=_cmd_doctor)

    s = sub.add_parser("summary", help="one line per logged cell, then totals",
                       description="One line per logged cell (position, execution count, first line of the "
                       "body, events of each kind, bytes moved between devices, warnings), then totals.")  # fmt: skip
    s.add_argument("log", metavar="LOG", help="a log file (.jsonl or .jsonl.gz)")
    s.set_defaults(func=_cmd_summary)

    sh = sub.add_parser("show", help="the full text report of one logged cell",
                        description="The full text report of one logged cell.")  # fmt: skip
    sh.add_argument("log", metavar="LOG", help="a log file (.jsonl or .jsonl.gz)")
    which = sh.add_mutually_exclusive_group(required=True)
    which.add_argument("--cell", type=int, metavar="N", help="the cell's 1-based position in the file")
    which.add_argument("--exec-count", type=int, metavar="N",
                       help="the cell's execution count (every match is shown: kernels repeat counts)")  # fmt: skip
    sh.add_argument("--width", type=_width, default=100,
                    help=f"line width of the report (default 100, at least {MIN_WIDTH})")  # fmt: skip
    sh.set_defaults(func=_cmd_show)

    e = sub.add_parser("export", help="export a log to a Chrome trace and/or one HTML file",
                       description="Export a log: --chrome writes a Chrome Trace Event file for Perfetto or "
                       "chrome://tracing; --html writes one self-contained HTML report.")  # fmt: skip
    e.add_argument("log", metavar="LOG", help="a log file (.jsonl or .jsonl.gz)")
    e.add_argument("--chrome", metavar="OUT.json", help="write a Chrome Trace Event file")
    e.add_argument("--html", metavar="OUT.html", help="write one self-contained HTML report")
    e.add_argument("--force", action="store_true",
                   help="replace an existing output that is not a tensormagic export (never the log itself)")  # fmt: skip
    e.set_defaults(func=_cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after -- belongs to JupyterLab (``demo``)
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.jupyter_args = extra
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .log.reader import LogReadError

    try:
        return int(args.func(args))
    except BrokenPipeError:  # `tensormagic summary LOG | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (CliError, LogReadError, OSError) as e:
        print(inert_line(f"tensormagic: error: {e}"), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tensormagic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
