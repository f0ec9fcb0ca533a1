"""Exports of a log: a Chrome Trace Event file (Perfetto, chrome://tracing) and one
self-contained, escaped HTML report for people without Jupyter.  Both stream the log one cell at
a time, so a large log exports with flat memory."""

from __future__ import annotations

import os
from typing import IO, Any, Callable

from ..views.html import h as _h
from .reader import LoggedCell, ScanStats, first_body_line, iter_cells, to_recording
from .records import dumps

CELLS_TID = 1
EVENTS_TID = 2
_CHROME_HEAD = b'{"displayTimeUnit":"ms","otherData":{"producer":"tensormagic"}'
_HTML_MARK = b"<title>tensormagic log: "


class OutputRefused(OSError):
    """An export output that would write over what is not ours (the message is one line)."""


def check_output(log: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False) -> None:
    """Refuse an output that is the log itself (by name, symlink or hard link: the same file), and,
    unless ``force``, an existing file that is not an export of ours (a Chrome trace or HTML
    report tensormagic wrote)."""
    try:
        same = os.path.samefile(log, out)
    except OSError:
        same = False
    if same:
        raise OutputRefused(f"refusing to write {os.fspath(out)}: it is the log being exported")
    if force or not os.path.lexists(out):
        return
    if os.path.isdir(out):
        raise OutputRefused(f"refusing to write {os.fspath(out)}: it is a directory")
    try:
        with open(out, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise OutputRefused(f"cannot write {os.fspath(out)}: {e.strerror or e}") from None
    if head and (not (head.startswith(_CHROME_HEAD) or _HTML_MARK in head) or _is_log_head(head)):
        raise OutputRefused(f"refusing to write over {os.fspath(out)}: it exists and is not an export of "
                            "tensormagic's (pass --force to replace it)")  # fmt: skip


def _is_log_head(head: bytes) -> bool:
    return head.startswith((b'{"type":"header"', b'{"type":"event"', b'{"type":"cell"', b"\x1f\x8b"))


# -- Chrome Trace Event format ---------------------------------------------------------------
def export_chrome(log: str | os.PathLike[str], out: str | os.PathLike[str], *, stats: ScanStats | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:  # fmt: skip
    """Write ``out`` (JSON object format, ``ts`` in µs from the log's first session start):
    each cell an ``X`` slice, each event an instant with its fields in ``args``, bytes moved
    between devices a ``C`` counter per process.  Returns (cells, events) written."""
    stats = stats if stats is not None else ScanStats(os.fspath(log))
    n_cells = n_events = 0
    base: float | None = None
    named: set[int] = set()
    moved: dict[int, int] = {}
    with open(out, "wb") as f:
        f.write(b'{"displayTimeUnit":"ms","otherData":{"producer":"tensormagic"},"traceEvents":[\n')
        first = True

        def emit(obj: dict[str, Any]) -> None:
            nonlocal first
            f.write(dumps(obj) if first else b",\n" + dumps(obj))
            first = False

        for c in iter_cells(log, stats, keep_events=True, progress=progress):
            r = c.record or {}
            sess = c.session or {}
            pid = sess.get("pid") if isinstance(sess.get("pid"), int) else 0
            started = r.get("started") if isinstance(r.get("started"), (int, float)) else None
            if base is None:
                starts = [h["started"] for h in stats.headers if isinstance(h.get("started"), (int, float))]
                base = min(starts + ([started] if started is not None else [])) if starts or started else 0.0
            t0 = ((started if started is not None else base) - base) * 1e6
            if pid not in named:
                named.add(pid)
                host = sess.get("hostname", "?")
                emit({"ph": "M", "name": "process_name", "pid": pid,
                      "args": {"name": f"tensormagic: pid {pid} on {host}"}})  # fmt: skip
                emit(
                    {
                        "ph": "M",
                        "name": "thread_name",
                        "pid": pid,
                        "tid": CELLS_TID,
                        "args": {"name": "cells"},
                    }
                )
                emit(
                    {
                        "ph": "M",
                        "name": "thread_name",
                        "pid": pid,
                        "tid": EVENTS_TID,
                        "args": {"name": "events"},
                    }
                )
            dur = float(r.get("duration_s") or 0.0) * 1e6
            if not dur and c.events:
                dur = max(float(e.get("time_us") or 0.0) for e in c.events)
            emit({"ph": "X", "name": _cell_name(c), "cat": "cell", "ts": t0, "dur": dur, "pid": pid,
                  "tid": CELLS_TID, "args": _cell_args(c)})  # fmt: skip
            n_cells += 1
            for e in c.events or ():
                ts = t0 + float(e.get("time_us") or 0.0)
                emit({"ph": "i", "s": "t", "name": _event_name(e), "cat": str(e.get("kind")), "ts": ts,
                      "pid": pid, "tid": EVENTS_TID, "args": e})  # fmt: skip
                n_events += 1
                if e.get("kind") == "move" and e.get("from_device") != e.get("to_device"):
                    n = e.get("nbytes")
                    moved[pid] = moved.get(pid, 0) + (n if isinstance(n, int) else 0)
                    emit(
                        {
                            "ph": "C",
                            "name": "bytes moved",
                            "ts": ts,
                            "pid": pid,
                            "args": {"bytes": moved[pid]},
                        }
                    )
        f.write(b"\n]}\n")
    return n_cells, n_events


def _cell_name(c: LoggedCell) -> str:
    ec = c.exec_count
    head = f"cell [{ec}]" if ec is not None else f"cell #{c.position}"
    line = c.first_line()
    return f"{head} {line[:60]}" if line else head


def _cell_args(c: LoggedCell) -> dict[str, Any]:
    r = c.record or {}
    return {
        "position": c.position,
        "exec_count": c.exec_count,
        "cell_id": r.get("cell_id"),
        "status": r.get("status", "incomplete"),
        "error": r.get("error"),
        "counts": c.all_counts(),
        "bytes_moved": c.bytes_moved,
        "warnings": c.warnings,
        "source": r.get("source"),
    }


def _event_name(e: dict[str, Any]) -> str:
    t = e.get("tensor") or {}
    names = t.get("names") or ()
    label = names[0] if names else t.get("id", "?")
    return f"{e.get('kind')} {label} {e.get('op', '?')}"


# -- one self-contained HTML file ------------------------------------------------------------
PAGE_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:16px;color:#1f2328}
h1{font-size:18px}details{border:1px solid #d0d7de;border-radius:6px;margin:8px 0;padding:4px 8px}
summary{cursor:pointer;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.tm-meta{color:#57606a;font-size:12px}.tm-fail{color:#cf222e}
pre.tm-source{background:rgba(127,127,127,.08);padding:6px;font-size:12px;overflow:auto}
"""


def export_html(log: str | os.PathLike[str], out: str | os.PathLike[str], *, stats: ScanStats | None = None,
                progress: Callable[[int, int], None] | None = None) -> int:  # fmt: skip
    """Write one HTML file: every cell's report (the same renderer as the notebook's HTML),
    everything from the log escaped, no scripts, no network.  Returns the cells written."""
    stats = stats if stats is not None else ScanStats(os.fspath(log))
    title = f"tensormagic log: {os.path.basename(os.fspath(log))}"
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        _head(f, title)
        for c in iter_cells(log, stats, keep_events=True, progress=progress):
            rec = to_recording(c, stats)
            c.events = None
            status = "" if c.complete and not c.failed else (" — FAILED" if c.failed else " — incomplete")
            head = f"#{c.position} · cell [{c.exec_count if c.exec_count is not None else ' '}] · {c.first_line()}"
            f.write(f"<details open><summary>{_h(head)}<span class='tm-fail'>{_h(status)}</span></summary>\n")
            if rec.source:
                f.write(f"<pre class='tm-source'>{_h(rec.source)}</pre>\n")
            f.write(rec.to_html())
            f.write("\n</details>\n")
            n += 1
        if n == 0:
            f.write("<p>No cells in this log.</p>\n")
        f.writelines(f"<p class='tm-meta'>{_h(note)}</p>\n" for note in stats.notes())
        f.write("</body></html>\n")
    return n


def _head(f: IO[str], title: str) -> None:
    # The CSP forbids every script and every fetch: even a mistake in escaping runs nothing.
    f.write(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>\n"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<title>{_h(title)}</title>\n<style>{PAGE_STYLE}</style></head><body>\n<h1>{_h(title)}</h1>\n"
    )


__all__ = ["export_chrome", "export_html", "first_body_line"]
