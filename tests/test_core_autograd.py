"""Backward calls, gradients and tensors that appear without a visible op."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import tensormagic


def test_autograd_grad_is_a_backward_event():
    """``torch.autograd.grad`` is a backward event whose grads pair inputs with the returned gradients."""
    x = torch.ones(3, requires_grad=True)
    with tensormagic.track() as rec:
        (g,) = torch.autograd.grad((x * 3).sum(), x)
    (bw,) = rec.filter(kind="backward")
    assert bw.op == "torch.autograd.grad" and [gr.tensor.label for gr in bw.grads] == ["x"]
    assert rec.tensor("g").created.op == "torch.autograd.grad" and x.grad is None


def test_autograd_backward_function_is_a_backward_event():
    """``torch.autograd.backward`` is named and fills the leaf's grad."""
    w = torch.ones(2, requires_grad=True)
    with tensormagic.track() as rec:
        torch.autograd.backward((w * w).sum())
    (bw,) = rec.filter(kind="backward")
    assert bw.op == "torch.autograd.backward" and bw.grads[0].tensor.label == "w"


def test_second_backward_accumulates():
    """A backward onto a non-zero ``.grad`` is marked accumulated; the first is not."""
    w = torch.ones(2, requires_grad=True)
    with tensormagic.track() as rec:
        (w * 2).sum().backward()
        (w * 2).sum().backward()
    first, second = rec.filter(kind="backward")
    assert (first.grads[0].accumulated, second.grads[0].accumulated) == (False, True)
    assert torch.equal(w.grad, torch.full((2,), 4.0))


def test_zeroed_grad_is_not_accumulated():
    """After ``grad.zero_()`` a backward adds onto zeros: not accumulated."""
    w = torch.ones(2, requires_grad=True)
    (w * 2).sum().backward()
    with tensormagic.track() as rec:
        w.grad.zero_()
        (w * 2).sum().backward()
    assert rec.filter(kind="backward")[0].grads[0].accumulated is False


def test_out_argument_is_an_inplace_write():
    """``torch.add(a, b, out=c)`` writes c in place."""
    a, b, c = torch.ones(2), torch.ones(2), torch.empty(2)
    with tensormagic.track() as rec:
        torch.add(a, b, out=c)
    (w,) = rec.filter(kind="inplace")
    assert (w.tensor.label, w.op) == ("c", "torch.add") and w.version_after == w.version_before + 1


def test_inplace_dropout_positional_flag_is_seen():
    """``F.dropout(h, 0.5, True, True)`` writes h in place even with the flag given positionally."""
    torch.manual_seed(0)
    h = torch.ones(8)
    with tensormagic.track() as rec:
        nn.functional.dropout(h, 0.5, True, True)
    assert rec.filter(kind="inplace")[0].tensor.label == "h"


def test_parameter_wrapping_is_seen():
    """``nn.Parameter(t)`` makes a tensor no op shows; it is created 'seen' at its line."""
    with tensormagic.track() as rec:
        p = nn.Parameter(torch.zeros(3))
        q = p * 2
    seen = [e for e in rec.events if e.origin == "seen"]
    assert [(e.tensor.label, e.op) for e in seen] == [("p", "nn.Parameter")] and q.requires_grad


def test_torch_load_result_is_seen():
    """A tensor loaded with ``torch.load`` gets a 'seen' create event at its line."""
    buf = io.BytesIO()
    torch.save(torch.arange(3), buf)
    buf.seek(0)
    with tensormagic.track() as rec:
        loaded = torch.load(buf)
    (e,) = [e for e in rec.events if e.tensor.label == "loaded"]
    assert (e.kind, e.source) == ("create", "loaded = torch.load(buf)") and loaded[2] == 2


def test_module_built_under_tracking_names_its_parameters():
    """An ``nn.Linear`` built in the block: its parameters appear at the constructor's line, named."""
    with tensormagic.track() as rec:
        lin = nn.Linear(4, 2)
    writes = [(e.tensor.label, e.op) for e in rec.filter(kind="inplace")]
    assert writes == [("lin.weight", "torch.nn.init.kaiming_uniform_"), ("lin.bias", "torch.nn.init.uniform_")]
    assert all(e.source == "lin = nn.Linear(4, 2)" for e in rec.events)
    assert "lin" not in {e.tensor.label for e in rec.events}


def test_ops_inside_a_function_use_the_callers_file_line():
    """An op inside a user function is placed at the function's own line, in this file."""

    def double(t):
        return t * 2

    with tensormagic.track() as rec:
        double(torch.ones(1))
    assert rec.filter(op="mul")[0].source == "return t * 2"


def test_prior_cell_provenance_is_kept_for_live_tensors():
    """A tensor created in one block remembers where, for later blocks and ``%tensorinfo``."""
    from tensormagic.engine import identity

    with tensormagic.track():
        keep = torch.ones(2)
    cell, fn, line, op = identity.created_where(keep)
    assert op == "torch.ones" and fn.endswith("test_core_autograd.py") and line is not None


class _Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inp):
        return inp.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g


@pytest.mark.parametrize("engine", ["c", "python"])
def test_a_custom_functions_output_says_apply_gave_it_its_grad_fn(engine):
    """``y = _Relu.apply(x)``: the ``clamp`` inside ``forward`` made ``y`` with no grad_fn (its row
    says so), then ``apply`` gave it ``_ReluBackward`` (torch: ``y.grad_fn``), which the row notes."""
    x = torch.randn(4, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        y = _Relu.apply(x)
    assert type(y.grad_fn).__name__ == "_ReluBackward"
    (made,) = rec.filter(kind="create", op="torch.Tensor.clamp")
    assert made.tensor.grad_fn is None
    assert made.note == "_Relu.apply then gave it grad_fn _ReluBackward"
