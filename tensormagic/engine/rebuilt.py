"""Tensors rebuilt where no function mode sees it: unpickling, ``torch.load`` and a DataLoader
worker's batch make ``torch.empty(0)`` (seen) and then fill it with ``set_()`` (unseen).

A mixin of ``Tracker`` (``tracker.py``): both engines put the id of a tensor an op made empty,
with no inputs, in ``suspects``; the next op the block records (``_recheck``, called by
``Tracker._created``, ``record_outputs``, ``record_write`` and their compiled twins) or the
block's end (``snapshot.take_snapshot``) looks at each again, and a suspect whose metadata moved with no
record gets a creation record saying what it is now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .describe import NO_VERSION
from .raw import KIND, META, TID

Tensor = torch.Tensor
_EMPTY = (0,)
#: a block keeps at most this many ``suspects``
MAX_SUSPECTS = 256


class RebuiltTensors:
    """Tracker's second look at tensors made empty (it provides ``alive``, ``meta``, ``_storage``)."""

    suspects: set[int]
    tensors: dict[int, tuple[Any, ...]]
    raw: list[tuple[Any, ...]]
    _metas: dict[tuple[Any, ...], tuple[Any, ...]]

    if TYPE_CHECKING:  # Tracker's

        def alive(self, tid: int) -> Tensor | None: ...
        def meta(self, t: Tensor) -> tuple[Any, ...]: ...
        def _intern(self, m: tuple[Any, ...]) -> tuple[Any, ...]: ...
        def _storage(self, t: Tensor, tid: int, new: bool, fresh: bool = False) -> int | None: ...

    def _recheck(self, args: Any, kwargs: Any, written: Any = None, v0: int = NO_VERSION) -> None:
        """The next op after a suspect was made: each suspect still alive is looked at again
        (``recheck``), and all are forgotten.  ``written`` was written by this op, which ran
        already: ``v0`` is its version before.  (``args``, ``kwargs``: the op's, for the compiled
        engine's call.)"""
        for tid in list(self.suspects):
            t = self.alive(tid)
            if t is None:
                self.suspects.discard(tid)
            else:
                self.recheck(tid, t, v0 if t is written else None)

    def recheck(self, tid: int, t: Tensor, version: int | None = None) -> None:
        """A tensor made empty whose version moved with no record (``set_`` by unpickling,
        ``torch.load``, a DataLoader worker's batch): its creation record gets its metadata and
        storage as they are now, since no event in between changed them.  ``version``: its
        version before the op now writing it (the snapshot keeps that one)."""
        self.suspects.discard(tid)
        info = self.tensors.get(tid)
        idx = info[3] if info is not None else None
        if idx is None or idx >= len(self.raw):
            return
        rec = self.raw[idx]
        if rec[TID] != tid or rec[KIND] != "create":
            return
        if version is not None and version == rec[META][5]:
            return  # written now, and by nothing unseen before: this op's record tells the rest
        m = self.meta(t)
        if version is not None and version != m[5]:
            m = (*m[:5], version)
            m = self._metas.get(m) or self._intern(m)
        if m == rec[META]:
            return  # what the record says still holds
        self.raw[idx] = (*rec[:META], m, *rec[META + 1 :])
        self.tensors[tid] = (info[0], m, self._storage(t, tid, new=False, fresh=True), idx)  # type: ignore[index]
