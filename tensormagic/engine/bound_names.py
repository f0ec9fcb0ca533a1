"""The names a tensor takes from the line that made it: ``z`` for ``z = y * y * 3``.

``source.py`` finds the line; ``naming.py`` names tensors from where they live when the block ends
(the namespace, module parameters, containers); this module names them from the assignment.

A block's records are cut into runs (consecutive records of one line); within a run, the
tensors no later op of the run consumed are what the line's assignment target names.  Dead
tensors are named when the events are built; live ones when the block ends (their graphs are
named then).
"""

from __future__ import annotations

from typing import Any, Mapping

from .raw import EXTRA, KIND, LASTI, MODULE, TID, WHERE, create_parts

_MADE = frozenset(("create", "view", "move"))  # event kinds that make the tensor they name


def line_results(raw: list[Any], targets: Mapping[Any, str | None], *, failed: bool = False,
                  lo: int = 0, hi: int | None = None) -> list[tuple[int, str]]:  # fmt: skip
    """(tensor id, assignment target) for each tensor a line produced and no later op on the
    same line consumed: ``z`` in ``z = y * y * 3`` but not ``y * y``; each loop iteration's ``h``.
    In a block that failed, the last line never finished its assignment: it names nothing.
    ``targets``: where -> the line's assignment target; ``raw[lo:hi]`` starts and ends on runs'
    boundaries (a run: consecutive records of one line)."""
    out: list[tuple[int, str]] = []
    n = len(raw)
    end = n if hi is None else hi
    i = lo
    while i < end:
        r = raw[i]
        where = r[WHERE]
        j = i + 1
        while j < end and raw[j][WHERE] == where:
            j += 1
        # raw[i:j] ran on one line
        target = targets.get(where) if where is not None else None
        if target is None or (failed and j == n):
            pass
        elif j - i == 1:  # the common case in loops: one op per run of the line
            if r[KIND] in _MADE:
                out.append((r[TID], target))
        else:
            # A loop runs the line again: its bytecode offset falls back to the start, or stays on
            # the same call for a one-call line; ops inside one module call share an offset too,
            # but they run in a module.
            start = i
            for k in range(i + 1, j + 1):
                if k == j or _runs_again(raw[k - 1], raw[k]):
                    if k - start == 1:
                        if raw[start][KIND] in _MADE:
                            out.append((raw[start][TID], target))
                    else:
                        out.extend((tid, target) for tid in _unconsumed(raw, start, k))
                    start = k
        i = j
    return out


def _run_around(raw: list[Any], idx: int, limit: int) -> tuple[int, int] | None:
    """The bounds of the run of records (one line) that holds ``raw[idx]``; None past ``limit``
    records scanned (a very long run: the caller does one full pass instead)."""
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


def name_live(raw: list[Any], targets: Mapping[Any, str | None], names: dict[int, tuple[str, ...]],
               unnamed: list[tuple[int, int | None]], *, failed: bool) -> None:  # fmt: skip
    """Names from their lines for live tensors the namespace does not name: each one's run of
    records is scanned, unless there are many (then one pass over the whole block)."""
    wanted = {tid for tid, idx in unnamed if idx is not None and idx < len(raw) and raw[idx][TID] == tid}
    if not wanted:
        return
    runs: set[tuple[int, int]] | None = set() if len(wanted) <= 64 else None
    for tid, idx in unnamed:
        if runs is None:
            break
        if tid in wanted:
            run = _run_around(raw, idx, 4096)  # type: ignore[arg-type]
            if run is None:
                runs = None
            else:
                runs.add(run)
    spans = sorted(runs) if runs is not None else [(0, len(raw))]
    for lo, hi in spans:
        for tid, target in line_results(raw, targets, failed=failed, lo=lo, hi=hi):
            if tid in wanted:
                names.setdefault(tid, (target,))


def _runs_again(prev: Any, r: Any) -> bool:
    return r[LASTI] < prev[LASTI] or (r[LASTI] == prev[LASTI] and r[MODULE] is None)


def _unconsumed(raw: list[Any], lo: int, hi: int) -> list[int]:
    """Tensors made in ``raw[lo:hi]`` (one run of a line) that no later op of the run used."""
    consumed: set[int] = set()
    out = []
    for k in range(hi - 1, lo - 1, -1):
        r = raw[k]
        if r[KIND] in _MADE and r[TID] not in consumed:
            out.append(r[TID])
        consumed.update(_consumed(r))
    return out


def _consumed(r: Any) -> tuple[int, ...]:
    kind, extra = r[KIND], r[EXTRA]
    if kind == "create":
        return create_parts(extra)[0]
    if kind == "view":
        return (extra,)
    if kind == "move":
        return (extra[0],)
    if kind == "inplace":
        return extra[1:]
    return ()
