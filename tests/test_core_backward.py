"""What a backward call records, in each form it can be called: which leaves got gradients,
whether they accumulated, and the gradients' own events, at the line that ran backward.

Expected values are torch's (``.grad`` after the call) or worked out by hand; lines are counted
in this file's source text (``testkit.line_with``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from testkit import line_with

import tensormagic

ENGINES = ["c", "python"]


def grads(e) -> list[tuple[str, bool]]:
    return [(g.tensor.label, g.accumulated) for g in e.grads]


@pytest.mark.parametrize("engine", ENGINES)
def test_backward_inputs_keyword_names_only_those_leaves(engine: str) -> None:
    """backward(inputs=[w]) lists w alone, accumulated onto the gradient the first backward left; b keeps its own."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        w = torch.ones(2, requires_grad=True)
        b = torch.ones(2, requires_grad=True)
        (w * b).sum().backward()
        (w * b * 2).sum().backward(inputs=[w])
    assert torch.equal(w.grad, torch.full((2,), 3.0)) and torch.equal(b.grad, torch.ones(2))  # torch: 1 + 2, 1
    first, second = rec.filter(kind="backward")
    assert sorted(grads(first)) == [("b", False), ("w", False)]
    assert grads(second) == [("w", True)]
    assert (first.line, second.line) == (line_with("(w * b).sum().backward()"), line_with("(w * b * 2).sum()"))
    made = [e.tensor.label for e in rec.filter(kind="create") if e.op == "torch.Tensor.backward"]
    assert sorted(made) == ["b.grad", "w.grad"]  # the second backward adds into w.grad: no new gradient


@pytest.mark.parametrize("engine", ENGINES)
def test_autograd_backward_with_keywords(engine: str) -> None:
    """torch.autograd.backward(tensors=..., inputs=...) records its root and the one leaf asked for."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        w = torch.ones(2, requires_grad=True)
        b = torch.ones(2, requires_grad=True)
        b.grad = torch.ones(2)  # a gradient left from before: not this call's
        loss = (w * b).sum()
        torch.autograd.backward(tensors=loss, inputs=w)  # one tensor, not a list
    (e,) = rec.filter(kind="backward")
    assert (e.op, e.tensor.label, grads(e)) == ("torch.autograd.backward", "loss", [("w", False)])
    assert e.line == line_with("torch.autograd.backward(tensors=loss")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("form", ["positional", "keywords"])
def test_autograd_grad_fills_no_grad_and_records_what_it_returns(engine: str, form: str) -> None:
    """autograd.grad records the returned gradients (an unused input's None skipped), at its line; .grad stays None."""
    with tensormagic.track(engine=engine, diagnostics=None, stats=True) as rec:
        w = torch.ones(2, requires_grad=True)
        b = torch.ones(2, requires_grad=True)
        y = (w * 3).sum()
        if form == "positional":
            gb, gw = torch.autograd.grad(y, [b, w], allow_unused=True)
        else:
            gb, gw = torch.autograd.grad(outputs=y, inputs=[b, w], allow_unused=True)
    assert gb is None and torch.equal(gw, torch.full((2,), 3.0)) and w.grad is None  # torch's answer
    (e,) = rec.filter(kind="backward")
    line = line_with("gb, gw = torch.autograd.grad(y" if form == "positional" else "inputs=[b, w]")
    assert (e.op, e.tensor.label, grads(e), e.line) == ("torch.autograd.grad", "y", [("w", False)], line)
    (made,) = [c for c in rec.filter(kind="create") if c.op == "torch.autograd.grad"]
    assert (made.tensor.label, [r.label for r in made.inputs], made.line) == ("gw", ["w"], line)
    assert (made.stats.min, made.stats.max) == (3.0, 3.0) and e.stats.min == 6.0  # d(3w)/dw, and y = 3 + 3


@pytest.mark.parametrize("engine", ENGINES)
def test_gradients_backward_fills_are_created_at_its_line_with_values(engine: str) -> None:
    """Each gradient backward fills is a create at the backward line, naming its leaf, with its statistics."""
    with tensormagic.track(engine=engine, diagnostics=None, stats=True) as rec:
        w = torch.ones(2, requires_grad=True)
        (w * 4).sum().backward()
    (g,) = [e for e in rec.filter(kind="create") if e.op == "torch.Tensor.backward"]
    assert g.line == line_with("(w * 4).sum().backward()") and "w.grad" in g.tensor.names
    assert g.note == "gradient of w, filled in by backward"
    assert g.stats is not None and (g.stats.min, g.stats.max) == (4.0, 4.0)  # d(4w)/dw by hand


@pytest.mark.parametrize("engine", ENGINES)
def test_a_leaf_made_before_the_block_is_first_seen_at_the_backward_line(engine: str) -> None:
    """A leaf and root from before the block are seen where backward runs, and its gradient made there."""
    w = torch.ones(3, requires_grad=True)
    y = (w * 2).sum()
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        y.backward()
    line = line_with("        y.backward()")
    (e,) = rec.filter(kind="backward")
    assert (e.line, grads(e)) == (line, [("w", False)])
    assert {c.line for c in rec.filter(kind="create")} == {line}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_gradient_on_meta_counts_as_accumulated_and_reads_no_values(engine: str) -> None:
    """A meta leaf's leftover gradient cannot be read: it is taken as non-zero, and tracking goes on."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        w = torch.ones(2, device="meta", requires_grad=True)
        (w * 2).sum().backward()
        (w * 2).sum().backward()
    assert [grads(e) for e in rec.filter(kind="backward")] == [[("w", False)], [("w", True)]]
    assert rec.internal_error is None


@pytest.mark.parametrize("engine", ENGINES)
def test_backward_into_a_non_leaf_input_reads_no_grad_of_a_non_leaf(engine: str) -> None:
    """backward(inputs=[h]) on a non-leaf h is recorded as torch fills it; no non-leaf .grad is read before (it warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tensormagic.track(engine=engine, diagnostics=None) as rec:
            w = torch.ones(2, requires_grad=True)
            h = w * 2
            (h * h).sum().backward(inputs=[h])
    assert h.retains_grad and torch.equal(h.grad, torch.full((2,), 4.0))  # torch: inputs= makes h keep d(h²)/dh
    (e,) = rec.filter(kind="backward")
    assert grads(e) == [("h", False)]


#: the forms ``inputs=`` takes besides a list: a dict (torch takes its values), a generator
#: (tracking must not use it up before torch does), one tensor
INPUT_FORMS = {
    "dict": lambda w: {"w": w},
    "generator": lambda w: (t for t in [w]),
    "one tensor": lambda w: w,
}


@pytest.mark.parametrize("form", INPUT_FORMS)
@pytest.mark.parametrize("engine", ENGINES)
def test_backward_inputs_in_any_form_fill_and_name_w(engine: str, form: str) -> None:
    """backward(inputs=…) as a dict, a generator or one tensor fills w as untracked and lists w as the leaf it filled."""
    make = INPUT_FORMS[form]
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        w = torch.ones(2, requires_grad=True)
        b = torch.ones(2, requires_grad=True)
        (w * b * 3).sum().backward(inputs=make(w))
    assert torch.equal(w.grad, torch.full((2,), 3.0)) and b.grad is None  # torch: d(3wb)/dw = 3b
    (e,) = rec.filter(kind="backward")
    assert grads(e) == [("w", False)]


@pytest.mark.parametrize("engine", ENGINES)
def test_an_input_left_without_a_gradient_skips_only_itself(engine: str) -> None:
    """backward(inputs=[u, b]) with u unused leaves u.grad None; b, listed after it, is still recorded."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        u = torch.ones(2, requires_grad=True)
        b = torch.ones(2, requires_grad=True)
        (b * 2).sum().backward(inputs=[u, b])
    assert u.grad is None and torch.equal(b.grad, torch.full((2,), 2.0))  # torch: u unused, d(2b)/db = 2
    (e,) = rec.filter(kind="backward")
    assert grads(e) == [("b", False)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sparse_gradient_left_from_before_counts_as_accumulated(engine: str) -> None:
    """An Embedding(sparse=True) weight's second backward adds into its sparse gradient: accumulated."""
    with tensormagic.track(engine=engine, diagnostics=None) as rec:
        emb = torch.nn.Embedding(4, 2, sparse=True)
        idx = torch.tensor([1, 2])
        emb(idx).sum().backward()
        emb(idx).sum().backward()
    assert emb.weight.grad.layout == torch.sparse_coo  # torch: a sparse gradient
    assert [grads(e) for e in rec.filter(kind="backward")] == [[("emb.weight", False)], [("emb.weight", True)]]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backward_lists_the_gradient_retain_grad_kept(engine):
    """``h.retain_grad()`` then ``loss.backward()`` fills ``h.grad`` (2·h = 4 each, by hand): the
    backward row lists ``h.grad`` after ``w.grad``, and ``h.grad`` is a tensor the block made."""
    w = torch.ones(3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        h = w * 2
        h.retain_grad()
        loss = (h**2).sum()
        loss.backward()
    assert h.grad.tolist() == [4.0, 4.0, 4.0]
    (bw,) = rec.filter(kind="backward")
    assert [g.tensor.label for g in bw.grads] == ["w", "h"]
    assert "h.grad" in [e.tensor.label for e in rec.filter(kind="create")]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_retained_tensor_outside_the_backwards_graph_is_not_listed(engine):
    """A backward from ``(w * 3).sum()`` does not reach ``h`` (retained, filled by the first
    backward): its row lists ``w.grad`` only; a second backward through ``h`` lists ``h.grad``
    again, accumulated (4 + 4 = 8, by hand)."""
    w = torch.ones(3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        h = w * 2
        h.retain_grad()
        (h**2).sum().backward(retain_graph=True)
        (w * 3).sum().backward()
        (h**2).sum().backward()
    assert h.grad.tolist() == [8.0, 8.0, 8.0]
    got = [[(g.tensor.label, g.accumulated) for g in e.grads] for e in rec.filter(kind="backward")]
    assert got == [[("w", False), ("h", False)], [("w", True)], [("w", True), ("h", True)]]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backward_adding_into_a_zeroed_grad_says_it_wrote_in_place(engine):
    """After ``w.grad.zero_()``, a backward adds into that same tensor (torch: the same object,
    its version up), which no write event shows: the row notes ``added in place into w.grad,
    which held zeros``; the next backward's is "(accumulated)" and needs no note."""
    w = torch.ones(2, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        (w * 2).sum().backward()
        g = w.grad
        w.grad.zero_()
        (w * 3).sum().backward()
        (w * 4).sum().backward()
    assert w.grad is g and w.grad.tolist() == [7.0, 7.0] and g._version == 3  # zero_, then two adds
    rows = rec.filter(kind="backward")
    assert [e.note for e in rows] == [None, "added in place into w.grad, which held zeros", None]
    assert [[x.accumulated for x in e.grads] for e in rows] == [[False], [False], [True]]
