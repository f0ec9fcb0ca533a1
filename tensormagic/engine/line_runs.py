"""A block's records cut into segments (consecutive records of one line) and each segment into
runs (one execution of the line: a loop that stays on one line repeats the same ops, or its
bytecode offset falls back); ``bound_names.py`` names the values a run binds."""

from __future__ import annotations

from typing import Any

from .raw import FUNC, KIND, LASTI, MODULE, WHERE

MAX_PERIOD_SCAN = 4096  # a longer segment is cut where its offset falls back only


def op_key(r: Any) -> tuple[Any, ...]:
    # the bytecode offset too: ``y * y * 3`` runs ``mul`` twice in one execution, at two offsets
    return (r[FUNC], r[KIND], r[MODULE], r[LASTI])


def split_runs(raw: list[Any], i: int, j: int, least: int = 1) -> list[tuple[int, int]]:
    """The runs of the segment ``raw[i:j]`` (one line): cut where the bytecode offset falls back,
    then each piece into its smallest period of repeated ops (a one-line loop body) of at least
    ``least`` records.

    A line that binds n names makes at least n records an execution, and may make them by one op
    at one offset (``v, i = torch.sort(x)``; ``for xb, yb in loader``, a worker's batch rebuilt by
    two ``torch.empty``): a shorter period would read as a run per tensor."""
    pieces: list[tuple[int, int]] = []
    start = i
    for k in range(i + 1, j):
        if raw[k][LASTI] < raw[k - 1][LASTI]:
            pieces.append((start, k))
            start = k
    pieces.append((start, j))
    out: list[tuple[int, int]] = []
    for a, b in pieces:
        p = _period(raw, a, b, least)
        out.extend((s, min(s + p, b)) for s in range(a, b, p))
    return out


def _period(raw: list[Any], a: int, b: int, least: int = 1) -> int:
    n = b - a
    if n <= 1:
        return 1
    if n > MAX_PERIOD_SCAN:
        return n
    first = op_key(raw[a])
    for p in range(least, n // 2 + 1):
        if n % p or op_key(raw[a + p]) != first:
            continue
        if all(op_key(raw[a + q]) == op_key(raw[a + q - p]) for q in range(p, n)):
            return p
    return n


def segment_of(raw: list[Any], idx: int, limit: int) -> tuple[int, int] | None:
    """The bounds of the segment (consecutive records of one line) holding ``raw[idx]``; None past
    ``limit`` records scanned (the caller then does one full pass instead)."""
    where = raw[idx][WHERE]
    lo, hi, n = idx, idx + 1, len(raw)
    while lo > 0 and raw[lo - 1][WHERE] == where:
        lo -= 1
        if idx - lo > limit:
            return None
    while hi < n and raw[hi][WHERE] == where:
        hi += 1
        if hi - idx > limit:
            return None
    return lo, hi
