"""The block's end passes in C (``csrc/blockend.c``) give what their Python twins give.

Each scenario of ``test_engines`` runs once on the compiled engine; its records and tables then
go through each C pass and its Python twin, and the results must be equal (dict order included).
Like ``test_engines``, these need the compiled extension.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_engines import SCENARIOS

from tensormagic.engine import autograd, build, describe, history, identity, naming, snapshot
from tensormagic.model.events import NO_VERSION
from tensormagic.model.recording import Recording

_hotpath = pytest.importorskip("tensormagic.engine._hotpath")


def _pending(name: str) -> build.Pending:
    rec: Recording = SCENARIOS[name]("c", diagnostics=None)
    pending = rec._pending
    assert isinstance(pending, build.Pending)
    return pending


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_kind_counts_match_the_python_count(name: str) -> None:
    """Counts per kind (in first-met order) and first-seen creates are the Python pass's."""
    raw = _pending(name).tr.raw
    counts, seen = _hotpath.kind_counts(raw, build._first_seen_extra)
    py_counts, py_seen = build._kind_counts(raw)
    assert list(counts.items()) == list(py_counts.items()) and counts
    assert seen == py_seen


def test_kind_counts_tell_first_seen_creates_from_gradients_and_ops() -> None:
    """Only a create with origin "seen" and a note other than "grad" is a first sighting."""
    meta = ((2,), torch.float32, "cpu", False, None, 0)
    raw = [
        ("create", "torch.ones", 1, meta, None, None, 0, (7, 8)),
        ("create", None, 2, meta, None, None, 0, ((), "seen", None)),
        ("create", None, 3, meta, None, None, 0, ((1,), "seen", "grad")),
        ("inplace", "add_", 1, meta, None, None, 0, (0, 1)),
        ("create", None, 4, meta, None, None, 0, ((), "seen", "from_numpy")),
    ]
    assert _hotpath.kind_counts(raw, build._first_seen_extra) == ({"create": 4, "inplace": 1}, 2)
    assert build._kind_counts(raw) == ({"create": 4, "inplace": 1}, 2)


def test_kind_counts_hand_an_odd_extra_to_python() -> None:
    """An extra of another layout goes to the Python function, whose error is kept."""
    meta = ((2,), torch.float32, "cpu", False, None, 0)
    raw = [("create", None, 1, meta, None, None, 0, ((), "seen"))]  # two parts, not three
    with pytest.raises(ValueError):
        build._kind_counts(raw)
    with pytest.raises(ValueError):
        _hotpath.kind_counts(raw, build._first_seen_extra)


def test_kind_counts_read_an_extra_of_another_type_through_python() -> None:
    """A create's extra that is a list, not a tuple, is read by the Python function: first seen."""
    meta = ((2,), torch.float32, "cpu", False, None, 0)
    raw = [("create", None, 1, meta, None, None, 0, [(), "seen", None]), ("create", None, 2, meta, None, None, 0, (1,))]
    assert _hotpath.kind_counts(raw, build._first_seen_extra) == ({"create": 2}, 1)
    assert build._kind_counts(raw) == ({"create": 2}, 1)


class _Snapshot:
    """A snapshot that is no tuple (a layout the compiled pass does not read itself)."""

    def __init__(self, *fields: Any) -> None:
        self.fields = fields

    def __getitem__(self, i: int) -> Any:
        return self.fields[i]

    def __hash__(self) -> int:
        return hash(self.fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Snapshot) and other.fields == self.fields


def test_partial_metas_read_a_snapshot_of_another_type_through_python() -> None:
    """A snapshot that is no tuple is marked as describe.partial says, by it."""
    odd = [_Snapshot((2,), torch.float32, "cpu", False, None, 0), _Snapshot((2,), "?", "cpu", False, None, 0)]
    metas = {m: m for m in odd}
    assert _hotpath.partial_metas(metas, NO_VERSION, describe.partial) == {odd[1]}
    assert {m for m in odd if describe.partial(m)} == {odd[1]}


def test_partial_metas_are_the_ones_describe_marks() -> None:
    """Each mark (no version, "?" dtype/device/grad_fn, a None size) and none: as describe.partial says."""
    plain = ((2, 3), torch.float32, torch.device("cpu"), True, "AddBackward0", 4)
    marked = [
        ((2, 3), torch.float32, torch.device("cpu"), True, None, NO_VERSION),
        ((2, 3), "?", torch.device("cpu"), True, None, 0),
        ((2, 3), torch.float32, "?", True, None, 0),
        ((2, 3), torch.float32, torch.device("cpu"), True, "?", 0),
        ((2, None), torch.float32, torch.device("cpu"), True, None, 0),
    ]
    metas = {m: m for m in [plain, *marked]}
    assert _hotpath.partial_metas(metas, NO_VERSION, describe.partial) == set(marked)
    assert {m for m in metas if describe.partial(m)} == set(marked)


def _histories(raw: list[Any], live: set[int], place: Any, runs: Any) -> dict[int, str]:
    """history.remember's histories for ``live``, from empty ones (the process's are put back)."""
    kept = dict(history.histories)
    history.histories.clear()
    try:
        history.remember(raw, live, place, runs=runs)
        return {tid: h.words() for tid, h in history.histories.items()}
    finally:
        history.histories.clear()
        history.histories.update(kept)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_history_runs_make_the_python_histories(name: str) -> None:
    """Each tensor's history, its runs of one line counted, equals the Python loop's."""
    pending = _pending(name)
    live = set(pending.tr.tensors)
    raw, place = pending.tr.raw, pending.snap.place
    got = _histories(raw, live, place, _hotpath.history_runs)
    assert got == _histories(raw, live, place, None)
    assert list(got) == list(_histories(raw, live, place, None))


def test_history_runs_count_a_loop_line_into_one_entry() -> None:
    """A line written three times in a row is one entry ×3; another tensor between does not split it."""
    meta = ((2,), torch.float32, "cpu", False, None, 0)
    w = ("cell", 4)
    raw = [
        ("inplace", "torch.Tensor.add_", 1, meta, w, None, 0, (0,)),
        ("create", "torch.mul", 2, meta, w, None, 0, (1,)),
        ("inplace", "torch.Tensor.add_", 1, meta, w, None, 0, (1,)),
        ("inplace", "torch.Tensor.add_", 1, meta, w, None, 0, (2,)),
        ("move", "torch.Tensor.to", 1, meta, w, None, 0, (1, meta, True, 3)),
    ]
    assert _hotpath.history_runs(raw, {1}, history._VERB, "moved", "made") == [
        [1, w, "torch.Tensor.add_", "written", 3],
        [1, w, "torch.Tensor.to", "moved", 1],
    ]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_made_before_matches_the_python_comprehension(name: str) -> None:
    """The provenance of the block's tensors it did not make equals the Python comprehension's."""
    tensors = _pending(name).tr.tensors
    prov = dict(identity.provenance)
    first = next(iter(tensors))
    prov[first] = (1, None, 2, "torch.ones")  # one with a provenance, whatever the scenario made
    want = {tid: prov.get(tid) for tid, info in tensors.items() if info[3] is None}
    assert _hotpath.made_before(tensors, prov) == want


def test_dead_keys_and_live_tids_match_the_python_passes() -> None:
    """A dead tensor's entry is found dead, a live one's id is listed, as prune's Python passes find them."""
    keep = torch.ones(2)
    identity.assign_ref(keep)
    gone = torch.zeros(2)
    identity.assign_ref(gone)
    del gone
    ids = identity._ids
    assert _hotpath.dead_keys(ids) == [k for k, ref in ids.items() if ref() is None]
    assert _hotpath.dead_keys(ids)
    assert _hotpath.live_tids(ids) == {ref.tid for ref in ids.values()}
    assert identity.lookup(keep) in _hotpath.live_tids(ids)
    identity.prune(compiled=True)
    assert _hotpath.dead_keys(identity._ids) == []


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_grad_names_match_the_python_naming(name: str) -> None:
    """Each gradient a backward filled in gets its leaf's first name plus .grad, as the Python loop names it."""
    tr = _pending(name).tr
    start = {tid: (f"n{tid}", "other") for tid in list(tr.tensors)[::2]}  # some leaves have names
    got, want = dict(start), dict(start)
    _hotpath.grad_names(tr.raw, tr.backwards, got, snapshot.AUTOGRAD_GRAD)
    snapshot._grad_names(tr, want)
    assert list(got.items()) == list(want.items())


def test_grad_names_leave_autograd_grad_and_named_gradients_alone() -> None:
    """autograd.grad's gradients and a gradient that has a name keep theirs; a backward's new one is <leaf>.grad."""
    meta = ((2,), torch.float32, "cpu", True, None, 0)
    raw = [
        ("backward", "torch.Tensor.backward", 9, meta, None, None, 0, ((1, meta, False, 5), (2, meta, False, 6))),
        ("backward", "torch.autograd.grad", 9, meta, None, None, 0, ((1, meta, False, 7),)),
    ]
    names = {1: ("w", "model.w"), 2: ("b",), 6: ("g",)}
    _hotpath.grad_names(raw, [0, 1, 5], names, snapshot.AUTOGRAD_GRAD)
    assert names == {1: ("w", "model.w"), 2: ("b",), 6: ("g",), 5: ("w.grad",)}


class _Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * 2


def _graph_case() -> tuple[list[tuple[str, Any]], dict[int, tuple[str, ...]], list[Any]]:
    """Live tensors with graphs: shared nodes, two roots on one node, leaves named and not, a custom Function."""
    w = torch.ones(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    x = torch.randn(3)
    y = (w * x + b).relu()
    z = _Twice.apply(y) + y
    view = z[1:]
    same = z  # one grad_fn under two roots
    loss = (z.sum() * view.mean()).exp()
    keep = [w, b, x, y, z, view, same, loss]
    for t in keep:
        identity.assign_ref(t)
    names = {identity.lookup(w): ("w", "model.w"), identity.lookup(y): ("y",), identity.lookup(loss): ("loss",)}
    pairs = [(f"t{identity.lookup(t)}", t) for t in keep] + [("t-same", same)]
    return pairs, names, keep


def test_capture_in_c_makes_the_python_graph_table() -> None:
    """Roots, nodes (names, made-by, leaves) and edges of the C walk equal the Python walk's."""
    pairs, names, _keep = _graph_case()
    got = autograd.capture_compiled(_hotpath, pairs, names)
    want = autograd.capture(pairs, lambda t: snapshot._name_of(t, names))
    assert got == want and len(want.nodes) > 8
    assert [n.leaf for n in got.nodes.values() if n.leaf] == [n.leaf for n in want.nodes.values() if n.leaf]


def test_capture_in_c_stops_at_max_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_NODES both walks stop at the same node and say the table is truncated."""
    pairs, names, _keep = _graph_case()
    monkeypatch.setattr(autograd, "MAX_NODES", 4)
    got = autograd.capture_compiled(_hotpath, pairs, names)
    want = autograd.capture(pairs, lambda t: snapshot._name_of(t, names))
    assert got.truncated and want.truncated and got == want


def test_user_names_filter_as_the_python_comprehension() -> None:
    """Names starting with "_" and IPython's own are dropped, the rest kept in order, as the comprehension keeps them."""
    ns = {"_i3": 1, "x": 2, "In": 3, "": 4, "__name__": 5, "get_ipython": 6, "é": 7, "`tick": 8, "Out_": 9, "model": 10}
    items = list(ns.items())
    want = [(k, v) for k, v in items if not (k.startswith(naming._SKIP_PREFIXES) or k in naming._SKIP_NAMES)]
    assert _hotpath.user_names(items, naming._SKIP_NAMES) == want == naming._user_names(ns)


def test_user_names_leave_other_key_types_to_python() -> None:
    """A key that is not a str (or a str subclass) gets None: startswith then decides, its error included."""

    class Key(str):
        pass

    assert _hotpath.user_names([("x", 1), (Key("y"), 2)], naming._SKIP_NAMES) is None
    assert _hotpath.user_names([("x", 1), (3, 2)], naming._SKIP_NAMES) is None
    with pytest.raises(AttributeError):
        naming._user_names({"x": 1, 3: 2})


def test_freeze_histories_copies_what_freeze_copies() -> None:
    """Each live tensor's frozen history equals History.freeze(), later entries not reaching the copy."""
    h = history.History()
    for i in range(12):
        h.add([4, None, i % 5, "written", "torch.Tensor.add_", 1])
    other = history.History()
    other.add([5, None, 1, "made", "torch.ones", 1])
    histories = {1: h, 2: other}
    final = {2: "meta", 3: "meta", 1: "meta"}
    got = _hotpath.freeze_histories(final, histories, history.History)
    assert got == {tid: histories[tid].freeze() for tid in final if tid in histories}
    assert list(got) == [2, 1]
    h.add([6, None, 9, "written", "torch.Tensor.mul_", 1])
    assert got[1] != h.freeze() and history.frozen_words(got[1]) != h.words()


def test_dead_keys_call_an_entry_that_is_no_weak_reference() -> None:
    """An entry of another type is called, as ``ref()`` is: one that answers None is dead."""
    kept = object()
    ids = {1: lambda: None, 2: lambda: kept}
    assert _hotpath.dead_keys(ids) == [k for k, ref in ids.items() if ref() is None] == [1]
