"""A live tensor's history across tracked cells: made In[3] line 2, written In[5] line 4, moved
In[7] line 1.

Kept per tensor id next to ``identity.provenance`` and dropped with it when the tensor dies
(``identity.prune``), so only live tensors have one.  Each history is bounded: its first
``HEAD`` entries, its last ``TAIL``, and how many fell between (a parameter written at every
optimizer step keeps a few entries and a count, not one per step).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

from . import identity
from .ops import op_name
from .raw import EXTRA, FUNC, KIND, TID, WHERE

HEAD = 3
TAIL = 5

#: [cell, file, line, what happened ("made", "written", "moved"), op name, times in a row]
Entry = list[Any]

_VERB = {"create": "made", "view": "made", "move": "made", "inplace": "written"}


class History:
    """One tensor's entries: the first ``HEAD``, the last ``TAIL``, a count of those between."""

    __slots__ = ("head", "tail", "between")

    def __init__(self) -> None:
        self.head: list[Entry] = []
        self.tail: deque[Entry] = deque(maxlen=TAIL)
        self.between = 0

    def add(self, entry: Entry) -> None:
        last = self.tail[-1] if self.tail else (self.head[-1] if self.head else None)
        if last is not None and last[:5] == entry[:5]:
            last[5] += 1  # the same line again (a loop): one entry with a count
            return
        if len(self.head) < HEAD:
            self.head.append(entry)
            return
        if len(self.tail) == TAIL:
            self.between += self.tail[0][5]  # the oldest of the tail falls out: counted, not kept
        self.tail.append(entry)

    def __len__(self) -> int:
        """How many things happened to the tensor (entries with their counts)."""
        return sum(e[5] for e in self.head) + self.between + sum(e[5] for e in self.tail)

    def words(self) -> str:
        """``made In[3] line 2 (torch.randn); written In[5] line 4 (add_); … 12 more …; …``"""
        return frozen_words(self.freeze())

    def freeze(self) -> Frozen:
        """The entries as they stand now (later blocks add to this history, and count into its
        last entry): what ``frozen_words`` puts in words, later, as ``words`` would have now."""
        return tuple(map(tuple, self.head)), self.between, tuple(map(tuple, self.tail))


#: ``History.freeze``: (head entries, how many fell between, tail entries)
Frozen = tuple[tuple[tuple[Any, ...], ...], int, tuple[tuple[Any, ...], ...]]


def frozen_words(frozen: Frozen) -> str:
    head, between, tail = frozen
    parts = [_entry_words(e) for e in head]
    if between:
        parts.append(f"… {between:,} more …")
    parts.extend(_entry_words(e) for e in tail)
    return "; ".join(parts)


def _entry_words(e: Entry | tuple[Any, ...]) -> str:
    cell, file, line, verb, op, n = e
    at = f"In[{cell}] line {line}" if cell is not None else f"{(file or '?').rsplit('/', 1)[-1]}:{line}"
    short = op.removeprefix("torch.Tensor.")
    return f"{verb} {at} ({short})" + (f" ×{n:,}" if n > 1 else "")


histories = identity.histories  # tensor id -> its History; pruned with the identity table


def remember(raw: list[Any], live: Iterable[int], place: Any, runs: Any = None) -> None:
    """Add what this block did to each live tensor (one pass over the block's records).
    ``runs``: ``csrc/blockend.c``'s ``history_runs``, which makes the pass in C."""
    wanted = set(live)
    if not wanted:
        return
    if runs is not None:
        # each run of one tensor's records with one (line, function, verb), in the order the loop
        # below meets their first records: one entry, the rest counted into it, as the loop does
        for tid, where, func, verb, n in runs(raw, wanted, _VERB, "moved", "made"):
            cell, fn, line, _src = place(where)
            h = histories.get(tid)
            if h is None:
                h = histories[tid] = History()
            h.add([cell, fn, line, verb, op_name(func) if func is not None else "no visible op", 1])
            if n > 1:
                (h.tail[-1] if h.tail else h.head[-1])[5] += n - 1
        return
    # tid -> (where, func, kind) of its record just added and the entry that took it: a loop's
    # repeats of one line (a parameter written at each step) count into that entry at once
    last: dict[int, tuple[Any, Entry]] = {}
    for r in raw:
        tid = r[TID]
        if tid not in wanted:
            continue
        kind = r[KIND]
        verb = _VERB.get(kind)
        if verb is None:
            continue
        if kind == "move":  # in place (``Module.to``, ``copy_``) moves it, else it makes a new one
            verb = "moved" if r[EXTRA][2] else "made"
        key = (r[WHERE], r[FUNC], verb)
        got = last.get(tid)
        if got is not None and got[0] == key:
            got[1][5] += 1  # what History.add does with the same entry again
            continue
        cell, fn, line, _src = place(r[WHERE])
        func = r[FUNC]
        h = histories.get(tid)
        if h is None:
            h = histories[tid] = History()
        h.add([cell, fn, line, verb, op_name(func) if func is not None else "no visible op", 1])
        last[tid] = (key, h.tail[-1] if h.tail else h.head[-1])


def of(t: Any) -> History | None:
    """The history of a live tensor, if a tracked block recorded one."""
    tid = identity.lookup(t)
    return None if tid is None else histories.get(tid)
