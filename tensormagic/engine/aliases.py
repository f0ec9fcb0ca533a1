"""Which tensors an in-place write also changed: of the tensors on the written storage (the
builders' candidates), only those the records prove it changed.

Two tensors on one storage need not share an element (``x[0]`` and ``x[1]``), and a tensor on it
may be gone by the time of the write (``row`` of an earlier step).  The records say neither
directly; they do say which tensor each view was made from.  A write into a view changes every
tensor it was viewed from, however it was indexed (a view's elements are among its base's); a
write that covers all of a tensor (``add_``, ``zero_``) changes every view made from it, and
from a tensor it is a whole view of (``x.detach()``, ``x.t()``: the same elements).  Such a
tensor is listed when it is alive at the block's end, so alive when it was written.  A tensor
the records do not prove changed is left out: a sibling view, ``as_strided`` (which can reach
past its base), a partial write (``x[0, 0] = -1``) to a tensor's views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..model.events import TensorRef
from .raw import EXTRA, FUNC, KIND, TID

if TYPE_CHECKING:
    from .tracker import Tracker

#: in-place ops that write every element of the tensor they are called on (a view of it is
#: changed wherever it lies); any other in-place op may write only part of it
WHOLE = frozenset({
    "add_", "sub_", "mul_", "div_", "true_divide_", "zero_", "fill_", "copy_", "clamp_", "clamp_min_",
    "clamp_max_", "clip_", "relu_", "neg_", "abs_", "pow_", "sqrt_", "rsqrt_", "exp_", "log_",
    "sigmoid_", "tanh_", "reciprocal_", "square_", "sign_", "floor_", "ceil_", "round_", "trunc_",
    "normal_", "uniform_", "bernoulli_", "exponential_", "random_", "addcmul_", "addcdiv_", "lerp_",
    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__idiv__",
})  # fmt: skip
#: view ops whose view holds every element of its base, each once (a reshaping, not a selection)
WHOLE_VIEWS = frozenset({
    "detach", "data", "view", "view_as", "reshape", "reshape_as", "t", "T", "mT", "transpose",
    "swapaxes", "swapdims", "permute", "movedim", "moveaxis", "flatten", "unflatten", "squeeze",
    "unsqueeze", "alias", "contiguous",
})  # fmt: skip


class AliasProof:
    """``proof(i)``: the ids of the tensors the in-place record ``raw[i]`` may be said to have
    changed (both builders keep, of their candidates, only these).  The records' view links
    are read once, at the first call; ``alive``: the ids of the tensors alive at the block's end."""

    def __init__(self, raw: list[tuple[Any, ...]], alive: set[int]) -> None:
        self._raw = raw
        self._alive = alive
        self._base_of: dict[int, int] | None = None
        self._whole_of: dict[int, int] = {}  # a whole view -> its base
        self._views_of: dict[int, list[int]] = {}
        self._cache: dict[tuple[int, bool], set[int]] = {}

    def __call__(self, idx: int) -> set[int]:
        if self._base_of is None:
            self._links()
        r = self._raw[idx]
        written, op = r[TID], _short(r[FUNC] or "")
        whole = op in WHOLE or op.startswith("_foreach_")
        # the same for every write of one tensor and kind: a loop writing one base thousands of
        # times walks its views once (the builders keep, of these, the views made by then)
        got = self._cache.get((written, whole))
        if got is None:
            out = set(self._chain(written, self._base_of))  # type: ignore[arg-type]
            if whole:
                top = ([written, *self._chain(written, self._whole_of)])[-1]
                out.add(top)
                out.update(self._below(top))
            out.discard(written)
            got = self._cache[(written, whole)] = out & self._alive
        return got

    def _links(self) -> None:
        self._base_of = {}
        for r in self._raw:
            if r[KIND] == "view" and r[TID] not in self._base_of and not (r[FUNC] or "").endswith("as_strided"):
                view, base = r[TID], r[EXTRA]
                self._base_of[view] = base
                self._views_of.setdefault(base, []).append(view)
                if _short(r[FUNC] or "") in WHOLE_VIEWS:
                    self._whole_of[view] = base

    @staticmethod
    def _chain(tid: int, base_of: dict[int, int]) -> list[int]:
        """The tensors ``tid`` was viewed from, nearest first."""
        out: list[int] = []
        b = base_of.get(tid)
        while b is not None and b not in out and b != tid:
            out.append(b)
            b = base_of.get(b)
        return out

    def _below(self, tid: int) -> set[int]:
        """The views made from ``tid``, directly or through other views."""
        out: set[int] = set()
        todo = list(self._views_of.get(tid, ()))
        while todo:
            v = todo.pop()
            if v not in out and v != tid:
                out.add(v)
                todo.extend(self._views_of.get(v, ()))
        return out


def _short(op: str) -> str:
    """``add_`` for ``torch.Tensor.add_``; ``data`` for the getter ``torch.Tensor.data.__get__``."""
    parts = op.rsplit(".", 2)
    return parts[-2] if parts[-1] == "__get__" and len(parts) > 1 else parts[-1]


def storages_of(tr: Tracker) -> dict[int, list[tuple[int, list[Any]]]]:
    """Storage id -> its tensors, in the tracker's order: one pass, instead of one per write
    (``csrc/snapshots.c``'s ``by_storage`` is the compiled twin)."""
    out: dict[int, list[tuple[int, list[Any]]]] = {}
    for tid, info in tr.tensors.items():
        if info[2] is not None:
            out.setdefault(info[2], []).append((tid, info))
    return out


def aliases(tr: Tracker, refs: Any, state: dict[int, Any], tid: int, idx: int,
            by_storage: dict[int, list[tuple[int, list[Any]]]], proof: AliasProof) -> tuple[TensorRef, ...]:  # fmt: skip
    """The other tensors on the written storage, as they were at record ``idx``, that the write
    is proven to have changed (``AliasProof``; ``csrc/snapshots.c``'s ``tmh_aliases`` is the
    compiled twin); ``refs``: the builder's ``_Refs``."""
    sid = tr.tensors[tid][2]
    if sid is None:
        return ()
    out = []
    changed: set[int] | None = None
    for other, info in by_storage.get(sid, ()):
        if other != tid and other not in tr.merged:
            first = info[3]
            if first is None or first <= idx:
                if changed is None:
                    changed = proof(idx)
                if other in changed:
                    out.append(refs.ref(other, state.get(other, info[1])))
    return tuple(out)
