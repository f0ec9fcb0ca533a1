"""The classic tutorial material, each as the events it produces, line by line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tensormagic


def _line_of(rec, text):
    return next(e.line for e in rec.events if e.source == text)


def test_torch_add_creates_and_add_inplace_writes():
    """``torch.add(x, y)`` creates a tensor; ``y.add_(x)`` writes y in place, version 0→1."""
    x, y = torch.rand(5, 3), torch.rand(5, 3)
    with tensormagic.track() as rec:
        s = torch.add(x, y)
        y.add_(x)
    (c,) = rec.filter(kind="create")
    assert (c.op, c.tensor.label, [r.label for r in c.inputs]) == ("torch.add", "s", ["x", "y"])
    (w,) = rec.filter(kind="inplace")
    assert (w.op, w.tensor.label, w.version_before, w.version_after) == ("torch.Tensor.add_", "y", 0, 1)
    assert s.shape == (5, 3)


def test_augmented_assignment_is_an_inplace_add():
    """``x += 1`` is recorded as the in-place ``add_`` it is."""
    x = torch.zeros(3)
    with tensormagic.track() as rec:
        x += 1
    (w,) = rec.filter(kind="inplace")
    assert w.op == "torch.Tensor.add_" and w.tensor.label == "x" and w.source == "x += 1"


def test_view_shares_storage_with_its_base():
    """``x.view(16)`` and ``x.view(-1, 8)`` are views whose base is x, on x's storage."""
    x = torch.randn(4, 4)
    with tensormagic.track() as rec:
        y = x.view(16)
        z = x.view(-1, 8)
    views = rec.filter(kind="view")
    assert [(v.tensor.label, v.base.label, v.tensor.shape) for v in views] == [("y", "x", (16,)), ("z", "x", (2, 8))]
    assert views[0].tensor.storage_id == views[0].base.storage_id == views[1].tensor.storage_id
    assert y.size() == (16,) and z.size() == (2, 8)


def test_write_through_a_view_names_the_base():
    """A write through a view is an in-place event whose aliases include the base."""
    x = torch.zeros(4, 4)
    with tensormagic.track() as rec:
        v = x.view(16)
        v[0] = 7
    (w,) = rec.filter(kind="inplace")
    assert w.op == "torch.Tensor.__setitem__" and w.tensor.label == "v"
    assert [a.label for a in w.aliases] == ["x"]
    assert x[0, 0] == 7


def test_view_base_is_the_immediate_input():
    """A view of a view has the first view as its base, not the root."""
    x = torch.zeros(4, 4)
    with tensormagic.track() as rec:
        a = x.view(16)
        b = a[2:6]
    assert rec.filter(kind="view", name="b")[0].base.label == "a"
    assert b.shape == (4,)


def test_from_numpy_is_seen_at_its_binding_line():
    """``torch.from_numpy`` dispatches no op, yet gets a float64 create event with origin 'seen' at its line."""
    a = np.ones(5)
    with tensormagic.track() as rec:
        b = torch.from_numpy(a)
        np.add(a, 1, out=a)
    (c,) = rec.filter(kind="create")
    assert (c.origin, c.op, c.tensor.label, c.tensor.dtype) == ("seen", "torch.from_numpy", "b", "float64")
    assert c.source == "b = torch.from_numpy(a)"
    assert "NumPy" in c.note and b[0] == 2


def test_from_numpy_used_by_an_op_is_seen_at_its_line():
    """A NumPy-born tensor used by an op is created at the line that bound it, before the op."""
    a = np.ones(3)
    with tensormagic.track() as rec:
        b = torch.from_numpy(a)
        c = b * 2
    kinds = [(e.kind, e.tensor.label, e.origin) for e in rec.events]
    assert kinds == [("create", "b", "seen"), ("create", "c", "op")]
    assert rec.events[0].line + 1 == rec.events[1].line and c.dtype == torch.float64


def test_unnamed_numpy_born_tensor_is_named_by_its_call():
    """A NumPy-born tensor that no variable holds is made by the call on its line, not by 'torch.None'."""
    a = np.ones(3)
    with tensormagic.track() as rec:
        c = torch.from_numpy(a) * 2
    seen = rec.events[0]
    assert (seen.origin, seen.op) == ("seen", "torch.from_numpy")
    assert "NumPy" in seen.note and c.dtype == torch.float64


def test_numpy_born_tensor_never_takes_a_dead_tensors_storage():
    """A NumPy-born tensor made right after a tensor died is not put on that tensor's storage,
    although its storage is often allocated at the dead one's address."""
    a = np.ones(3, dtype=np.float32)
    with tensormagic.track() as rec:
        for _ in range(50):
            s = torch.ones(3).sum().item()  # noqa: F841 - both tensors die on this line
            c = torch.from_numpy(a) * 2  # noqa: F841
    numpy_born = {e.tensor.storage_id for e in rec.events if e.origin == "seen"}
    op_made = {e.tensor.storage_id for e in rec.events if e.origin == "op"}
    assert len(numpy_born) == 50 and not numpy_born & op_made


def test_tensor_seen_without_an_op_shares_a_live_tensors_storage():
    """``nn.Parameter(w)`` is on w's storage while w lives, and on the storage of a live tensor
    that shares it once the tensor the storage is named after is gone."""
    with tensormagic.track() as rec:
        w = torch.randn(4)
        p = torch.nn.Parameter(w)
        x = torch.randn(4)
        v = x.detach()  # on x's storage; unlike a view, it does not keep x alive
        del x
        q = torch.nn.Parameter(v)
    sid = {e.tensor.label: e.tensor.storage_id for e in rec.events}
    assert sid["p"] == sid["w"] and sid["q"] == sid["v"] != sid["w"]
    assert p.data_ptr() == w.data_ptr() and q.data_ptr() == v.data_ptr()


def test_numpy_bridge_from_tensor_is_recorded():
    """``torch.ones(5).numpy()`` records the creation and the NumPy array that shares its memory."""
    with tensormagic.track() as rec:
        t = torch.ones(5)
        n = t.numpy()
    assert [e.kind for e in rec.events] == ["create", "numpy"]
    assert rec.events[1].tensor.label == "t" and "shar" in rec.to_text()
    t.add_(1)
    assert n[0] == 2


def test_moves_to_meta_and_dtype_change():
    """``ones_like(device=)``, ``.to(d)``, ``x + y`` and ``.to("cpu", double)`` give creates and moves."""
    d = torch.device("meta")
    x = torch.ones(3)
    with tensormagic.track() as rec:
        y = torch.ones_like(x, device=d)
        xd = x.to(d)
        z = xd + y
        back = x.to("cpu", torch.double)  # z lives on meta, which has no values to bring back
    events = [(e.kind, e.tensor.label) for e in rec.events]
    assert events == [("create", "y"), ("move", "xd"), ("create", "z"), ("move", "back")]
    mv = rec.filter(kind="move")
    assert (mv[0].from_device, mv[0].to_device, mv[0].nbytes, mv[0].source_tensor.label) == ("cpu", "meta", 12, "x")
    assert (mv[1].from_dtype, mv[1].to_dtype, mv[1].from_device, mv[1].to_device) == ("float32", "float64", "cpu", "cpu")
    assert rec.events[0].tensor.device == "meta" and z.device.type == "meta" and back.dtype == torch.float64


def test_to_same_device_records_nothing():
    """``.cpu()`` on a CPU tensor returns the tensor itself and records nothing."""
    x = torch.ones(3)
    with tensormagic.track() as rec:
        y = x.cpu()
    assert rec.events == () and y is x


def test_no_grad_result_does_not_require_grad():
    """Under ``torch.no_grad()``, ``(x**2).requires_grad`` is False and the event says so."""
    x = torch.ones(3, requires_grad=True)
    with tensormagic.track() as rec:
        with torch.no_grad():
            r = (x**2).requires_grad
    assert r is False
    (c,) = rec.filter(kind="create")
    assert c.tensor.requires_grad is False and c.tensor.grad_fn is None


def test_detach_and_data_are_views():
    """``detach()`` and ``.data`` share storage: recorded as views of their tensor."""
    x = torch.ones(3, requires_grad=True)
    with tensormagic.track() as rec:
        d = x.detach()
        e = x.data
    assert [(v.tensor.label, v.base.label) for v in rec.filter(kind="view")] == [("d", "x"), ("e", "x")]
    assert d.requires_grad is False and e.requires_grad is False


def test_write_through_data_is_keyed_on_storage():
    """``x.data.mul_(2)`` leaves x's version alone, yet the write names x as sharing the memory."""
    x = torch.ones(3, requires_grad=True)
    with tensormagic.track() as rec:
        x.data.mul_(2)
    (w,) = rec.filter(kind="inplace")
    assert [a.label for a in w.aliases] == ["x"] and x._version == 0


def test_module_to_reports_one_move_per_parameter():
    """``Module.to(float64)`` swaps parameter data in place: one move per parameter, same objects."""
    lin = torch.nn.Linear(3, 2)
    w_before = lin.weight
    with tensormagic.track() as rec:
        lin.to(torch.float64)
    moves = rec.filter(kind="move")
    assert sorted(m.tensor.label for m in moves) == ["lin.bias", "lin.weight"]
    assert all(m.inplace and (m.from_dtype, m.to_dtype) == ("float32", "float64") for m in moves)
    assert sum(m.nbytes for m in moves) == (6 + 2) * 8 and lin.weight is w_before
    assert len(rec.events) == 2


def test_module_to_meta_is_a_device_move():
    """``Module.to("meta")`` makes new parameters, each reported as a move cpu→meta."""
    lin = torch.nn.Linear(3, 2)
    with tensormagic.track() as rec:
        lin.to("meta")
    moves = rec.filter(kind="move")
    assert len(moves) == 2 and all((m.from_device, m.to_device) == ("cpu", "meta") for m in moves)


def test_copy_across_devices_is_an_inplace_move():
    """``dst.copy_(src)`` across devices is a move with inplace=True."""
    src = torch.ones(4)
    dst = torch.empty(4, device="meta")
    with tensormagic.track() as rec:
        dst.copy_(src)
    (m,) = rec.filter(kind="move")
    assert (m.from_device, m.to_device, m.inplace, m.tensor.label, m.source_tensor.label) == (
        "cpu", "meta", True, "dst", "src")


def test_module_path_of_ops_inside_a_model():
    """Ops inside an ``nn.Module`` carry its dotted path, named after the variable."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    with tensormagic.track() as rec:
        y = model(torch.ones(2, 4))
    mods = {e.module for e in rec.events if e.module}
    assert mods == {"model.0", "model.1"} and y.shape == (2, 3)
    assert all(e.source == "y = model(torch.ones(2, 4))" for e in rec.events)


def test_parameter_names_come_from_the_module():
    """Module parameters and list/dict items are named by the expression that reaches them."""
    model = torch.nn.Linear(2, 2)
    params = [torch.zeros(2)]
    d = {"w": torch.zeros(2)}
    with tensormagic.track() as rec:
        model.weight.data.zero_()
        params[0].add_(1)
        d["w"].add_(1)
    labels = [e.tensor.label for e in rec.filter(kind="inplace")]
    assert labels[1:] == ["params[0]", "d['w']"]
    assert rec.filter(kind="view")[0].base.label == "model.weight"


def test_gone_tensor_keeps_its_assignment_name():
    """A tensor freed before the block ends keeps the target of its assignment line."""
    with tensormagic.track() as rec:
        for _ in range(2):
            h = torch.ones(2) * 3
        del h
    assert [e.tensor.label for e in rec.filter(kind="create", op="mul")] == ["h", "h"]


def test_each_loop_iteration_of_an_accumulating_line_is_named():
    """``acc = acc + i`` in a loop: every iteration's result is ``acc``, not an unnamed intermediate."""
    with tensormagic.track() as rec:
        acc = torch.zeros(())
        for i in range(3):
            acc = acc + i
    assert [e.tensor.label for e in rec.filter(kind="create")] == ["acc"] * 4


def test_ops_inside_one_module_call_name_only_its_result():
    """``logits = model(x)``: the hidden activation is not called ``logits``, the output is."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(inplace=True), torch.nn.Linear(3, 2))
    with tensormagic.track() as rec:
        logits = model(torch.ones(5, 4))
    made = [(e.tensor.label, e.module) for e in rec.filter(kind="create") if e.module]
    assert made[-1] == ("logits", "model.2") and made[0][0] != "logits" and logits.shape == (5, 2)


def test_live_tensor_no_variable_names_takes_its_lines_name_in_its_graph():
    """A tensor alive at the block's end that no variable reaches is named by its line, graph included."""
    w = torch.ones(2, requires_grad=True)
    box = type("Box", (), {})()

    def make():
        hidden = w * 3
        return hidden

    with tensormagic.track() as rec:
        box.kept = make()
        other = w + 1  # noqa: F841 - a named tensor after it: the run scan must stop at its line
    graph = rec.grad_graph(box.kept)
    assert graph.node(graph.root).tensors == ("hidden",) and rec.tensor(box.kept).names == ("hidden",)


def test_many_live_unnamed_tensors_are_named_in_one_pass():
    """Past 64 live tensors without a variable, one pass over the block names them all the same way."""
    w = torch.ones(2, requires_grad=True)
    box = type("Box", (), {})()
    box.kept = []

    def make():
        part = w * 3
        return part

    with tensormagic.track() as rec:
        for _ in range(70):
            box.kept.append(make())
    roots = [rec.grad_graph(t) for t in box.kept]
    assert {g.node(g.root).tensors for g in roots} == {("part",)} and len(rec.filter(kind="create")) == 70



class _Own(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).relu()


@pytest.mark.parametrize("engine", ("c", "python"))
def test_numpy_born_argument_of_a_module_is_not_its_output(engine):
    """In ``o = lin(torch.from_numpy(a))`` the NumPy-born input is made by ``torch.from_numpy``
    (the call on its line that makes tensors no op shows), not by ``lin``, and is not named
    "lin output"; first met inside the user's own module's forward (``self.fc(x).relu()``) it is
    made by no op that line names, not by ``relu``, nor named ``net.fc output``."""
    a = np.ones((2, 4), dtype=np.float32)
    lin, net = torch.nn.Linear(4, 2), _Own()
    with tensormagic.track(engine=engine) as rec:
        o = lin(torch.from_numpy(a))  # noqa: F841
        p = net(torch.from_numpy(a))  # noqa: F841
    first, second = [e for e in rec.events if e.origin == "seen"]
    assert first.op == "torch.from_numpy" and "lin" not in first.tensor.label and "NumPy" in first.note
    assert second.op == "(no visible op)"
    assert second.note == "first seen here: made before this block, or by code the tracker cannot see"
    assert second.tensor.label == second.tensor.id
