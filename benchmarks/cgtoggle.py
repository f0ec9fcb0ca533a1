"""Callgrind's client requests from Python: count instructions of one region of a run exactly.

``valgrind --tool=callgrind --instr-atstart=no python script.py`` runs the imports and warm-up
uninstrumented (several times faster); ``region(label)`` turns instrumentation on, runs the
region, and dumps its counts to their own file (``<out>.<n>``).  The requests are the macros of
``valgrind/callgrind.h``, compiled on first use into a small library in the temp folder; outside
valgrind they do nothing (a few instructions each), so a script runs the same either way.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SRC = r"""
#include <valgrind/callgrind.h>
int cg_running(void) { return RUNNING_ON_VALGRIND; }
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *s) { CALLGRIND_DUMP_STATS_AT(s); }
"""

_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        tag = hashlib.sha1(_SRC.encode()).hexdigest()[:12]
        so = Path(tempfile.gettempdir()) / f"tm_cgtoggle_{tag}.so"
        if not so.exists():
            c = so.with_suffix(".c")
            c.write_text(_SRC)
            tmp = so.with_suffix(f".{os.getpid()}.so")
            subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(tmp), str(c)], check=True)
            os.replace(tmp, so)
        _lib = ctypes.CDLL(str(so))
        _lib.cg_dump.argtypes = [ctypes.c_char_p]
    return _lib


def under_valgrind() -> bool:
    return bool(_load().cg_running())


@contextmanager
def region(label: str) -> Iterator[None]:
    """Instructions of the ``with`` body, dumped under ``label`` (callgrind's ``desc: Trigger``)."""
    lib = _load()
    lib.cg_start()
    lib.cg_zero()
    try:
        yield
    finally:
        lib.cg_dump(label.encode())
        lib.cg_stop()


def totals(out_prefix: str) -> dict[str, int]:
    """``{label: instructions}`` from the dump files ``out_prefix.N`` a run wrote."""
    got: dict[str, int] = {}
    d = Path(out_prefix).parent
    for p in sorted(d.glob(Path(out_prefix).name + ".*")):
        label, total = None, None
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                label = line.split("Client Request: ", 1)[1].strip()
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if label is not None and total is not None:
            got[label] = total
    return got
