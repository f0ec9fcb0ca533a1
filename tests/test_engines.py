"""The compiled hot path (``tensormagic/engine/csrc/``) and the pure-Python one record the same events.

Each scenario below runs once per engine; the recordings (every event, fold, tensor record and
the text report, with tensor ids renumbered in order of appearance and times removed) must be
equal.  The rest of the suite runs on the default engine (the compiled one where it was built);
``scripts/test.sh`` runs the core tests again with ``TENSORMAGIC_ENGINE=python``.
"""

from __future__ import annotations

import json
import pickle
import re
import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import _get_current_function_mode

import tensormagic
from tensormagic.diagnostics import TensorMagicWarning
from tensormagic.engine import identity
from tensormagic.engine import mode as mode_mod
from tensormagic.engine.compiled_mode import CompiledTrackMode
from tensormagic.engine.tracker import Tracker
from tensormagic.model.recording import Recording

Scenario = Callable[..., Recording]  # (engine, **track options) -> its recording
SCENARIOS: dict[str, Scenario] = {}


def scenario(f: Scenario) -> Scenario:
    SCENARIOS[f.__name__] = f
    return f


def normalized(rec: Recording) -> dict[str, Any]:
    """A recording as comparable data: ids renumbered by first appearance, no times."""
    d = {
        "events": [e.to_dict() for e in rec.events],
        "folds": [f.to_dict() for f in rec.folds],
        "tensors": [  # in order of appearance: "t9" sorts after "t10" as text
            (k, v.names, v.created.seq if v.created else None, [e.seq for e in v.events])
            for k, v in sorted(rec.tensors.items(), key=lambda kv: int(kv[0][1:]))
        ],
        "diagnostics": [repr(x) for x in rec.diagnostics],
        # column padding follows the raw ids' widths (t99 vs t100: the counter is process-wide)
        "text": re.sub(r" +", " ", re.sub(r"[0-9.]+ ?(ms|µs|s)\b", "T", rec.to_text())),
    }
    s = json.dumps(d, sort_keys=True, default=str)
    ids: dict[str, str] = {}

    def renumber(m: re.Match[str]) -> str:
        k = m.group(0)
        if k not in ids:
            ids[k] = f"{k[0]}#{sum(1 for x in ids if x[0] == k[0])}"
        return ids[k]

    s = re.sub(r'"time_us": [0-9.e+-]+', '"time_us": 0', s)
    s = re.sub(r"\b[ts][0-9]+\b", renumber, s)
    return json.loads(s)


@scenario
def autograd_example(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
        out.backward()
    return rec


@scenario
def views_and_inplace(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        a = torch.zeros(4, 4)
        b = a[1]
        c = a.view(16)  # noqa: F841 - recorded as a view
        b.add_(1)
        a[2] = 5
        d = a.detach()
        d.mul_(2)
        e = a.reshape(2, 8)  # noqa: F841
        f = a.t().contiguous()
        torch.add(a, 1, out=f)
        g = a.data
        g.sub_(1)
        h, i = a.chunk(2)  # noqa: F841
        j = torch.relu_(a)  # noqa: F841
        k = a.clamp_(0, 1)  # noqa: F841
        a.copy_(torch.ones(4, 4, dtype=torch.float64))
    return rec


@scenario
def moves(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        x = torch.randn(3, 3)
        y = x.to(torch.float64)  # noqa: F841
        z = x.double()  # noqa: F841
        m = x.to("meta")  # noqa: F841
        buf = torch.empty(3, 3, dtype=torch.float64)
        buf.copy_(x)
        mod = nn.Linear(3, 2)
        mod.to(torch.float64)
        mod.to("meta")
    return rec


@scenario
def numpy_and_parameters(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        a = np.ones(3, dtype=np.float32)
        t = torch.from_numpy(a)
        u = t * 2
        n = u.numpy()  # noqa: F841
        p = nn.Parameter(torch.randn(2))  # noqa: F841
        s = u.sum().item()  # noqa: F841
        c = torch.from_numpy(a) * 2  # noqa: F841 - a tensor no variable holds, made without an op
    return rec


@scenario
def gradients(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        w = torch.randn(3, requires_grad=True)
        x = torch.randn(3)
        y = (w * x).sum()
        (g,) = torch.autograd.grad(y, [w])
        (w * w).sum().backward()
        (w * 3).sum().backward()
        h = w.sigmoid()
        h.retain_grad()
        h.sum().backward()
    return rec


@scenario
def backward_of_a_graph_made_before_the_block(engine: str, **kw: Any) -> Recording:
    w = torch.randn(3, requires_grad=True)
    y = (w * 2).sum()
    with tensormagic.track(engine=engine, **kw) as rec:
        y.backward()  # its leaf and root are first seen here, by the backward records
        z = w.grad * 1  # noqa: F841
    return rec


@scenario
def training_loop_with_inplace_and_move(engine: str, **kw: Any) -> Recording:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.Dropout(0.5), nn.ReLU(inplace=True), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(5, 8), torch.randint(0, 3, (5,))
    with tensormagic.track(engine=engine, **kw) as rec:
        for _ in range(3):
            opt.zero_grad()
            out = model(x).to(torch.float64)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
    return rec


@scenario
def folding_past_max_events(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(max_events=50, engine=engine, **kw) as rec:
        x = torch.zeros(3)
        for _ in range(100):
            x = x + 1
            y = x * 2  # noqa: F841
        x.add_(1)
    return rec


@scenario
def stats_on(engine: str, **kw: Any) -> Recording:
    torch.manual_seed(0)
    with tensormagic.track(stats=True, engine=engine, **kw) as rec:
        x = torch.randn(10)
        y = x.exp()
        y.mul_(2)
    return rec


@scenario
def failing_block(engine: str, **kw: Any) -> Recording:
    with pytest.raises(RuntimeError):
        with tensormagic.track(engine=engine, **kw) as rec:
            a = torch.ones(2, 3)
            b = a + 1
            a @ b
    return rec


@scenario
def tuples_and_lists(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        ts = [torch.ones(2), torch.zeros(2)]
        torch._foreach_add_(ts, 1.0)
        c = torch.cat(ts)
        s = torch.stack(ts)
        u = torch.unbind(s)  # noqa: F841
        sp = torch.split(c, 2)  # noqa: F841
        mx = torch.max(c, 0)  # noqa: F841
    return rec


@scenario
def nested_modules_and_diagnostics(engine: str, **kw: Any) -> Recording:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.act = nn.Linear(4, 4), nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.lin(x)) + x

    net = nn.Sequential(Block(), Block())
    x = torch.randn(2, 4)
    w = torch.randn(2, 4, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TensorMagicWarning)  # the diagnostic is compared, not shown
        with tensormagic.track(engine=engine, **kw) as rec:
            net(x).sum().backward()
            s = torch.sigmoid(w)
            s.mul_(2)  # sigmoid saved its output: the backward below fails, the diagnostic says why
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                (s * x).sum().backward()
    if kw.get("diagnostics", "all") is not None:
        assert [d.id for d in rec.diagnostics] == ["inplace-saved"]
    return rec


# Each op's first call in a block goes through the Python path (it classifies the op); the
# scenarios below run their bodies twice so that the second pass takes the compiled paths.


@scenario
def inplace_operator_forms(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        for _ in range(2):
            x = torch.ones(3)
            i = torch.arange(4)
            x += 1
            x **= 2  # hands its input back: a write seen as a version bump
            i |= 2
            i <<= 1
            i ^= 3
            x[1] = 5.0  # __setitem__: the compiled path hands the write to Python
            x.copy_(torch.zeros(3))  # copy_: likewise
            torch.mul(x, 2, out=x)
            x.index_put_((torch.tensor([0]),), torch.tensor(7.0))  # a tuple argument holding a tensor
            c = torch.cat([x, x])  # noqa: F841 - a list argument
            torch.dropout_(x, 0.0, True)  # noqa: F841
            s = x.to_sparse()  # noqa: F841 - an output without a storage
    return rec


@scenario
def out_forms(engine: str, **kw: Any) -> Recording:
    # torch has no Tensor method taking out= (native_functions.yaml gives out= variants only as
    # functions): each form below is a torch function's out=, each run twice (the second call
    # of an op reaches the compiled path's classification)
    with tensormagic.track(engine=engine, **kw) as rec:
        a = torch.ones(2, 3)
        b = torch.full((2, 3), 2.0, requires_grad=True)
        c, m, k = torch.empty(2, 3), torch.empty(2, 2), torch.empty(4, 3)
        v, i = torch.empty(3), torch.empty(3, dtype=torch.long)
        for _ in range(2):
            torch.add(a, 1, out=c)  # another tensor written
            torch.mul(a, 2, out=a)  # its own input
            torch.matmul(a, b.detach().t(), out=m)
            torch.cat([a, c], out=k)  # inputs in a list
            torch.max(a, 0, out=(v, i))  # a tuple of outputs: each written
            torch.sum(k, 0, out=v)
            torch.add(a, 1, out=torch.empty(0))  # resized by torch, held by no variable
            torch.sub(a, b.detach(), alpha=2, out=c)  # a keyword besides out=
    return rec


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * torch.full_like(x, 2.0) * x  # tensors made in a Function's backward


@scenario
def tensors_made_in_backward_hooks(engine: str, **kw: Any) -> Recording:
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(lambda m, gi, go: (torch.zeros_like(gi[0]),))
    w = torch.randn(3, requires_grad=True)
    w.register_hook(lambda g: g * 2)
    w.register_post_accumulate_grad_hook(lambda p: [p.grad.add_(1)] and None)
    with tensormagic.track(engine=engine, **kw) as rec:
        for _ in range(2):
            lin(_Square.apply(w)).sum().backward()
            (gw,) = torch.autograd.grad((w * 3).sum(), w)
            w.grad = None
    return rec


@scenario
def backward_inputs_retain_grad_and_autograd_grad(engine: str, **kw: Any) -> Recording:
    torch.manual_seed(0)
    with tensormagic.track(engine=engine, **kw) as rec:
        w = torch.randn(3, requires_grad=True)
        for _ in range(2):
            h = w.sigmoid()
            h.retain_grad()
            h.sum().backward(inputs=[h], retain_graph=True)  # a retained non-leaf as the only input
            (h * 2).sum().backward(inputs=[w])
            (g,) = torch.autograd.grad((w * w).sum(), [w])
            w.grad = None
    return rec


@scenario
def failures_in_the_compiled_path(engine: str, **kw: Any) -> Recording:
    with tensormagic.track(engine=engine, **kw) as rec:
        a = torch.ones(2, 3)
        for _ in range(2):
            b = a + 1
            c = a @ b.t()  # noqa: F841
            with pytest.raises(RuntimeError, match="cannot be multiplied"):
                a @ b  # the user's error, through the compiled path on the second pass
    return rec


class _Refusing(torch.Tensor):
    """A subclass whose __torch_function__ refuses the tracker's own reads (attribute gets)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") == "__get__":
            raise RuntimeError("refused")
        with torch._C.DisableTorchFunctionSubclass():
            r = func(*args, **(kwargs or {}))
        return r.as_subclass(_Refusing) if isinstance(r, torch.Tensor) else r


@scenario
def tensors_the_tracker_reads_another_way(engine: str, **kw: Any) -> Recording:
    blob = pickle.dumps(torch.arange(6.0).reshape(2, 3))
    with torch.inference_mode():
        inf = torch.arange(3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nested tensors are a prototype
        with tensormagic.track(engine=engine, **kw) as rec:
            a = inf + 1  # an inference tensor as input
            with torch.inference_mode():
                b = a * 2
                b.add_(1)  # no version counter
            nt = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(1, 3)])
            n2 = nt * 2  # noqa: F841 - a shape with an irregular dimension
            r = torch.ones(3, requires_grad=True).as_subclass(_Refusing)
            r2 = (r + 1) * 2
            r2.add_(1)  # the hooks read a refusing subclass written in place
            r2.sum().backward()
            u = pickle.loads(blob)  # torch.empty(0), then set_() unseen
            v = u + b.sum()  # noqa: F841
            e = torch.empty(0)
            e.resize_(2)
    return rec


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_both_engines_record_the_same_events(name: str) -> None:
    """Each scenario gives the same recording under the compiled and the pure-Python engine."""
    assert normalized(SCENARIOS[name]("c")) == normalized(SCENARIOS[name]("python"))


def test_compiled_engine_is_built_and_is_the_default() -> None:
    """The install built the compiled hot path, and track() uses it unless told otherwise."""
    assert mode_mod._hotpath is not None, "tensormagic.engine._hotpath was not built: is a C compiler installed?"
    tr = Tracker()
    m = mode_mod.make_mode(tr)
    m.close()
    assert type(m) is CompiledTrackMode


def test_without_the_variable_the_compiled_engine_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TENSORMAGIC_ENGINE unset, the default engine is "c" and make_mode gives the compiled mode."""
    monkeypatch.delenv("TENSORMAGIC_ENGINE", raising=False)
    assert mode_mod.default_engine() == "c"
    m = mode_mod.make_mode(Tracker())
    m.close()
    assert type(m) is CompiledTrackMode


def test_compiled_engine_loaded_is_the_build_of_these_sources() -> None:
    """The loaded extension sits in tensormagic/engine/ and is newer than every C source (no stale build)."""
    from pathlib import Path

    so = Path(mode_mod._hotpath.__file__).resolve()
    engine_dir = Path(mode_mod.__file__).resolve().parent
    assert so.parent == engine_dir, f"loaded {so}, expected a build inside {engine_dir}"
    sources = list((engine_dir / "csrc").glob("*.[ch]"))
    assert sources, "no C sources found beside the engine"
    newest = max(sources, key=lambda p: p.stat().st_mtime)
    assert so.stat().st_mtime >= newest.stat().st_mtime, f"{so.name} is older than {newest.name}: rebuild it"


def test_compiled_engine_reads_its_attributes_at_their_slots() -> None:
    """Ref.tid, ModuleStack.current and LineFinder.lasti are __slots__ the compiled path reads at their offsets."""
    m = mode_mod.make_mode(Tracker(), "c")
    try:
        assert m._hot.fast_slots == (True, True, True)
    finally:
        m.close()


@pytest.mark.parametrize("engine", ["c", "python"])
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_non_leaf_only_watch_sees_only_non_leaf_reads(engine: str) -> None:
    """A watch marked non_leaf_only is skipped for a leaf's .grad and for retain_grad tensors."""
    seen: list[tuple[int, ...]] = []

    def watch(tr: Tracker, func: Any, args: Any, where: Any) -> None:
        seen.append(tuple(args[0].shape))

    watch.non_leaf_only = True  # type: ignore[attr-defined]
    leaf = torch.ones(1, requires_grad=True)
    with tensormagic.track(engine=engine, diagnostics=None):
        _get_current_function_mode().tracker.call_watch["torch.Tensor.grad.__get__"] = watch
        kept = (leaf * torch.ones(2)).requires_grad_()
        mid = leaf * torch.ones(3)
        kept.retain_grad()
        leaf.grad, kept.grad, mid.grad  # noqa: B018 - the reads are what is watched
    assert seen == [(3,)]


def test_environment_variable_selects_the_python_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """TENSORMAGIC_ENGINE=python makes the pure-Python engine the default."""
    monkeypatch.setenv("TENSORMAGIC_ENGINE", "python")
    assert mode_mod.default_engine() == "python"


def test_unknown_engine_is_a_clear_error_before_the_block() -> None:
    """track(engine=...) with an unknown name fails at once and names the choices."""
    with pytest.raises(ValueError, match="engine must be one of 'c', 'python'"):
        tensormagic.track(engine="fast")


def test_compiled_clock_is_perf_counter() -> None:
    """Event times from the compiled path use time.perf_counter_ns's clock."""
    m = mode_mod.make_mode(Tracker(), "c")
    try:
        before = time.perf_counter_ns()
        now = m._hot.now()
        after = time.perf_counter_ns()
    finally:
        m.close()
    assert before <= now <= after


def test_compiled_internal_error_stops_recording_and_keeps_results() -> None:
    """A failing record hook on the compiled path stops recording; the user's values are unchanged."""

    def broken_hook(tr: Tracker, idx: int, objs: tuple[torch.Tensor, ...]) -> None:
        raise KeyError("boom")

    x = torch.arange(4.0)
    with pytest.warns(tensormagic.TrackingWarning, match="stopped recording part-way: KeyError"):
        with tensormagic.track(engine="c", diagnostics=None) as rec:
            y = x * 2
            _get_current_function_mode().tracker.record_hooks.append(broken_hook)
            z = y + 1  # y is known: the compiled path records this op and calls the hook
            w = z - 1
    assert torch.equal(w, torch.arange(4.0) * 2)
    assert [e.op for e in rec.events] == ["torch.Tensor.mul", "torch.Tensor.add"]


@pytest.mark.parametrize("engine", ["c", "python"])
def test_internal_error_on_a_known_op_stops_recording_and_keeps_results(engine: str) -> None:
    """A record hook failing on an op's second call (the compiled path's own) stops recording alike on both engines."""

    def broken_hook(tr: Tracker, idx: int, objs: tuple[torch.Tensor, ...]) -> None:
        raise KeyError("boom")

    x = torch.arange(4.0)
    with pytest.warns(tensormagic.TrackingWarning, match="stopped recording part-way: KeyError"):
        with tensormagic.track(engine=engine, diagnostics=None) as rec:
            y = x + 1  # add's first call: classified by the Python path
            _get_current_function_mode().tracker.record_hooks.append(broken_hook)
            z = y + 1  # its second: the compiled path records it, calls the hook, and hands the failure on
            w = z * 2
    assert torch.equal(w, (torch.arange(4.0) + 2) * 2)
    assert [e.op for e in rec.events] == ["torch.Tensor.add", "torch.Tensor.add"]


def test_compiled_mode_hands_other_call_shapes_to_the_python_method() -> None:
    """A __torch_function__ call with keyword names goes to TrackMode.__torch_function__, which records it."""
    tr = Tracker()
    m = mode_mod.make_mode(tr, "c")
    try:
        x = torch.ones(2)
        r = m._hot(m, torch.add, (), (x, 1), kwargs=None)
        assert torch.equal(r, torch.full((2,), 2.0))
        assert [rec[0] for rec in tr.raw] == ["create", "create"]  # the Python path: x first seen, then x + 1
    finally:
        m.close()


def test_closed_compiled_mode_passes_calls_through() -> None:
    """After the block the compiled object only forwards calls (nothing is recorded or held)."""
    tr = Tracker()
    m = mode_mod.make_mode(tr, "c")
    hot = m._hot
    m.close()
    assert hot.disabled and "__torch_function__" not in m.__dict__
    assert torch.equal(hot(m, torch.add, (), (torch.ones(2), 1)), torch.full((2,), 2.0))
    assert isinstance(hot(m, torch.get_default_dtype, ()), torch.dtype)  # no args tuple: called with none
    assert tr.raw == []


def test_compiled_live_tensors_is_the_python_loop() -> None:
    """_hotpath.live_tensors finds the same live tensors as Tracker.live_tensors and forgets the same keys."""
    tr = Tracker()
    keep = [torch.ones(2), torch.zeros(3), torch.arange(4.0)]
    gone = [torch.ones(1) for _ in range(3)]
    tids = [tr.see(t, None) for t in keep + gone]
    tr.merged.add(tids[1])  # alive but merged: not listed
    info = tr.tensors[tids[0]]
    tr.tensors[10**9] = (info[0], *info[1:])  # its id() key now names another tensor's entry
    del gone
    twin = dict(tr.tensors)
    live_py = tr.live_tensors()
    live_c = mode_mod._hotpath.live_tensors(twin, identity._ids, tr.merged)
    assert [tid for tid, _ in live_c] == [tid for tid, _ in live_py] == [tids[0], tids[2]]
    assert all(a is b for (_, a), (_, b) in zip(live_c, live_py))
    assert twin == tr.tensors
    assert [tid for tid, info in twin.items() if info[0] is None] == tids[3:] + [10**9]


def test_compiled_tracker_helpers_match_the_python_methods() -> None:
    """Hot.meta and Hot.new_tensor, the tracker's meta and _new during a compiled block, do what Tracker's do."""

    def tensors() -> list[torch.Tensor]:
        base = torch.arange(6.0)
        return [torch.ones(2, requires_grad=True) * 2, torch.zeros(3, dtype=torch.float64),
                torch.ones(2, device="meta"), base, base[2:]]  # fmt: skip

    def register(tr: Tracker, ts: list[torch.Tensor]) -> list[Any]:
        out = [tr._new(t, alias=i == 4) for i, t in enumerate(ts)]
        again = tr._new(ts[0], alias=False)  # a known tensor keeps its id
        entries = [tr.tensors[tid] for tid, _ in out]
        assert again[0] == out[0][0] and all(e[0] == id(t) for e, t in zip(entries, ts))
        # ids and storage names, relative to the first id; metadata; raw index
        t0 = out[0][0]
        return [(tid - t0, e[2] - t0 if e[2] is not None else None, meta, e[3]) for (tid, meta), e in zip(out, entries)]

    py_tr, c_tr = Tracker(), Tracker()
    m = mode_mod.make_mode(c_tr, "c")
    assert c_tr._new == m._hot.new_tensor and c_tr.meta == m._hot.meta
    ts_py, ts_c = tensors(), tensors()
    assert register(c_tr, ts_c) == register(py_tr, ts_py)
    assert all(c_tr.meta(t) is Tracker.meta(c_tr, t) for t in ts_c)  # the same interned snapshot
    m.close()
    assert "meta" not in c_tr.__dict__ and "_new" not in c_tr.__dict__  # the block's end uses its own
    assert "_leaves_of" not in c_tr.__dict__


def test_classification_is_decided_once_per_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """ops.classify answers a function it has classified from its table, with what the classifier said then."""
    from tensormagic.engine import ops

    calls: list[Any] = []
    real = ops._classify
    monkeypatch.setattr(ops, "_classify", lambda fn: calls.append(fn) or real(fn))

    def scale_(t: torch.Tensor) -> torch.Tensor:  # an in-place name: INPLACE by its trailing "_"
        return t

    try:
        assert ops.classify(scale_) == ops.classify(scale_) == ops.INPLACE
        assert calls == [scale_]
    finally:
        ops._classes.pop(scale_, None)


def test_compiled_where_is_the_python_finder() -> None:
    """Hot.where, the compiled mode's _where, finds the caller's place and offset as TrackMode._where does."""
    tr = Tracker()
    m = mode_mod.make_mode(tr, "c")
    assert m._where == m._hot.where

    # the finder's caller is a library frame, as mode.py's callers of _where are tensormagic's own
    lib: dict[str, Any] = {}
    exec(compile("def call(where):\n    return where()\n", torch.__file__, "exec"), lib)

    def place(where: Callable[[], Any]) -> tuple[Any, int]:
        return lib["call"](where), tr.lines.lasti  # this line: the test file is user code

    got = place(m._where)
    want = place(lambda: mode_mod.TrackMode._where(m))
    assert got[0] == want[0] == (__file__, got[0][1]) and got[1] == want[1]
    m.close()
    assert "_where" not in m.__dict__  # the closed object is not asked again


def test_compiled_gradient_records_share_each_leafs_extra() -> None:
    """Hot.grads_filled's gradient records carry Tracker.grad_extra's tuple: one per leaf, shared by every step."""

    class Extras(dict):  # type: ignore[type-arg]
        """Not the plain dict the compiled path fills itself: it asks Tracker.grad_extra."""

    for table in (None, Extras()):
        tr = Tracker()
        m = mode_mod.make_mode(tr, "c")
        if table is not None:
            tr._grad_extras = table
        w = torch.ones(2, requires_grad=True)
        ltid = tr.see(w, None)
        for _ in range(2):  # a new gradient each step, as zero_grad(set_to_none=True) leaves it
            w.grad = torch.full((2,), 2.0)
            tr._grads_filled(torch.Tensor.backward, [w], [False], None)
        extras = [r[7] for r in tr.raw if r[0] == "create" and r[1] == "torch.Tensor.backward"]
        assert extras == [((ltid,), "seen", "grad")] * 2  # Tracker.grad_extra's tuple
        assert extras[0] is extras[1] is tr._grad_extras[ltid]
        m.close()


def test_compiled_meta_interns_as_tracker_intern_does() -> None:
    """A snapshot Hot.meta meets first is stored as Tracker._intern stores it: a plain-tuple shape shared through _shapes."""

    class Shapes(dict):  # type: ignore[type-arg]
        """Not the plain dict the compiled interning knows: it hands the snapshot to Tracker._intern."""

    for shapes in (None, Shapes()):
        py_tr, c_tr = Tracker(), Tracker()
        m = mode_mod.make_mode(c_tr, "c")
        if shapes is not None:
            c_tr._shapes = shapes
        a, b = torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.float64)
        got = [c_tr.meta(a), c_tr.meta(b)]
        want = [Tracker.meta(py_tr, a), Tracker.meta(py_tr, b)]
        assert got == want and [type(g[0]) for g in got] == [tuple, tuple]  # not the torch.Size read
        assert got[0][0] is got[1][0] is c_tr._shapes[(2, 3)]  # one shape object for both snapshots
        assert all(c_tr._metas[g] is g for g in got) and c_tr.meta(a) is got[0]
        m.close()


def test_compiled_leaves_of_is_the_python_walk() -> None:
    """_hotpath.leaves_of, each backward's leaf walk in a compiled block, finds autograd.leaves_of's leaves in order."""
    from tensormagic.engine import autograd

    tr = Tracker()
    m = mode_mod.make_mode(tr, "c")
    assert tr._leaves_of.func is mode_mod._hotpath.leaves_of  # what prepare_backward calls in the block
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3, requires_grad=True)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1, 1]))
    w = torch.ones(2, requires_grad=True)
    shared = w * 2
    two = shared.sum() + (shared * x[0, :2]).sum()  # a node reached twice, a leaf under two paths
    custom = _Square.apply(w).sum()  # a Python Function's node
    sub = torch.ones(2, requires_grad=True).as_subclass(_Refusing)  # read without its __torch_function__
    cases = [[loss], [two], [loss, two], [custom], [w], [w, loss], [torch.ones(2)], [], [3, None, loss],
             [(sub * 2).sum()], [sub]]  # fmt: skip
    for roots in cases:
        want = autograd.leaves_of(roots)
        got = tr._leaves_of(list(roots))
        assert len(got) == len(want) and all(a is b for a, b in zip(got, want)), roots
    assert len(autograd.leaves_of([loss])) == 5  # x and the four parameters: the cases walk real graphs
    m.close()


def test_compiled_held_grads_reads_what_held_grad_reads() -> None:
    """_hotpath.held_grads, read before each backward in a compiled block, gives backward._held_grad of each tensor."""
    from tensormagic.engine import backward

    tr = Tracker()
    m = mode_mod.make_mode(tr, "c")
    assert tr._held_grads is mode_mod._hotpath.held_grads  # what prepare_backward calls in the block
    filled, empty = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    kept = filled * 3
    kept.retain_grad()
    sub = torch.Tensor._make_subclass(_Refusing, torch.ones(2), True)  # a leaf whose own reads refuse
    (kept.sum() + (sub * 2).sum()).backward()
    plain = torch.ones(2)  # a leaf that never gets a gradient
    leaves = [filled, empty, kept, filled * 2, sub, plain]  # filled * 2: no grad; reading it would warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tr._held_grads(leaves)
        want = [backward._held_grad(t) for t in leaves]
    assert len(got) == len(want) and all(a is b for a, b in zip(got, want))
    assert [g is not None for g in got] == [True, False, True, False, True, False]
    m.close()
    assert "_held_grads" not in tr.__dict__


def test_compiled_add_makes_the_python_records_and_hook_calls() -> None:
    """Hot.add, the tracker's _add during a compiled block, appends Tracker._add's records and calls the same hooks."""
    from tensormagic.engine.ops import op_name
    from tensormagic.engine.raw import QUIET_ANY

    def prepare(tr: Tracker) -> Tracker:  # as the diagnostics do, before the block
        tr.quiet_creates["torch.Tensor.exp"] = QUIET_ANY
        tr.write_gate = False
        return tr

    def feed(tr: Tracker) -> tuple[list[Any], list[Any]]:
        seen: list[Any] = []
        tr.record_hooks.append(lambda tr, idx, objs: seen.append((tr.raw[idx][0], idx, objs[0].shape)))
        t = torch.ones(2)
        meta = Tracker.meta(tr, t)
        calls = [("create", torch.Tensor.exp, (1,)), ("create", torch.Tensor.mul, (1, 2)),
                 ("create", None, ((), "seen", None)), ("view", torch.Tensor.view, 1),
                 ("move", torch.Tensor.to, (1, meta, False)), ("inplace", torch.Tensor.add_, (0,)),
                 ("backward", torch.Tensor.backward, ()), ("numpy", torch.Tensor.numpy, None)]  # fmt: skip
        for kind, func, extra in calls + [calls[1]] * 6:  # the repeats pass max_events: folded
            tr._add(kind, func, 7, meta, ("f", 1), extra, (t,))
        return list(tr.raw), seen

    for func in (torch.Tensor.exp, torch.Tensor.mul, torch.Tensor.view, torch.Tensor.to, torch.Tensor.add_,
                 torch.Tensor.backward, torch.Tensor.numpy):  # fmt: skip
        op_name(func)  # the compiled path takes calls whose op name is cached (any op recorded before)
    py_tr, c_tr = prepare(Tracker(max_events=10)), prepare(Tracker(max_events=10))
    mode_mod.make_mode(c_tr, "c")  # puts its helpers on c_tr (never entered)
    assert c_tr._add != Tracker._add.__get__(c_tr)
    raw_c, seen_c = feed(c_tr)
    assert (raw_c, seen_c) == feed(py_tr)
    # quiet exp and the gated write were not seen, nor backward and numpy records
    assert [k for k, _, _ in seen_c[:4]] == ["create", "create", "view", "move"]
    assert len(c_tr.times) == len(raw_c) < 14 and c_tr.folds == py_tr.folds and c_tr.folds


def test_compiled_add_asks_a_python_write_gate_as_tracker_add_does() -> None:
    """A write gate that is neither None, False nor a SavedIndex is asked .needs() by Hot.add exactly as by Tracker._add."""
    from tensormagic.engine.ops import op_name

    class Gate:  # answers by hand: every other in-place record is needed
        def __init__(self) -> None:
            self.asked: list[tuple[int, int]] = []

        def needs(self, idx: int, tid: int, t: torch.Tensor) -> bool:
            self.asked.append((idx, tid))
            return idx % 2 == 0

    def feed(tr: Tracker) -> tuple[list[Any], list[int], list[tuple[int, int]]]:
        gate = tr.write_gate
        seen: list[int] = []
        tr.record_hooks.append(lambda tr, idx, objs: seen.append(idx))
        t = torch.ones(2)
        meta = Tracker.meta(tr, t)
        for _ in range(4):
            tr._add("inplace", torch.Tensor.add_, 7, meta, ("f", 1), (0,), (t,))
        return list(tr.raw), seen, gate.asked

    op_name(torch.Tensor.add_)
    py_tr, c_tr = Tracker(), Tracker()
    py_tr.write_gate, c_tr.write_gate = Gate(), Gate()  # as the diagnostics do, before the block
    mode_mod.make_mode(c_tr, "c")  # puts its helpers on c_tr (never entered)
    got = feed(c_tr)
    assert got == feed(py_tr)
    assert got[1] == [0, 2] and got[2] == [(0, 7), (1, 7), (2, 7), (3, 7)]


def _module_stacks_run(push: Callable[..., None], pop: Callable[..., None], mods: dict[str, nn.Module]) -> list[Any]:
    """One sequence of module calls through a push and pop twin; what the stacks held after each."""
    import threading

    from tensormagic.engine.modules import ModuleStack

    mine, nested, elsewhere = ModuleStack(), ModuleStack(), ModuleStack()
    running = {threading.get_ident(): [mine, nested], threading.get_ident() + 1: [elsewhere]}
    outer, other, stray = mods["outer"], mods["other"], mods["stray"]
    calls = [(push, outer), (push, outer[0]), (pop, outer[0]), (push, outer[0]),  # a child's path again
             (pop, outer[0]), (push, stray), (pop, stray),  # a module that is no child: its class name
             (pop, outer[1]),  # not on top: nothing popped
             (pop, outer), (push, other), (push, outer),  # outer under another parent now: ...
             (push, outer[0]), (pop, outer[0]), (pop, outer), (pop, other)]  # ... its child's path too
    seen: list[Any] = []
    for fn, mod in calls:
        fn(running, mod)
        seen.append([([(id(m), p) for m, p in st._stack], st.current) for st in (mine, nested, elsewhere)])
    seen.append([([r() for r in st.roots], st._root_paths, st._child_paths) for st in (mine, nested, elsewhere)])
    running[threading.get_ident()] = []  # a thread whose blocks all ended: nothing to do
    push(running, outer)
    pop(running, outer)
    return seen


@pytest.mark.skipif(getattr(mode_mod._hotpath, "module_push", None) is None, reason="the compiled hot path was not built")
def test_compiled_module_push_and_pop_are_the_python_twins() -> None:
    """_hotpath.module_push and module_pop leave every module stack as modules._push and _pop do."""
    from tensormagic.engine import modules

    outer = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    mods = {"outer": outer, "other": nn.Sequential(outer), "stray": nn.Linear(2, 2)}
    got_c = _module_stacks_run(mode_mod._hotpath.module_push, mode_mod._hotpath.module_pop, mods)
    got_py = _module_stacks_run(modules._push, modules._pop, mods)
    assert got_c == got_py
    assert modules._push_now is mode_mod._hotpath.module_push  # what the hooks call
    # by hand: the last calls' paths (\x00 marks a top-level module until the block names it)
    assert got_py[1][0] == ([(id(outer), "\x000"), (id(outer[0]), "\x000.0")], "\x000.0")
    assert got_py[5][0][1] == "\x000.Linear" and got_py[7][0][1] == "\x000"
    assert got_py[11][0] == ([(id(mods["other"]), "\x001"), (id(outer), "\x001.0"), (id(outer[0]), "\x001.0.0")],
                             "\x001.0.0")  # fmt: skip
    assert got_py[0][2] == ([], None)  # another thread's stack: untouched
