"""What tracking must never do: change results, hold tensors, leave modes behind."""

from __future__ import annotations

import gc
import sys
import weakref

import pytest
import torch
from testkit import make_mlp, read_every_view
from torch import nn

import tensormagic


def _train(steps: int, tracked: bool):
    torch.manual_seed(0)
    model = make_mlp(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.randn(64, 20)
    target = torch.randint(0, 3, (64,))
    losses = []

    def run():
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(data), target)
            loss.backward()
            opt.step()
            losses.append(loss.detach().clone())

    if tracked:
        with tensormagic.track(max_events=2000) as rec:
            run()
    else:
        run()
        rec = None
    return model, losses, torch.get_rng_state(), rec


def test_training_loop_results_are_bit_identical():
    """200 MLP steps with dropout, momentum and relu_: every parameter, gradient and loss is identical."""
    bare, bare_losses, bare_rng, _ = _train(200, tracked=False)
    tracked, tracked_losses, tracked_rng, rec = _train(200, tracked=True)
    for (name, p), (_, q) in zip(bare.named_parameters(), tracked.named_parameters()):
        assert torch.equal(p, q), name
        assert torch.equal(p.grad, q.grad), name
        assert (p.requires_grad, p.is_leaf, p._version) == (q.requires_grad, q.is_leaf, q._version), name
    assert all(torch.equal(a, b) for a, b in zip(bare_losses, tracked_losses))
    assert torch.equal(bare_rng, tracked_rng)
    assert rec.counts()["backward"] == 200 and rec.filter(op="relu_")


def test_example_results_and_metadata_are_identical():
    """The autograd example gives the same values, grads, flags and versions with and without tracking."""

    def run():
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
        out.backward()
        return x, y, z, out

    bare = run()
    with tensormagic.track():
        tracked = run()
    for a, b in zip(bare, tracked):
        assert torch.equal(a, b)
        assert (a.requires_grad, a.is_leaf, a._version, type(a.grad_fn)) == (
            b.requires_grad, b.is_leaf, b._version, type(b.grad_fn))
    assert torch.equal(bare[0].grad, tracked[0].grad)


def test_recording_holds_no_tensor():
    """A tracked tensor is freed after ``del`` although the recording lives on."""
    with tensormagic.track() as rec:
        x = torch.ones(1000) * 2
    ref = weakref.ref(x)
    read_every_view(rec)  # the lazily built TensorRecords exist while x is alive
    assert rec.tensor("x").alive
    del x
    gc.collect()
    assert ref() is None
    r = rec.tensor("x")
    assert not r.alive and r.stats() is None


def test_block_in_a_class_body_keeps_its_tensor_attributes():
    """A block in a class body names its tensors without deleting them from the class namespace."""

    class Holder:
        w = torch.zeros(3)
        with tensormagic.track() as rec:
            v = w + 1

    assert torch.equal(Holder.w, torch.zeros(3)) and torch.equal(Holder.v, torch.ones(3))
    assert "v" in Holder.rec.tensor("v").names


def test_block_in_exec_with_its_own_locals_keeps_them():
    """``exec`` with a separate locals dict: the dict still holds every tensor after the block."""
    env: dict = {}
    exec("a = torch.ones(2)\nwith tensormagic.track():\n    b = a * 2\n",
         {"torch": torch, "tensormagic": tensormagic}, env)
    assert sorted(env) == ["a", "b"] and torch.equal(env["b"], torch.full((2,), 2.0))


def test_locals_dict_held_across_a_block_keeps_its_tensors():
    """A function's ``ns = locals()`` held across a block still maps its names to their tensors."""

    def run() -> dict:
        x = torch.ones(2)
        ns = locals()
        with tensormagic.track():
            y = x + 1  # noqa: F841
        return ns

    ns = run()
    assert torch.equal(ns["x"], torch.ones(2))


def test_function_block_keeps_no_local_tensor_alive_after_del():
    """A block in a function holds none of its locals: ``del x`` after it frees ``x``."""

    def run() -> bool:
        x = torch.ones(1000)
        with tensormagic.track():
            y = x * 2  # noqa: F841
        ref = weakref.ref(x)
        del x
        gc.collect()
        return ref() is None

    assert run()


def test_graph_capture_holds_no_tensor():
    """Capturing the grad_fn graph keeps neither the intermediate tensors nor the leaves."""
    with tensormagic.track() as rec:
        w = torch.ones(3, requires_grad=True)
        out = (w * 2).sum()
    refs = [weakref.ref(w), weakref.ref(out)]
    read_every_view(rec)
    del w, out
    gc.collect()
    assert all(r() is None for r in refs)
    assert rec.grad_graph("out").chain() == "SumBackward0 → MulBackward0 → AccumulateGrad(w)"


def test_user_exception_propagates_unchanged_and_recording_is_kept():
    """A raising block re-raises the very same exception; what was recorded before it is kept and marked failed."""
    err = ValueError("boom")
    with pytest.raises(ValueError) as info:
        with tensormagic.track() as rec:
            x = torch.ones(2)
            raise err
    assert info.value is err
    assert rec.failed and rec.error == "ValueError: boom"
    assert [e.tensor.label for e in rec.events] == ["x"]


def test_torch_error_propagates_unchanged():
    """A torch error inside the block reaches the user with its own type and message."""
    with pytest.raises(RuntimeError, match="size of tensor a"):
        with tensormagic.track() as rec:
            torch.ones(2) + torch.ones(3)
    assert rec.failed


def test_keyboard_interrupt_leaves_no_mode():
    """KeyboardInterrupt inside the block propagates and our mode is gone afterwards."""
    from torch.overrides import _len_torch_function_stack

    with pytest.raises(KeyboardInterrupt):
        with tensormagic.track() as rec:
            torch.ones(1)
            raise KeyboardInterrupt
    assert _len_torch_function_stack() == 0 and rec.failed


def test_user_device_context_left_open_survives():
    """A ``torch.device`` context the user entered inside the block (and left open) stays on top."""
    from torch.overrides import _get_function_stack_at, _len_torch_function_stack

    ctx = torch.device("meta")
    with tensormagic.track():
        ctx.__enter__()
    try:
        assert _len_torch_function_stack() == 1
        assert torch.ones(1).device.type == "meta"
        assert type(_get_function_stack_at(0)).__name__ == "DeviceContext"
    finally:
        ctx.__exit__(None, None, None)


def test_no_module_hooks_remain():
    """The global module forward hooks used for module paths are removed when the block ends."""
    from torch.nn.modules import module as m

    before = (len(m._global_forward_pre_hooks), len(m._global_forward_hooks))
    with tensormagic.track():
        nn.Linear(2, 2)(torch.ones(2))
    assert (len(m._global_forward_pre_hooks), len(m._global_forward_hooks)) == before


def test_recording_is_a_snapshot():
    """Code after the block changes neither the events nor the tensor snapshots."""
    with tensormagic.track() as rec:
        x = torch.zeros(3)
    n = len(rec.events)
    x.add_(1)
    y = x * 2
    assert len(rec.events) == n and rec.events[0].tensor.version == 0 and y is not None


def test_max_events_folds_repeats():
    """Past ``max_events``, repeats of a (line, op, kind) become counts; nothing grows unbounded."""
    x = torch.zeros(4)
    with tensormagic.track(max_events=50) as rec:
        for _ in range(500):
            x.add_(1)
    assert len(rec.events) <= 100
    assert sum(f.count for f in rec.folds) + len(rec.filter(kind="inplace")) == 500
    assert "folded" in rec.to_text()


def test_bad_max_events_is_a_clear_error():
    """A non-positive ``max_events`` is refused with a message that says what to pass."""
    with pytest.raises(ValueError, match="max_events must be a positive number"):
        tensormagic.track(max_events=0)


def test_stats_true_records_statistics_during_the_block():
    """With ``stats=True`` each output carries statistics that survive the tensor."""
    with tensormagic.track(stats=True) as rec:
        x = torch.tensor([1.0, float("nan"), 3.0])
    del x
    gc.collect()
    s = rec.tensor("x").stats()
    assert (s.min, s.max, s.nan) == (1.0, 3.0, 1)


def test_filter_by_kind_line_name_op_and_module():
    """``filter`` narrows events by each criterion."""
    model = nn.Sequential(nn.Linear(2, 2))
    with tensormagic.track() as rec:
        a = torch.ones(2)
        a.add_(1)
        model(a)
    line = rec.filter(kind="inplace")[0].line
    assert [e.op for e in rec.filter(line=line)] == ["torch.Tensor.add_"]
    assert len(rec.filter(name="a")) >= 3
    assert rec.filter(op="add_")[0].kind == "inplace"
    assert rec.filter(module="model") and all(e.module.startswith("model") for e in rec.filter(module="model"))


def test_html_report_escapes_names_and_source():
    """A hostile variable name is escaped in the HTML report."""
    ns = {"torch": torch}
    hostile = "<img src=x onerror=alert(1)>"
    with tensormagic.track(namespace=ns) as rec:
        ns[hostile] = torch.ones(1) * 2
    html = rec.to_html()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_stable_ids_are_never_reused():
    """Two tensors that live at the same address one after another get different ids."""
    ids = set()
    for _ in range(20):
        with tensormagic.track() as rec:
            torch.ones(3) + 1
        ids.update(rec.tensors)
    assert len(ids) == 40


def test_failed_line_names_no_temporary():
    """In a block that fails on a line, that line's unfinished assignment names no tensor."""
    a = torch.ones(2)
    with pytest.raises(RuntimeError):
        with tensormagic.track(diagnostics=[]) as rec:
            y = a * 2 + torch.ones(3)
    # never ``y``; from Python 3.11 the expression that made it names it
    assert rec.filter(op="mul")[0].tensor.names == (("a * 2",) if sys.version_info >= (3, 11) else ())


def test_events_built_later_still_describe_the_block_end():
    """Events are made on first read, yet names and final metadata are those of the block's end."""
    with tensormagic.track() as rec:
        x = torch.zeros(3)
        y = x + 1
    x.add_(5)  # after the block: must not show
    y_alias = y
    del y
    assert rec.tensor("x").ref.version == 0 and rec.tensor("y").names == ("y",)
    assert [e.tensor.label for e in rec.events] == ["x", "y"] and y_alias is not None


def test_compiled_function_gives_the_same_result_and_is_recorded():
    """A torch.compile'd function under tracking returns what it returns untracked: one event listing its ops."""
    import warnings

    def f(x):
        return (x.sin() * 2 + 1).sum()

    cf = torch.compile(f, backend="eager")
    x = torch.randn(16)
    bare = cf(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Dynamo does not know how to trace")  # our timer
        with tensormagic.track() as rec:
            y = cf(x)
    assert torch.equal(bare, y)
    assert [(e.kind, e.op) for e in rec.events] == [("compiled", "f")]
    assert rec.events[0].graph_ops == ("torch.Tensor.sin", "torch.Tensor.mul", "torch.Tensor.add", "torch.Tensor.sum")


def test_long_block_leaves_the_garbage_collector_little_to_walk():
    """A 4,000-op recording adds a bounded number of GC-tracked objects, not a few per event."""
    x = torch.rand(16)
    with tensormagic.track(diagnostics=None) as warm:  # imports and per-function caches
        for _ in range(10):
            x = x + 1.0
    del warm
    gc.collect()
    before = len(gc.get_objects())
    with tensormagic.track(diagnostics=None) as rec:
        for _ in range(2000):
            x = x + 1.0
            x = x * 0.5
    gc.collect()
    gc.collect()  # a record is untracked once what it holds is: the second pass finishes the job
    added = len(gc.get_objects()) - before
    assert added < 400, f"{added} GC-tracked objects for 4,000 events"
    assert len(rec.events) == 4000


def test_internal_failure_stops_recording_but_not_the_code():
    """A failure inside the tracker warns once, keeps what was recorded, and changes no result."""
    from tensormagic.api import TrackingWarning

    calls = []

    def boom(tr, idx, objs):
        calls.append(idx)
        if idx == 2:
            raise RuntimeError("simulated tracker bug")

    x = torch.arange(4.0)
    bare = ((x + 1) * 2 - 3).sum()
    t = tensormagic.track(diagnostics=None)
    with pytest.warns(TrackingWarning, match="stopped recording part-way: RuntimeError: simulated tracker bug"):
        with t as rec:
            t._tracker.record_hooks.append(boom)  # the extension point diagnostics use
            y = ((x + 1) * 2 - 3).sum()
    assert torch.equal(y, bare)
    assert [e.op for e in rec.events] == ["torch.Tensor.add", "torch.Tensor.mul", "torch.Tensor.sub"]
    assert rec.internal_error == "RuntimeError: simulated tracker bug"
    assert calls == [0, 1, 2]  # nothing reached the tracker after the failure
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("engine", ["c", "python"])
def test_a_report_that_cannot_be_built_warns_and_says_so(engine):
    """Events that fail to build when first read (here: a record placed at no line, as a tracker
    bug once left) raise nothing into the reader's code: the report says the recording is
    incomplete and a warning says why."""
    from tensormagic.api import TrackingWarning
    from tensormagic.engine.compiled import INSIDE_COMPILED

    x = torch.arange(4.0)
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        y = x * 2  # noqa: F841
    raw = rec._pending.tr.raw
    raw.append(raw[-1][:4] + (INSIDE_COMPILED,) + raw[-1][5:])
    with pytest.warns(TrackingWarning, match="could not build the report's events: TypeError"):
        text = rec.to_text()
    assert "recording incomplete (TypeError" in text and rec.events == ()
    assert rec.counts()["create"] == 2  # from the records: x * 2 and the planted one; warned once
    assert "recording incomplete: TypeError" in rec.to_html()
