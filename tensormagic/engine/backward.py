"""What a backward call records: the leaves that receive gradients, the gradients it fills in.

A mixin of ``Tracker`` (``tracker.py``): ``mode.TrackMode`` calls ``prepare_backward`` before
``backward`` / ``autograd.grad`` runs and ``finish_backward`` after it, on the tracker.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch

from . import describe, identity
from .autograd import leaves_of
from .ops import op_name

Tensor = torch.Tensor


class BackwardRecords:
    """Tracker's backward records (it provides ``see``, ``meta``, ``_new``, ``_add``, ``grad_extra``)."""

    tensors: dict[int, tuple[Any, ...]]
    raw: list[tuple[Any, ...]]
    backwards: list[int]
    backward_spans: list[tuple[int, int, str, Any]]
    preexisting: set[int]
    retained: list[Any]  # weak references to the tensors retain_grad() was called on

    if TYPE_CHECKING:  # Tracker's, which these records are made with

        def see(self, t: Tensor, where: Any) -> int: ...
        def meta(self, t: Tensor) -> tuple[Any, ...]: ...
        def grad_extra(self, ltid: int) -> tuple[Any, ...]: ...
        def _new(self, t: Tensor, *, alias: bool) -> tuple[int, Any]: ...
        def _add(self, kind: str, func: Any, tid: int, meta: Any, where: Any, extra: Any,
                 objs: tuple[Tensor, ...]) -> None: ...  # fmt: skip

    def prepare_backward(self, func: Any, args: Any, kwargs: Any) -> tuple[Any, ...]:
        """Before backward runs: the leaves that will receive gradients and what they held."""
        is_grad = op_name(func) == "torch.autograd.grad"
        if is_grad:
            roots = args[0] if args else kwargs.get("outputs")
            wrt = args[1] if len(args) > 1 else kwargs.get("inputs")
        else:
            roots = args[0] if args else kwargs.get("tensors")
            wrt = kwargs.get("inputs")
        roots_l = [roots] if isinstance(roots, Tensor) else list(roots or ())
        if wrt is not None:
            if isinstance(wrt, Tensor):
                leaves = [wrt]
            elif isinstance(wrt, dict):  # inputs=dict(model.named_parameters()): torch takes the values
                leaves = list(wrt.values())
            else:
                leaves = list(wrt)
                if not isinstance(wrt, (list, tuple)) and kwargs.get("inputs") is wrt:
                    # an iterator, read here: torch would find it empty (Tensor.backward hands it
                    # on as given); torch gets the same tensors, as the tuple it makes of them
                    kwargs["inputs"] = tuple(leaves)
        else:
            leaves = self._leaves_of(roots_l)
        held = self._held_grads(leaves)
        # non-leaves that keep their gradient (retain_grad): their .grad as it is now, to see after
        # the call which ones it filled (a retained tensor outside this graph keeps its old one)
        kept = [] if is_grad else [(t, _grad_state(t)) for r in self.retained if (t := r()) is not None]
        return is_grad, roots_l, leaves, [g is not None and _nonzero(g) for g in held], kept

    def finish_backward(self, func: Any, prep: tuple[Any, ...], result: Any, where: Any) -> None:
        is_grad, roots_l, leaves, prev_nonzero, kept = prep
        grads: list[tuple[Any, ...]] = []
        if kept:
            listed = {id(lf) for lf in leaves}  # retain_grad() on a leaf: already listed
            filled = [(t, before) for t, before in kept
                      if id(t) not in listed and _filled(before, _grad_state(t, values=False))]  # fmt: skip
            if filled:
                leaves = [*leaves, *(t for t, _ in filled)]
                prev_nonzero = [*prev_nonzero, *(before is not None and before[2] for _, before in filled)]
        if is_grad:
            for lf, g in zip(leaves, result):
                if g is None:
                    continue
                ltid = self.see(lf, where)
                gtid, gmeta = self._new(g, alias=False)
                self._add("create", func, gtid, gmeta, where, (ltid,), (g,))
                grads.append((ltid, self.meta(lf), False, gtid))
        else:
            grads = self._grads_filled(func, leaves, prev_nonzero, where)
        if roots_l:
            root = roots_l[0]
            rtid = self.see(root, where)
            n = len(self.raw)
            self._add("backward", func, rtid, self.meta(root), where, tuple(grads), (root,))
            if len(self.raw) > n:
                self.backwards.append(n)

    def _leaves_of(self, roots: list[Any]) -> list[Any]:
        """``autograd.leaves_of``: the compiled engine puts its C twin here while the block runs
        (``_hotpath.leaves_of``; the walk cost ~57k instructions a backward on an MLP in Python)."""
        return leaves_of(roots)

    def _held_grads(self, leaves: list[Any]) -> list[Any]:
        """Each leaf's ``.grad`` before backward runs (``_held_grad``); in C during a compiled block
        (``_hotpath.held_grads``)."""
        return [_held_grad(lf) for lf in leaves]

    def note_backward_span(self, start: int, func: Any, where: Any) -> None:
        """The records from ``start`` on were made while the autograd engine of the backward call
        ``func`` (at ``where``) ran: by its hooks, its Python ``Function.backward`` methods
        (``backward_run.py``).  The build notes it on their events.  One entry per such call,
        never more than the records it covers."""
        self.backward_spans.append((start, len(self.raw), op_name(func), where))

    def _grads_filled(self, func: Any, leaves: list[Any], prev_nonzero: list[bool], where: Any) -> list[tuple[Any, ...]]:
        """After backward(): for each leaf holding a gradient now, the gradient's create record when
        it is new (its first sight) and the backward record's entry (leaf id, leaf metadata,
        accumulated, gradient id).  The compiled engine runs this loop in C (``Hot.grads_filled``):
        an MLP's step fills four gradients."""
        grads: list[tuple[Any, ...]] = []
        for lf, was in zip(leaves, prev_nonzero):
            g = _held_grad(lf)
            if g is None:
                continue
            ltid = self.see(lf, where)
            gtid = identity.lookup(g)
            if gtid is not None and gtid not in self.tensors and gtid in self.preexisting:
                gtid = self.see(g, where)  # left from before the block (an earlier cell): not new
            elif gtid is None or gtid not in self.tensors:
                gtid, gmeta = self._new(g, alias=False)
                self._add("create", func, gtid, gmeta, where, self.grad_extra(ltid), (g,))
            grads.append((ltid, self.meta(lf), bool(was), gtid))
        return grads


def _held_grad(t: Tensor) -> Tensor | None:
    # reading .grad of a non-leaf warns; only leaves and retain_grad tensors have one.  Read
    # through describe: a subclass's __torch_function__ never runs, a failed read is "none".
    if not (describe.flag(t, "is_leaf") or describe.flag(t, "retains_grad")):
        return None
    try:
        return describe.attr(t, "grad")  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001
        return None


#: non-leaf tensors a block follows for the gradient retain_grad() keeps (bounded)
MAX_RETAINED = 10_000


def note_retained(tr: Any, func: Any, args: Any, where: Any) -> None:
    """``Tracker.call_watch``'s entry for ``Tensor.retain_grad``: the tensor is followed, so that a
    backward that fills its ``.grad`` says so (``prepare_backward``)."""
    if args and isinstance(args[0], Tensor) and len(tr.retained) < MAX_RETAINED:
        tr.retained.append(weakref.ref(args[0]))


def _grad_state(t: Tensor, values: bool = True) -> tuple[Any, int, bool] | None:
    """What ``t.grad`` holds: (a weak reference to it, its version, whether it holds values, read
    only where ``values`` asks: it reduces the gradient), or None.  A weak reference, not an id: a
    gradient replaced by a new one is freed, and the new one may take its address."""
    g = _held_grad(t)
    if g is None:
        return None
    try:
        v = int(describe.attr(g, "_version"))
    except Exception:  # noqa: BLE001 - an inference tensor keeps no version counter
        v = -1
    return weakref.ref(g), v, values and _nonzero(g)


def _filled(before: tuple[Any, int, bool] | None, now: tuple[Any, int, bool] | None) -> bool:
    """Whether a ``.grad`` went from ``before`` to ``now`` (``_grad_state``): a new tensor, or the
    same one written."""
    if now is None:
        return False
    return before is None or before[0]() is not now[0]() or before[1] != now[1]


def _nonzero(g: Tensor) -> bool:
    """Whether a leftover gradient holds values; never synchronises a GPU (assumed non-zero),
    nor runs a subclass's code (a tensor that is not a plain strided one is assumed non-zero)."""
    try:
        if type(g) not in describe.PLAIN or describe.attr(g, "layout") != torch.strided:
            return True
        if g.device.type == "cpu":
            with torch.no_grad():
                return bool(g.ne(0).any())
    except Exception:  # noqa: BLE001 - what cannot be read is assumed to hold values
        pass
    return True
