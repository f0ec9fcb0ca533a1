"""Diagnostic ``inplace-saved``: an in-place write to memory an autograd node saved for backward.

No ``saved_tensors_hooks`` (they switch off autograd's own version check and change results).
Instead, at each in-place write to a storage that a live graph may hold, the few nodes that
can have saved it are inspected: nodes of the ops that produced the written tensor or took a
tensor on that storage as input (found through an index kept on the tracker's records), and a
few levels below them.  ``node._raw_saved_<name>.data`` reads a saved tensor without unpacking
it (no version check, no exception, ``None`` once backward freed it); only a saved tensor on
the written storage is unpacked, and autograd's own error for that unpack says whether this
very write made it stale (``expected version`` equal to the version before the write).  A write
through ``.data`` bumps a counter of its own: the unpack succeeds and backward would silently
use the new values, so that is reported too.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch

from ..engine import identity
from ..engine.autograd import node_name
from ..engine.ops import op_name
from .context import Context, Finding
from .saved_index import grad_fn, make_index, saved_attrs, saved_data

MAX_DEPTH = 3  # levels below a candidate's grad_fn: composite ops and in-place chains
MAX_NODES = 96  # nodes inspected per write
_STALE = "modified by an inplace operation"
_VERSIONS = re.compile(r"is at version (\d+); expected version (\d+)")


class SavedWrites:
    """Detection state for one block: which tensors' graphs may hold which storage."""

    def __init__(self, tracker: Any, add: Callable[..., Finding], *, compiled: bool = False) -> None:
        self.tr = tracker
        self.add = add
        self.index = make_index(tracker, compiled)
        self.own_counter = self.index.own_counter
        self.freed = self.index.freed
        self._reported: set[Any] = set()  # keys reported by the write being checked
        self.backward_errors: list[tuple[int, Any, str]] = []  # (raw length then, where, message)

    def on_write(self, idx: int, tid: int, t: Any, v0: int) -> None:
        roots = self.index.roots(idx, tid, t)
        if roots is None:
            return
        key = identity.storage_key(t)
        if key is None:
            return
        gf = grad_fn(t)
        # In grad mode the write gave the tensor a new grad_fn, whose saved values are current.
        own = gf if gf is not None and torch.is_grad_enabled() else None
        self._reported = set()
        job = (key, v0, tid, idx, [c for c, _ in roots])
        seen: set[int] = set()
        keep: list[Any] = []  # hold the nodes while walking, so that id() is not reused
        for rtid, root in roots:
            node = grad_fn(root)
            if node is None or id(node) in seen:
                continue
            stack = [(node, 0)]
            while stack and len(seen) < MAX_NODES:
                node, depth = stack.pop()
                if id(node) in seen:
                    continue
                seen.add(id(node))
                keep.append(node)
                freed = node is not own and self._inspect(node, rtid, job)
                if freed and depth == 0 and rtid != tid:
                    self.freed[rtid] = root._version
                if depth < MAX_DEPTH and not freed:
                    stack.extend((n, depth + 1) for n, _ in node.next_functions if n is not None)
        self.index.spent += len(seen)

    def _inspect(self, node: Any, rtid: int, job: tuple[Any, ...]) -> bool:
        """Report a saved tensor on the written storage; True when backward already freed the node."""
        attrs = saved_attrs(type(node))
        if not attrs:
            return False
        key, v0, tid = job[0], job[1], job[2]
        held = False
        for attr, d in saved_data(node, attrs):
            held = True
            # the storage's address without building a Python storage object (~10 µs each)
            if identity.storage_key(d) != key:
                continue  # another storage, or none (sparse, nested): not what was written
            try:
                getattr(node, attr)
            except RuntimeError as e:
                msg = str(e)
                if _STALE not in msg:
                    continue
                m = _VERSIONS.search(msg)
                if m is not None and int(m.group(2)) != v0:
                    continue  # stale already, since an earlier write (reported there)
                self._report("stale", node, attr, rtid, job)
            else:
                if tid in self.own_counter:
                    self._report("silent", node, attr, rtid, job)
        return not held

    def _report(self, mode: str, node: Any, attr: str, rtid: int, job: tuple[Any, ...]) -> None:
        tid, idx, cands = job[2], job[3], job[4]
        tensors = self.tr.tensors
        ntype = type(node).__name__  # metadata keeps the grad_fn's class name
        saver = next((c for c in (rtid, tid, *cands) if c in tensors and tensors[c][1][4] == ntype
                      and (tensors[c][3] is None or tensors[c][3] < idx)), None)  # fmt: skip
        raw = self.tr.raw
        made_at = raw[tensors[saver][3]][4] if saver is not None and tensors[saver][3] is not None else None
        key = (node_name(node), made_at)
        if key in self._reported:
            return  # one node saving the tensor twice (y = w * w), or two nodes of one op
        self._reported.add(key)
        self.add("inplace-saved", raw[idx][4], (tid, saver) if saver is not None else (tid,), key=key,
                 latest=True, mode=mode, node=key[0], attr=attr[len("_saved_"):], idx=idx, root=rtid,
                 saver=saver)  # fmt: skip

    def backward_failed(self, where: Any, msg: str) -> None:
        if _STALE in msg:
            self.backward_errors.append((len(self.tr.raw), where, msg))


def message(ctx: Context, f: Finding, backward_idx: list[int], failures: list[tuple[int, Any, str]]
            ) -> tuple[str, str, tuple[str, ...], tuple[int | None, ...]] | None:  # fmt: skip
    """The words for one finding, or None when nothing can go wrong any more."""
    d = f.data
    idx, tid, saver = d["idx"], f.tids[0], d["saver"]
    failed = next(((ln, w) for ln, w, _m in failures if ln > idx), None)
    later_backward = any(b > idx for b in backward_idx)
    if failed is None and not later_backward and not (ctx.alive(d["root"]) or ctx.alive(tid)):
        return None  # the graph died without backward: the stale value was never used
    op = ctx.op_at(idx)
    meth = op_name(ctx.raw[idx][1]).rsplit(".", 1)[-1]
    base = _base_tid(ctx, tid)
    saved_name = ctx.label(saver if d["attr"] == "result" and saver is not None else base)
    made = ctx.created(saver)
    by = f"{made[0]} ({made[2]})" if made is not None else d["node"]
    lines: list[int | None] = [made[1] if made is not None else None]
    through = ""
    if tid != base:
        view = ctx.tensor(tid)
        if view is not None and view.names:
            through = f" through {view.names[0]}"
        elif d["mode"] == "silent":
            through = " through .data"
        else:
            through = " through a view"
    what = op if meth == "__setitem__" else f"the in-place {op}"
    head = f"{what} overwrote {saved_name}{through}, which {by} saved for backward ({d['node']})"
    if d["mode"] == "silent":
        text = (f"{head}. Writes through .data bypass autograd's check: backward will run without error "
                "and silently use the new values, giving wrong gradients.")
    elif failed is not None:
        lines.append(ctx.line(failed[1]))
        text = (f"{head}; backward() at {ctx.where_words(failed[1])} failed because of it "
                "('one of the variables needed for gradient computation has been modified by an "
                "inplace operation').")
    else:
        text = (f"{head}; a later backward() through this graph will fail with 'one of the variables "
                "needed for gradient computation has been modified by an inplace operation'.")
    text = text[0].upper() + text[1:]
    if d["mode"] == "silent":
        fix = "never write through .data to a tensor autograd uses; write to a clone, or out of place"
    elif meth.endswith("_") and not meth.endswith("__"):
        out_of_place = meth[:-1]
        fix = (f"use the out-of-place {out_of_place}() ({saved_name} = {saved_name}.{out_of_place}(…)), "
               f"write to a copy ({saved_name} = {saved_name}.clone() first), or run backward before "
               f"modifying {saved_name}")
    else:
        fix = (f"write to a copy ({saved_name} = {saved_name}.clone() first, or build the new values out of "
               f"place, e.g. with torch.where), or run backward before modifying {saved_name}")
    names = ctx.names((base, tid, saver))
    return text, fix, names, tuple(lines)


def _base_tid(ctx: Context, tid: int) -> int:
    """The tensor a view (``.data``, slice) was taken from, followed to its root."""
    seen = {tid}
    t = ctx.tensor(tid)
    while t is not None and t.created is not None and t.created.kind == "view" and t.created.base:
        nxt = int(t.created.base.id[1:])
        if nxt in seen:
            break
        seen.add(nxt)
        tid, t = nxt, ctx.tensor(nxt)
    return tid


def fallback(ctx: Context, where: Any, msg: str) -> tuple[str, str]:
    """A backward that failed on a write this block did not see (made before it, or unlinked)."""
    m = re.search(r"which is output (\d+) of (\w+)", msg)
    by = f"{m.group(2)}" if m else "an earlier op"
    text = (f"backward() failed: a tensor that {by} saved for backward was modified in place "
            "afterwards (the write happened outside this tracked block, or through a tensor "
            "tensormagic could not link).")
    fix = "find the in-place op (x.op_(…), x[...] = …, +=) on that tensor and make it out of place"
    return text, fix
