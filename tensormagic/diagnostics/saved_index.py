"""Which live tensors' graphs may hold a storage: the index ``inplace-saved`` checks a write against.

``SavedIndex`` files, from the tracker's raw records, every tensor with a ``grad_fn`` under the
storages its node may have saved (its own, its inputs'); at a write, ``roots`` names the tensors
whose nodes must be inspected.  Filing is lazy (``catch_up``): only a write reads the index, so
the hot path need not call the checks for every op with a ``grad_fn``.

``needs`` is the write gate (``Tracker.write_gate``): a write with no roots needs no check, nor
one whose roots' nodes a backward freed (the gate marks them, as the check would).  The compiled
engine asks the C twin (``_hotpath.SavedIndex``, the same code in ``csrc/saved.c``) before it
calls the record hooks: an optimizer's step writes every parameter after backward freed the
graphs that used them.  Both twins leave the index in the same state.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..engine import identity
from ..engine.raw import create_parts


def grad_fn(t: Any) -> Any:
    """``t.grad_fn``, or None where torch refuses to read it: a view made under no_grad whose
    base was then written (``nn.Embedding(padding_idx=…)`` zeroes ``weight[i]`` so) raises on
    the read.  Its node cannot be inspected, so the in-place check has nothing to say of it."""
    try:
        return t.grad_fn
    except Exception:  # noqa: BLE001 - reading a user tensor must never stop the recording
        return None

try:
    from ..engine import _hotpath
except ImportError:  # built without a C compiler: the Python index below
    _hotpath = None

MAX_ROOTS = 16  # most recent live candidates per written storage
KEEP = 64  # candidates kept per storage between writes
BUDGET = 200_000  # nodes inspected per block, after which the check stops quietly
DATA_GET = "torch.Tensor.data.__get__"

#: node type -> (raw attribute, unpacking attribute) of each tensor it saves (``saved_attrs``)
_saved_attrs: dict[type, tuple[tuple[str, str], ...]] = {}


def saved_attrs(node_type: type) -> tuple[tuple[str, str], ...]:
    """(raw attribute, unpacking attribute) pairs of the tensors a node type saves."""
    attrs = _saved_attrs.get(node_type)
    if attrs is None:
        attrs = tuple((a, "_saved_" + a[len("_raw_saved_"):]) for a in dir(node_type)
                      if a.startswith("_raw_saved_"))  # fmt: skip
        _saved_attrs[node_type] = attrs
    return attrs


class SavedIndex:
    """storage id -> the tids whose ``grad_fn`` may save it, filed from ``tracker.raw``."""

    def __init__(self, raw: list[tuple[Any, ...]], tensors: dict[int, tuple[Any, ...]], ids: dict[int, Any],
                 keep: int = KEEP, max_roots: int = MAX_ROOTS, budget: int = BUDGET) -> None:  # fmt: skip
        self.raw, self.tensors, self.ids = raw, tensors, ids
        self.keep, self.max_roots, self.budget = keep, max_roots, budget
        self.by_storage: dict[int, list[int]] = {}
        self.own_counter: set[int] = set()  # tids with a version counter of their own (.data)
        # tid -> its version when its grad_fn was found freed (backward ran without retain_graph):
        # it saves nothing any more, until an in-place write (a version bump) gives it a new node
        self.freed: dict[int, int] = {}
        self.filed = 0  # the records before this raw index are in the index
        self.spent = 0  # nodes inspected so far (the check adds them)

    def catch_up(self, end: int) -> None:
        """File the records before raw index ``end`` that a write may need: the tensors a graph
        may have saved (results and inputs of ops with a grad_fn) and the views' counters."""
        raw = self.raw
        for i in range(self.filed, min(end, len(raw))):
            r = raw[i]
            kind = r[0]
            if kind == "create":
                if r[3][4] is not None:
                    self._register(r[2], create_parts(r[7])[0])
            elif kind == "view":
                tid, btid = r[2], r[7]
                if btid in self.own_counter or r[1] == DATA_GET:
                    self.own_counter.add(tid)
                if r[3][4] is not None:
                    self._register(tid, ())
            elif kind == "move":
                if not r[7][2] and r[3][4] is not None:  # a copy (not in place) with a grad_fn
                    self._register(r[2], ())
        self.filed = max(self.filed, end)

    def _register(self, tid: int, in_ids: tuple[int, ...]) -> None:
        tensors = self.tensors
        self._file(tensors[tid][2], tid)
        for i in in_ids:
            self._file(tensors[i][2], tid)

    def _file(self, sid: int | None, tid: int) -> None:
        if sid is None:
            return
        lst = self.by_storage.get(sid)
        if not lst:
            self.by_storage[sid] = [tid]
        elif lst[-1] != tid:
            lst.append(tid)
            if len(lst) > 4 * self.keep:
                lst[:] = [c for c in lst if self._alive(c) is not None][-self.keep :]

    def _alive(self, tid: int) -> Any:
        info = self.tensors.get(tid)
        ref = self.ids.get(info[0]) if info is not None else None
        return ref() if ref is not None and ref.tid == tid else None

    def roots(self, idx: int, tid: int, t: Any) -> list[tuple[int, Any]] | None:
        """The (tid, tensor) whose nodes a write of ``t`` (record ``idx``) may have made stale:
        ``t`` itself if it has a grad_fn, then the storage's live candidates, newest first, whose
        node was not found freed since their last write; None when there is nothing to inspect.
        Files the records before ``idx`` first and drops the storage's dead candidates."""
        self.catch_up(idx)
        sid = self.tensors[tid][2]
        cands = self.by_storage.get(sid) if sid is not None else None
        gf = grad_fn(t)
        if (not cands and gf is None) or self.spent > self.budget:
            return None
        roots: list[tuple[int, Any]] = [(tid, t)] if gf is not None else []
        if cands:
            live = []
            get, ids_get = self.tensors.get, self.ids.get
            for c in cands:  # ``_alive`` inline: every write to a parameter walks these
                info = get(c)
                ref = ids_get(info[0]) if info is not None else None
                if ref is not None and ref.tid == c:
                    obj = ref()
                    if obj is not None:
                        live.append((c, obj))
            if len(live) != len(cands) or len(live) > self.keep:
                cands[:] = [c for c, _ in live[-self.keep :]]
            freed = self.freed
            for x in reversed(live[-self.max_roots :]):
                if x[0] != tid and freed.get(x[0]) != x[1]._version:
                    roots.append(x)
            if not roots:
                return None
        return roots

    def needs(self, idx: int, tid: int, t: Any) -> bool:
        """Whether the write of record ``idx`` has anything to inspect (the write gate)."""
        roots = self.roots(idx, tid, t)
        if roots is None:
            return False
        if roots[0][0] == tid:  # the tensor's own grad_fn: on_write walks from it
            return True
        return not self._settle_freed(t, roots)

    def _settle_freed(self, t: Any, roots: list[tuple[int, Any]]) -> bool:
        """on_write's walk when no root's node holds a saved tensor any more (a backward freed the
        graph: an optimizer step writes parameters whose users' graphs are gone).  It would inspect
        each distinct node at depth 0, mark its root freed at the root's version and count the nodes
        as spent; done here: True.  False: on_write must walk, and nothing was changed."""
        if identity.storage_key(t) is None:
            return False  # on_write stops before the walk
        nodes: list[tuple[Any, int, Any]] = []
        for rtid, root in roots:
            node = grad_fn(root)
            if node is None or any(n is node for n, _, _ in nodes):
                continue
            if holds_saved(node) != 0:
                return False
            nodes.append((node, rtid, root))
        for _node, rtid, root in nodes:
            self.freed[rtid] = root._version
        self.spent += len(nodes)
        return True


def saved_data(node: Any, attrs: tuple[tuple[str, str], ...]) -> Iterator[tuple[str, Any]]:
    """(unpacking attribute, data) of each tensor ``node`` still holds for backward.

    ``node._raw_saved_<name>.data`` reads a saved tensor without unpacking it (no version check,
    no exception), and is None once backward freed it."""
    for raw_attr, attr in attrs:
        raw = getattr(node, raw_attr, None)
        for sv in raw if isinstance(raw, (list, tuple)) else (raw,):
            d = sv.data if sv is not None else None
            if d is not None:
                yield attr, d


def holds_saved(node: Any) -> int:
    """A saved tensor still held by ``node`` (as inplace.py's ``_inspect`` finds them): 1 yes,
    0 none (backward freed them all), 2 a node saving nothing (on_write walks below it)."""
    attrs = saved_attrs(type(node))
    if not attrs:
        return 2
    return 1 if next(saved_data(node, attrs), None) is not None else 0


def make_index(tracker: Any, compiled: bool) -> Any:
    """The tracker's index: the C one for the compiled engine where it was built."""
    if compiled and _hotpath is not None:
        return _hotpath.SavedIndex(tracker.raw, tracker.tensors, identity._ids, KEEP, MAX_ROOTS, BUDGET,
                                   _saved_attrs, saved_attrs, identity.storage_id)  # fmt: skip
    return SavedIndex(tracker.raw, tracker.tensors, identity._ids, KEEP, MAX_ROOTS, BUDGET)
