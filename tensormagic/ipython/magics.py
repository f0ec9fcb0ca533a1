"""The IPython layer: thin magics over the Python API (``track``, ``tensor_info``, devices)."""

from __future__ import annotations

import keyword
import os
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split
from traitlets import Bool, CaselessStrEnum, Int, List, TraitError, Unicode, Union, validate

from ..model.recording import Recording
from ..views.common import plural
from ..views.inert import inert_line
from .display import MODES, show, show_info, show_log, show_namespace, touched_nothing
from .session import AutoTracker, Options, run_tracked_cell

#: the largest --cell / --last / --exec-count a magic takes (past it, no log has that many cells)
MAX_COUNT = 2**62


def split_args(line: str) -> list[str]:
    """A magic's argument line as words, the way ``%run`` splits it (IPython's ``arg_split``:
    quotes group, POSIX rules on POSIX, backslashes kept on Windows); an unclosed quote is a
    one-line ``UsageError``."""
    try:
        return arg_split(line, posix=os.name == "posix", strict=True)
    except ValueError as e:
        raise UsageError(f"cannot read the arguments {line.strip()!r}: {e}") from None


def parse_args(magic: Any, line: str) -> Any:
    """``magic``'s ``magic_arguments`` parsed from ``line`` (``split_args``; errors are UsageErrors)."""
    return magic.parser.parse_args(split_args(line))


def user_path(path: str | None) -> str | None:
    """A path argument as the user meant it: ``~`` expanded (quotes were taken by ``split_args``)."""
    return None if path is None else os.path.expanduser(path)


def _count(value: int | None, option: str, *, least: int = 1) -> int | None:
    if value is not None and value < least:
        raise UsageError(f"{option} takes a whole number of at least {least}, got {value}")
    if value is not None and abs(value) > MAX_COUNT:
        raise UsageError(f"{option} takes a whole number, got {value}: too large")
    return value


MAGIC_NAMES = {"line": ("trackgrad", "tensorinfo", "device", "tensorlog"), "cell": ("trackgrad",)}


@magics_class
class TensorMagic(Magics):
    """tensormagic's magics and options (``%config TensorMagic``)."""

    stats = Bool(False, help="Compute value statistics of every output while tracking (slower, "
                             "synchronises a GPU).").tag(config=True)  # fmt: skip
    max_events = Int(20_000, help="Events kept per cell; past it, repeats are folded into counts.").tag(config=True)

    @validate("max_events")
    def _check_max_events(self, proposal: Any) -> int:
        from ..api import check_max_events

        try:
            return check_max_events(proposal["value"])
        except ValueError as e:  # %config TensorMagic.max_events = -5: refused, the old value kept
            raise TraitError(f"TensorMagic.max_events: {e}") from None
    display = CaselessStrEnum(MODES, default_value="auto",
                              help="auto: the panel in Jupyter, text in terminal IPython.").tag(config=True)  # fmt: skip
    log_path = Unicode(None, allow_none=True, help="Append every tracked cell to this JSON Lines log.").tag(config=True)
    diagnostics = Union([Unicode(), List(Unicode())], default_value="all",
                        help='Diagnostic ids to run: "all", or a list (empty for none).').tag(config=True)  # fmt: skip

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.auto: AutoTracker | None = None

    # -- helpers ---------------------------------------------------------------------------
    def options(self) -> Options:
        from ..diagnostics import select

        try:
            select(self.diagnostics)
        except ValueError as e:  # a typo in %config TensorMagic.diagnostics
            raise UsageError(f"TensorMagic.diagnostics: {e}") from None
        return Options(stats=self.stats, max_events=self.max_events, display=self.display,
                       log_path=user_path(self.log_path), diagnostics=self.diagnostics)  # fmt: skip

    def _show(self, rec: Recording, opts: Options, *, summary: bool = False) -> None:
        if opts.quiet or (summary and touched_nothing(rec)):  # %trackgrad on: silent on cells without tensors
            return
        show(rec, opts.display, self.shell, summary=summary)

    def _eval(self, expr: str) -> Any:
        from ..info import NOT_A_PATH, object_by_report_name

        try:
            return self.shell.ev(expr)
        except SyntaxError as e:
            syntax = f"could not evaluate {expr!r}: SyntaxError: {e}"
            try:  # a name as the reports write it: model.0.weight
                value = object_by_report_name(self.shell.user_ns, expr)
            except Exception as e:  # noqa: BLE001 - any user error becomes a one-line usage message
                raise UsageError(f"could not find {expr!r}: {type(e).__name__}: {e}") from None
            if value is NOT_A_PATH:
                raise UsageError(syntax) from None
            return value
        except Exception as e:  # noqa: BLE001 - any user error becomes a one-line usage message
            error = f"could not evaluate {expr!r}: {type(e).__name__}: {e}"
            value = NOT_A_PATH
            if ".state[" in expr:  # valid Python meaning another thing: opt.state[model.fc.weight].exp_avg
                try:
                    value = object_by_report_name(self.shell.user_ns, expr)
                except Exception as e2:  # noqa: BLE001 - the optimizer's state lacks it: say what it holds
                    raise UsageError(f"could not find {expr!r}: {type(e2).__name__}: {e2}") from None
            if value is NOT_A_PATH:
                raise UsageError(error) from None
            return value

    # -- %trackgrad / %%trackgrad ----------------------------------------------------------
    @magic_arguments()
    @argument("mode", nargs="?", help="line magic only: 'on' to track every following cell, 'off' to stop")
    @argument("-o", "--output", metavar="NAME", help="bind the Recording to NAME in the namespace")
    @argument("--stats", action="store_true", help="compute value statistics while tracking")
    @argument("--quiet", action="store_true", help="show nothing (the recording is still kept)")
    @argument("--log", metavar="PATH", help="append the recording to this JSON Lines log")
    @line_cell_magic
    def trackgrad(self, line: str, cell: str | None = None) -> Any:
        """Track what the torch code in a cell does to its tensors.

        %%trackgrad [-o NAME] [--stats] [--quiet] [--log PATH]
            runs the cell and shows every tensor it created, viewed, wrote in place or moved,
            the autograd (grad_fn) graphs and backward calls. Line 1 is the %%trackgrad line.
        %trackgrad on [--stats] [--quiet]   track every following cell (a one-line summary each)
        %trackgrad off                      stop

        tensormagic.last_recording() returns the latest Recording; -o NAME also binds it.
        """
        __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
        args = parse_args(self.trackgrad, line)
        opts = self.options().with_flags(stats=args.stats or None, quiet=args.quiet or None,
                                          log_path=user_path(args.log))  # fmt: skip
        if cell is not None:
            if args.mode is not None:
                raise UsageError(f"%%trackgrad takes no mode ({args.mode!r}): use '%trackgrad on|off' "
                                 "on a line of its own, or %%trackgrad [options] at the top of a cell")  # fmt: skip
            return self._run_cell(cell, opts, args.output, line)
        if args.output is not None:  # it would bind nothing: say so rather than ignore it
            raise UsageError("-o NAME binds one cell's Recording: use it with %%trackgrad at the top of a "
                             "cell; under %trackgrad on, tensormagic.last_recording() returns the latest")  # fmt: skip
        if args.mode == "on":
            return self._auto_on(opts)
        if args.mode == "off":
            return self._auto_off()
        if args.mode is None:
            state = "on" if self.auto is not None and self.auto.active else "off"
            print(f"tracking every cell is {state}. Use %trackgrad on|off, or %%trackgrad at the top of a cell.")
            return None
        raise UsageError(f"unknown mode {args.mode!r}: use '%trackgrad on', '%trackgrad off', "
                         "or %%trackgrad at the top of a cell")  # fmt: skip

    def _run_cell(self, cell: str, opts: Options, output: str | None, line: str) -> Any:
        __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
        if output is not None and (not output.isidentifier() or keyword.iskeyword(output)):
            raise UsageError(f"-o needs a variable name, not {output!r}")

        def done(rec: Recording) -> None:
            if output is not None:
                self.shell.user_ns[output] = rec
            self._show(rec, opts)

        full = f"%%trackgrad {line}".rstrip() + "\n" + cell
        return run_tracked_cell(self.shell, cell, opts, full_source=full, cell_id=current_cell_id(self.shell),
                                on_done=done)  # fmt: skip

    def _auto_on(self, opts: Options) -> None:
        if self.auto is not None:
            self.auto.stop()
        self.auto = AutoTracker(self.shell, opts, lambda rec: self._show(rec, opts, summary=True))
        self.auto.start()
        if not opts.quiet:
            print("tracking every following cell; %trackgrad off to stop")

    def _auto_off(self) -> None:
        if self.auto is None or not self.auto.active:
            print("tracking was not on")
            return
        self.auto.stop()
        self.auto = None
        print("tracking off")

    # -- %tensorinfo -----------------------------------------------------------------------
    @line_magic
    def tensorinfo(self, line: str) -> Any:
        """Explain a tensor: %tensorinfo EXPR

        Shape, dtype, device, strides, bytes, autograd (grad_fn chain, leaf, .grad), version,
        views and shared memory (NumPy arrays included), and value statistics. An nn.Module
        gives a table of its parameters and buffers; no argument lists every tensor in the namespace.
        EXPR may also be a name as the reports write it: %tensorinfo model.0.weight.grad,
        %tensorinfo opt.state[model.0.weight].exp_avg
        """
        import torch

        from ..info import module_info, tensor_info

        expr = line.strip()
        if not expr:
            show_namespace(self.shell.user_ns, self.display, self.shell)
            return None
        value = self._eval(expr)
        if isinstance(value, torch.Tensor):
            info = tensor_info(value, name=expr, namespace=self.shell.user_ns)
            show_info(info, self.display, self.shell, tensor=value)
        elif isinstance(value, torch.nn.Module):
            show_info(module_info(value, name=expr), self.display, self.shell)
        else:
            raise UsageError(f"%tensorinfo needs a tensor or an nn.Module; {expr!r} is of type {type(value).__name__}")
        return None

    # -- %device ---------------------------------------------------------------------------
    @line_magic
    def device(self, line: str) -> None:
        """Show devices and where tensors live, or set the default device: %device [cpu|cuda:N|mps|meta]

        With no argument: the devices torch can use, the default device, and the namespace's
        tensors grouped by device with their total bytes. %device cpu restores the normal default.
        """
        from .devices import device_report, set_default_device

        parts = split_args(line)
        if len(parts) > 1:
            raise UsageError(f"%device takes one device at most, got {len(parts)}: {line.strip()!r}")
        if parts:
            try:
                now = set_default_device(parts[0])
            except ValueError as e:
                raise UsageError(str(e)) from None
            print(f"default device: {now}")
            return
        show_info(device_report(self.shell.user_ns), self.display, self.shell)

    # -- %tensorlog ------------------------------------------------------------------------
    @magic_arguments()
    @argument("path", metavar="PATH", help="a log written by tensormagic (.jsonl or .jsonl.gz)")
    @argument("--cell", type=int, metavar="N", help="the cell at this 1-based position in the file")
    @argument("--exec-count", type=int, metavar="N", help="the cells with this execution count")
    @argument("--last", type=int, metavar="K", help="only the last K (matching) cells")
    @line_magic
    def tensorlog(self, line: str) -> None:
        """Show cells from a log file: %tensorlog PATH [--cell N] [--exec-count N] [--last K]

        --cell N is the cell's position in the file (several kernels repeat execution counts);
        --exec-count N selects by execution count. The recordings are the same as live ones.
        """
        from ..log.reader import LogReadError, load_log

        args = parse_args(self.tensorlog, line)
        path = user_path(args.path)
        _count(args.cell, "--cell")
        _count(args.last, "--last")
        _count(args.exec_count, "--exec-count", least=-MAX_COUNT)
        try:
            recs = load_log(path, cell=args.cell, exec_count=args.exec_count, last=args.last, warn=False)
        except (OSError, LogReadError) as e:
            raise UsageError(str(e)) from None
        for note in recs.stats.notes():
            print(inert_line(f"note: {note}"))
        if not recs:
            if args.cell is None and args.exec_count is None:
                print(inert_line(f"{path}: no cells logged yet"))
                return None
            what = f"cell {args.cell}" if args.cell is not None else f"cell with execution count {args.exec_count}"
            raise UsageError(f"{path} has {plural(recs.stats.cells, 'cell')}; there is no {what}")
        labels = [f"{path}: cell #{pos} (execution count {rec.cell})" for pos, rec in zip(recs.positions, recs)]
        show_log(list(recs), labels, self.display, self.shell)
        return None


def current_cell_id(shell: Any) -> str | None:
    """The notebook cell id of the running execution (JupyterLab sends it in the request's metadata)."""
    header = getattr(shell, "parent_header", None) or {}
    cell_id = header.get("metadata", {}).get("cellId")
    return cell_id if isinstance(cell_id, str) else None


_loaded: dict[int, TensorMagic] = {}
_told_engine: list[bool] = []  # the missing-engine line is printed once per process


def load(ip: Any) -> TensorMagic:
    """Register the magics once per shell (loading twice registers nothing twice); say once if the
    compiled engine is missing, since pip installs without it, silently, where no compiler is."""
    existing = _loaded.get(id(ip))
    if existing is not None and existing.shell is ip:
        return existing
    magics = TensorMagic(ip)
    ip.register_magics(magics)
    _loaded[id(ip)] = magics
    if not _told_engine:
        _told_engine.append(True)
        from ..engine.availability import missing_line

        line = missing_line()
        if line is not None:
            print(line)
    return magics


def unload(ip: Any) -> None:
    """Remove every magic, callback and mode tensormagic installed in this shell."""
    magics = _loaded.pop(id(ip), None)
    if magics is None:
        return
    if magics.auto is not None:
        magics.auto.stop()
        magics.auto = None
    panel = sys.modules.get("tensormagic.views.panel_display")
    if panel is not None:  # only imported where widgets were shown
        panel.close_all()
    table = ip.magics_manager.magics
    for kind, names in MAGIC_NAMES.items():
        for name in names:
            fn = table[kind].get(name)
            if getattr(fn, "__self__", None) is magics:
                del table[kind][name]
    ip.magics_manager.registry.pop(type(magics).__name__, None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)
