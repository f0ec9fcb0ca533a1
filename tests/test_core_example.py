"""The autograd example of the core engine issue, event by event."""

from __future__ import annotations

import sys

import pytest
import torch
from testkit import autograd_example


def _example():
    ex = autograd_example()
    return ex.rec, ex.x, ex.y, ex.z, ex.out


def test_creates_each_tensor_with_its_name_and_grad_fn():
    """Each tensor of the example is created with its name, shape, dtype, device and grad_fn."""
    rec, *_ = _example()
    creates = [(e.tensor.label, e.op, e.tensor.grad_fn) for e in rec.filter(kind="create") if e.origin == "op"]
    assert creates[0] == ("x", "torch.ones", None)
    assert creates[1] == ("y", "torch.Tensor.add", "AddBackward0")
    # Python 3.10 has no column positions to name the unbound ``y * y`` by: it keeps its id
    assert creates[2][1:] == ("torch.Tensor.mul", "MulBackward0")
    assert creates[2][0] == "y * y" if sys.version_info >= (3, 11) else creates[2][0].startswith("t")
    assert creates[3] == ("z", "torch.Tensor.mul", "MulBackward0")
    assert creates[4] == ("out", "torch.Tensor.mean", "MeanBackward0")
    x = rec.tensor("x").ref
    assert (x.shape, x.dtype, x.device, x.requires_grad, x.is_leaf) == ((2, 2), "float32", "cpu", True, True)


def test_inputs_name_where_a_tensor_came_from():
    """A create event lists the tensors it was computed from, the parallel y*y inputs included."""
    rec, *_ = _example()
    y_times_y = rec.filter(kind="create", line=None)[2]
    assert [r.label for r in y_times_y.inputs] == ["y", "y"]


def test_lines_are_the_files_own_numbering():
    """Outside IPython, an event's line is the line in the file and its source is that line's text."""
    rec, *_ = _example()
    e = rec.filter(name="y", kind="create")[0]
    assert e.source == "y = x + 2"
    assert e.file is not None and e.file.endswith("testkit.py")
    assert rec.filter(kind="create", name="z")[0].line == e.line + 1


def test_backward_event_lists_the_leaf_gradient():
    """The backward event names its root and each leaf that received a gradient, not accumulated."""
    rec, x, *_ = _example()
    (bw,) = rec.filter(kind="backward")
    assert bw.op == "torch.Tensor.backward" and bw.tensor.label == "out"
    (g,) = bw.grads
    assert (g.tensor.label, g.shape, g.dtype, g.accumulated) == ("x", (2, 2), "float32", False)
    assert torch.equal(x.grad, torch.full((2, 2), 4.5))


def test_grad_is_a_tracked_tensor_with_its_value():
    """``x.grad`` filled by backward is a tracked tensor named ``x.grad`` whose stats say all 4.5."""
    rec, *_ = _example()
    g = rec.tensor("x.grad")
    assert g.created is not None and g.created.origin == "seen"
    assert g.stats().summary() == "all 4.5"


def test_grad_graph_chain_from_out_to_the_leaf():
    """The captured graph of ``out`` reads MeanBackward0 → MulBackward0 → MulBackward0 ⇉ AddBackward0 → AccumulateGrad(x)."""
    rec, *_ = _example()
    g = rec.grad_graph("out")
    assert g.chain() == "MeanBackward0 → MulBackward0 → MulBackward0 ⇉ AddBackward0 → AccumulateGrad(x)"


def test_grad_graph_keeps_parallel_edges_and_names_producers():
    """``y * y`` has two edges to AddBackward0, and nodes list the tensors they produced."""
    rec, *_ = _example()
    g = rec.grad_graph("out")
    add = next(n for n in g.nodes if n.name == "AddBackward0")
    assert add.tensors == ("y",)
    assert sum(1 for _, dst in g.edges if dst == add.id) == 2
    assert next(n for n in g.nodes if n.name == "AccumulateGrad").leaf == "x"


def test_grad_graph_accepts_the_tensor_itself():
    """``grad_graph`` takes a live tensor as well as a name."""
    rec, _x, _y, z, _out = _example()
    assert rec.grad_graph(z).chain().startswith("MulBackward0 → MulBackward0")


def test_text_report_shows_names_ops_and_grad():
    """The text report names each tensor, its grad_fn, the graph and x.grad's value."""
    rec, *_ = _example()
    text = rec.to_text()
    for needle in ("x = torch.ones(2, 2, requires_grad=True)", "AddBackward0", "MeanBackward0",
                   "AccumulateGrad(x)", "x.grad: all 4.5", "1 backward"):
        assert needle in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 code has no column positions")
def test_unbound_intermediate_is_named_by_its_expression():
    """The ``y * y`` of ``z = y * y * 3``, bound to no name, is named by that source text."""
    rec, *_ = _example()
    r = rec.tensor("y * y")
    assert r.names == ("y * y",) and r.ref.grad_fn == "MulBackward0"
    assert r.created is not None and r.created.source == "z = y * y * 3"
