"""What the block's end reads before it builds events: the snapshot of names (namespace, module
parameters, ``.grad``, each line's targets), places (file and line to cell and line), the live
tensors' metadata and provenance, and the tensors it could read only in part."""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping

import torch

from ..model.events import NO_VERSION
from ..model.recording import Recording
from . import describe, history, identity, naming, statements
from .autograd import capture, capture_compiled
from .bound_names import LineNames, line_results, name_live
from .modules import ROOT_MARK, resolve_path
from .operands import operand_name
from .ops import op_name
from .raw import EXTRA, FUNC, LASTI, TID, WHERE
from .source import Locator, source_line
from .tracker import Tracker

_UNSET = object()


class Snapshot:
    """What ``build`` takes when the block ends, for the events made later."""

    def __init__(self, place: Any, names: dict[int, tuple[str, ...]], roots: dict[str, str],
                 final: dict[int, Any], lines: LineNames, failed: bool) -> None:  # fmt: skip
        self.place = place
        self.names = names  # tensor id -> names; the lines' names are added with the events
        self.roots = roots
        self.final = final  # tensor id -> metadata of tensors still alive when the block ended
        self.lines = lines  # what each line binds (its names are found with the events)
        self.failed = failed
        self.before: dict[int, Any] = {}  # tid -> provenance of tensors made before the block
        #: tid -> (the autograd.Function, its grad_fn's name) for a tensor an op made with no
        #: grad_fn that a custom Function's ``apply`` then gave one (no op the mode sees)
        self.applied: dict[int, tuple[str, str]] = {}

    def name_dead(self, raw: list[Any]) -> None:
        """A tensor gone by the block's end keeps the name its line gave it."""
        names = self.names
        for tid, name in line_results(raw, self.lines, failed=self.failed):
            if tid not in names:
                names[tid] = name


def placer(locator: Locator | None) -> Any:
    where_cache: dict[Any, tuple[int | None, str | None, int | None, str | None]] = {}

    def place(where: Any) -> tuple[int | None, str | None, int | None, str | None]:
        p = where_cache.get(where)
        if p is None:
            if where is None:
                p = (None, None, None, None)
            else:
                fn, ln = where
                loc = locator(fn) if locator is not None else None
                src = source_line(fn, ln)
                src = src.strip() if src else None
                p = (loc[0], None, ln + loc[1], src) if loc is not None else (None, fn, ln, src)
            where_cache[where] = p
        return p

    place.cache = where_cache  # type: ignore[attr-defined]  # read by the compiled builder
    return place


def take_snapshot(tr: Tracker, rec: Recording, *, namespace: Mapping[str, Any] | None,
                  locator: Locator | None, compiled: bool = False) -> Snapshot:  # fmt: skip
    """What the block's end reads now (``compiled``: its passes over the records and tables
    run in ``csrc/blockend.c``, the engine's choice; tests compare both)."""
    hot = _compiled() if compiled else None
    bound = list(naming.named_tensors(namespace)) if namespace is not None else []  # one walk
    tr.close_compiled(final=True)  # compiled calls' outputs, before anything looks for unseen tensors
    if tr.internal_error is None:  # after a stop, every later tensor would look "unseen"
        _add_unseen_bound(tr, bound)
    place = placer(locator)
    # Names: namespace first; a tensor gone by now keeps its line's assignment target.
    names: dict[int, tuple[str, ...]] = {tid: tuple(v) for tid, v in naming.names_by_id(bound).items()}
    raw = tr.raw

    for tid in list(tr.suspects):  # made empty, maybe filled by an unseen set_(): look again
        t = tr.alive(tid)
        if t is not None:
            tr.recheck(tid, t)
    roots = tr.modules.root_names(lambda m: naming.module_name(namespace, m), () if namespace is None else namespace)
    _name_local_params(tr, names, roots)
    _name_seen_locals(tr, names, () if namespace is None else namespace)
    grad_names = partial(hot.grad_names, tr.raw, tr.backwards, names, AUTOGRAD_GRAD) if hot is not None \
        else partial(_grad_names, tr, names)  # fmt: skip
    grad_names()
    # the names that hold a tensor at the block's end (``loss``), for ``loss.backward()``'s: names
    # only, as the events are built later and the namespace's tensors must not stay alive till then
    held = {n for n, _t in bound if n.isidentifier()} if tr.backwards else set()
    lines = _line_names(tr, place, namespace, roots, held)
    _called_first(lines, names)
    live = tr.live_tensors()
    name_live(raw, lines, names, [(tid, tr.tensors[tid][3]) for tid, _ in live if tid not in names],
              failed=rec.failed)  # fmt: skip
    grad_names()  # again: a leaf only its line names (a function's local) names its gradients too
    final: dict[int, Any] = {}
    applied: dict[int, tuple[str, str]] = {}
    for tid, t in live:
        m = final[tid] = tr.meta(t)
        info = tr.tensors[tid]
        if m[4] is not None and info[1][4] is None and info[3] is not None:
            by = _applied_by(t)
            if by is not None:
                applied[tid] = (by, m[4])
        _remember_provenance(tid, info[3], raw, place, rec.cell)
    if tr.keep_history:  # what this block did to each live tensor, for later cells' %tensorinfo
        history.remember(raw, final, place, runs=None if hot is None else hot.history_runs)
    if hot is not None:
        rec.graphs = capture_compiled(hot, [(f"t{tid}", t) for tid, t in live], names)
    else:
        rec.graphs = capture([(f"t{tid}", t) for tid, t in live], lambda t: _name_of(t, names))
    rec.unreadable = _unreadable(tr, live, hot)
    # tensors the block met but did not make: where an earlier tracked block made them, if one did
    # (read now: the provenance of tensors that die is dropped)
    if hot is not None:
        before = hot.made_before(tr.tensors, identity.provenance)
    else:
        before = {tid: identity.provenance.get(tid) for tid, info in tr.tensors.items() if info[3] is None}
    snap = Snapshot(place, names, roots, final, lines, rec.failed)
    snap.before = before
    snap.applied = applied
    rec.before = {f"t{tid}": made for tid, made in before.items()}
    if tr.keep_history:  # each live tensor's history as it stands now, kept for the log and later views
        # copied now, put in words when first read (a terminal's summary line never reads them)
        if hot is not None:
            frozen = hot.freeze_histories(final, history.histories, history.History)
        else:
            frozen = {tid: h.freeze() for tid in final if (h := history.histories.get(tid)) is not None}
        rec._pending_histories = lambda _rec: {f"t{tid}": history.frozen_words(f) for tid, f in frozen.items()}
    return snap


AUTOGRAD_GRAD = "torch.autograd.grad"


def _grad_names(tr: Tracker, names: dict[int, tuple[str, ...]]) -> None:
    """Each gradient a backward filled in is ``<leaf>.grad`` (``model.0.weight.grad``): with
    ``zero_grad(set_to_none=True)`` every step's backward makes a new one.  ``autograd.grad``'s
    gradients are returned, not stored in ``.grad``: they are named by their line.
    (``csrc/blockend.c``'s ``grad_names`` is the compiled twin.)"""
    raw = tr.raw
    for idx in tr.backwards:
        if idx >= len(raw) or raw[idx][FUNC] == AUTOGRAD_GRAD:
            continue
        for ltid, _lmeta, _acc, gtid in raw[idx][EXTRA]:
            leaf = names.get(ltid)
            if leaf and gtid not in names:
                names[gtid] = (f"{leaf[0]}.grad",)


def _line_names(tr: Tracker, place: Any, namespace: Mapping[str, Any] | None, roots: dict[str, str],
                held: set[str] | None = None) -> LineNames:  # fmt: skip
    """Every line the block ran is decided now (the namespace may change later): the names it
    binds that hold tensors, the value the namespace holds for each, the function it calls."""
    raw = tr.raw
    targets: dict[Any, tuple[str, ...] | None] = {}
    functions: dict[Any, str | None] = {}
    values: dict[Any, str | None] = {}
    by_name: dict[str, list[Any]] = {}
    # dict.fromkeys: a line with a lambda on it is a place of two code objects; counted twice,
    # its target looked bound on two lines and every run's leftovers took its name
    for where in dict.fromkeys(tr.lines.places()):
        src = place(where)[3]
        functions[where] = statements.called_function(src)
        values[where] = statements.assigned_value(src)
        got = statements.assigned_names(src)
        # ``lin = nn.Linear(…)`` binds a module, ``step`` an int: neither names a tensor
        if got is not None and namespace is not None:
            got = tuple(n for n in got if not (n in namespace and not isinstance(namespace[n], torch.Tensor)))
        if got and statements.binds_object(src):  # ``lin = nn.Linear(4, 3)`` in a function: the names it
            # binds that the namespace cannot show are no tensor's
            got = tuple(n for n in got if namespace is not None and isinstance(namespace.get(n), torch.Tensor))
        targets[where] = got or None
        for n in got or ():
            by_name.setdefault(n, []).append(where)
    bound: dict[Any, list[tuple[str, int | None]]] = {}
    for n, wheres in by_name.items():
        v = namespace.get(n) if namespace is not None else None
        if not isinstance(v, torch.Tensor):
            continue
        tid = identity.lookup(v)
        info = tr.tensors.get(tid) if tid is not None else None
        idx = info[3] if info is not None else None
        if idx is not None and idx < len(raw) and raw[idx][TID] == tid and raw[idx][WHERE] in wheres:
            bound.setdefault(raw[idx][WHERE], []).append((n, idx))
        elif len(wheres) == 1 and info is not None and tid not in tr.preexisting:
            # the line bound a tensor no op of its own made: ``p = nn.Parameter(torch.randn(3))``
            # (no op), ``out = net(torch.randn(2, 4))`` with ``net`` the user's own module or
            # function (made on its ``return`` line).  Its temporaries are not ``p`` or ``out``.
            bound.setdefault(wheres[0], []).append((n, None))
    return LineNames(targets, bound, functions, module_resolver(roots), tr.lines.expression,
                     tr.lines.at_outer_call, values, tr.modules.outputs, _backward_calls(tr),
                     _backward_self(tr.lines.expression, held or set()), tr.modules.packed)  # fmt: skip


_BACKWARD = "torch.Tensor.backward"


def _called_first(lines: LineNames, names: dict[int, tuple[str, ...]]) -> None:
    """A tensor the namespace holds under several names (``out['loss']``, ``loss``) is said by
    the one ``loss.backward()`` called it by, as the steps whose loss is gone are
    (``LineNames.called_name``): one name for every step's loss."""
    for tid in lines.called:
        held = names.get(tid)
        if held is not None and len(held) > 1:
            first = lines.called_name(tid)
            if first in held and held[0] != first:
                names[tid] = (first, *(n for n in held if n != first))


def _backward_calls(tr: Tracker) -> dict[int, tuple[Any, int, int | None]]:
    """Tensor id -> (line, offset) of a ``.backward()`` called on it from a line the tracker
    placed, and the raw index of the record that made it (None: made before the block)."""
    out: dict[int, tuple[Any, int, int | None]] = {}
    raw, tensors = tr.raw, tr.tensors
    for idx in tr.backwards:
        r = raw[idx] if idx < len(raw) else None
        if r is not None and r[FUNC] == _BACKWARD and type(r[WHERE]) is tuple and isinstance(r[LASTI], int):
            info = tensors.get(r[TID])
            out.setdefault(r[TID], (r[WHERE], r[LASTI], info[3] if info is not None else None))
    return out


def _backward_self(expression: Any, held: set[str]) -> Any:
    """(line, offset) -> ``loss`` where the call there is ``loss.backward()`` and ``loss`` holds a
    tensor in the namespace at the block's end (``held``: so the name was a tensor's, not a
    wrapper object's with a ``backward`` of its own).  A loss a model made in an earlier step of
    a loop (``loss = out.loss`` runs no op) is then ``loss``, as the source calls it."""

    def name(where: Any, lasti: int) -> str | None:
        text = expression(where, lasti)
        if text is None:  # Python 3.10 (no column positions): the line's one ``.backward()`` call
            got = statements.backward_receiver(source_line(*where))
        else:
            got = operand_name(text, _BACKWARD, 1, 0)
        return got if got in held else None

    return name


MAX_UNREADABLE = 100  # tensors a recording explains by name; past it, the count says the rest


def _compiled() -> Any:
    from . import _hotpath

    return _hotpath


def _unreadable(tr: Tracker, live: list[tuple[int, Any]], hot: Any = None) -> dict[str, str]:
    """Tensor id -> what its snapshots could not say and why (``describe.explain``), for tensors
    the tracker read only in part: inference, nested, unreadable subclasses.  The block's
    interned snapshots are looked at first: most blocks have none of these and pay one pass
    (``hot``: the compiled one)."""
    if hot is not None:
        odd = hot.partial_metas(tr._metas, NO_VERSION, describe.partial)
    else:
        odd = {m for m in tr._metas if describe.partial(m)}
    if not odd:
        return {}
    alive = dict(live)
    out: dict[str, str] = {}
    for tid, info in tr.tensors.items():
        if info[1] in odd and tid not in tr.merged:
            if len(out) == MAX_UNREADABLE:
                out["..."] = "more tensors like these"
                break
            out[f"t{tid}"] = describe.explain(info[1], alive.get(tid))
    return out


def _remember_provenance(tid: int, idx: int | None, raw: list[Any], place: Any, running: int | None) -> None:
    """Where a live tensor was made, for ``%tensorinfo`` in later cells; ``running``: the cell
    the block ran in, kept where the code that made it is another cell's."""
    if idx is None or idx >= len(raw) or tid in identity.provenance or raw[idx][TID] != tid:
        return  # made before this block, or its creation was folded into a count
    cell, fn, line, src = place(raw[idx][WHERE])
    func = raw[idx][FUNC]
    op = op_name(func) if func is not None else (statements.unseen_maker(src) or NO_OP)
    identity.provenance[tid] = (cell, fn, line, op)
    if cell is not None and running is not None and cell != running:
        identity.ran_in[tid] = running


def module_resolver(roots: dict[str, str]) -> Any:
    """A record's module path -> its dotted name under the namespace's roots (cached per path;
    ``.cache`` is the cache, read by the compiled builder)."""
    paths: dict[str | None, str | None] = {}

    def module_of(path: str | None) -> str | None:
        got = paths.get(path, _UNSET)
        if got is _UNSET:
            got = paths[path] = resolve_path(path, roots)
        return got  # type: ignore[return-value]

    module_of.cache = paths  # type: ignore[attr-defined]
    return module_of


#: the op of a tensor first met with no op, where its line names no maker (the compiled builder's too)
NO_OP = "(no visible op)"


def _name_local_params(tr: Tracker, names: dict[int, tuple[str, ...]], roots: dict[str, str]) -> None:
    """``model.0.weight`` for a parameter of a module a function held in its local ``model``
    (``modules.ModuleStack._note_local``), where the namespace gives it no name."""
    for tid, idx, path in tr.modules.local_params():
        if tid not in names:
            names[tid] = (f"{roots.get(f'{ROOT_MARK}{idx}', 'module')}.{path}",)


def _name_seen_locals(tr: Tracker, names: dict[int, tuple[str, ...]], taken: Any) -> None:
    """``g`` for a tensor first met as an input of an op its function's line called, held by the
    local ``g`` then (``Tracker.seen_locals``), where no other name says what it is; as
    ``backward.<locals>.g`` where the namespace holds a ``g`` of its own."""
    for tid, (local, func) in tr.seen_locals.items():
        if tid not in names:
            names[tid] = (f"{func}.<locals>.{local}" if local in taken else local,)


def _applied_by(t: Any) -> str | None:
    """``MyReLU`` where ``t``'s grad_fn is the node of a custom ``autograd.Function`` (which its
    ``apply`` gives the tensor ``forward`` returned), else None.  Read without a subclass's code."""
    try:
        cls = getattr(describe.attr(t, "grad_fn"), "_forward_cls", None)
    except Exception:  # noqa: BLE001 - an unreadable grad_fn says nothing
        return None
    return cls.__qualname__ if isinstance(cls, type) else None


def _add_unseen_bound(tr: Tracker, bound: list[tuple[str, torch.Tensor]]) -> None:
    """Tensors bound in the namespace that no op ever touched (``b = torch.from_numpy(a)``)."""
    for _name, t in bound:
        if identity.lookup(t) is None:
            tr.see(t, None, at_end=True)


def _name_of(t: Any, names: dict[int, tuple[str, ...]]) -> str | None:
    tid = identity.lookup(t)
    if tid is None:
        return None
    n = names.get(tid)
    return n[0] if n else None
