"""A temporary the user's own expression made and bound to no name is named by that expression's
source text (``pred.argmax(1) == yb``), never after a function it was not made in; on both engines.

Expected names are this file's source text, copied by hand."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import tensormagic

ENGINES = ("c", "python")
pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 code has no column positions")


def _labels(rec, op: str | None = None) -> list[str]:
    return [e.tensor.label for e in rec.filter(kind="create") if op is None or e.op == op]


@pytest.mark.parametrize("engine", ENGINES)
def test_chained_expression_names_each_step_by_its_text(engine):
    """In ``acc = (pred.argmax(1) == yb).float().mean()`` each unbound step is named by its text."""
    pred, yb = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with tensormagic.track(engine=engine) as rec:
        acc = (pred.argmax(1) == yb).float().mean()  # noqa: F841
    names = {t.label for t in rec.tensors.values()}
    assert {"pred.argmax(1)", "pred.argmax(1) == yb", "(pred.argmax(1) == yb).float()", "acc"} <= names


@pytest.mark.parametrize("engine", ENGINES)
def test_arithmetic_intermediate_is_named_by_its_operands(engine):
    """``y = x * a + b`` names the product ``x * a`` and the sum ``y``."""
    x, a, b = torch.ones(3), torch.full((3,), 2.0), torch.ones(3)
    with tensormagic.track(engine=engine) as rec:
        y = x * a + b  # noqa: F841
    assert _labels(rec) == ["x * a", "y"]


@pytest.mark.parametrize("engine", ENGINES)
def test_argument_of_a_library_call_is_not_that_calls_temporary(engine):
    """``print(x[1:] * 2)`` makes ``x[1:]`` and ``x[1:] * 2`` before print runs: not "print temporary"."""
    x = torch.ones(3)
    with tensormagic.track(engine=engine) as rec:
        print(x[1:] * 2)
    assert [t.label for t in rec.tensors.values() if t.label != "x"] == ["x[1:]", "x[1:] * 2"]


@pytest.mark.parametrize("engine", ENGINES)
def test_tensor_made_inside_a_library_function_keeps_its_name(engine):
    """Tensors made inside ``clip_grad_norm_`` are its temporaries; the product the line makes of
    its result is named by the line's text."""
    lin = nn.Linear(3, 2)
    lin(torch.ones(1, 3)).sum().backward()
    with tensormagic.track(engine=engine) as rec:
        print(torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0) * 2)
    made = [(e.op, e.tensor.label) for e in rec.filter(kind="create")]
    text = "torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0) * 2"
    assert made[-1] == ("torch.Tensor.mul", f"{text[:47]}…")
    assert {label for _, label in made[:-1]} == {"clip_grad_norm_ temporary"}


@pytest.mark.parametrize("engine", ENGINES)
def test_parameter_wrapping_names_the_randn_by_its_call(engine):
    """In ``p = nn.Parameter(torch.randn(3))`` the randn temporary is ``torch.randn(3)``."""
    with tensormagic.track(engine=engine) as rec:
        p = nn.Parameter(torch.randn(3))  # noqa: F841
    assert _labels(rec, "torch.randn") == ["torch.randn(3)"]


@pytest.mark.parametrize("engine", ENGINES)
def test_long_expression_is_cut_with_an_ellipsis(engine):
    """An expression longer than 48 characters is cut to 47 and an ellipsis."""
    first_tensor_of_a_long_name = torch.ones(2)
    with tensormagic.track(engine=engine) as rec:
        print((first_tensor_of_a_long_name * 2 + first_tensor_of_a_long_name * 3).sum())
    text = "(first_tensor_of_a_long_name * 2 + first_tensor_of_a_long_name * 3)"
    assert f"{text[:47]}…" in _labels(rec)


@pytest.mark.parametrize("engine", ENGINES)
def test_columns_after_non_ascii_text_are_counted_in_bytes(engine):
    """A line with ``é`` before the expression still cuts the right text (columns are UTF-8 bytes)."""
    é = torch.ones(2)
    with tensormagic.track(engine=engine) as rec:
        s = "é"; print(s, é * 2)  # noqa: E702
    assert _labels(rec) == ["é * 2"]


@pytest.mark.parametrize("engine", ENGINES)
def test_tensors_a_for_loop_fetches_are_named_by_its_iterable(engine):
    """Views a DataLoader makes while ``for xb, yb in loader:`` fetches a batch are ``next(loader)``'s
    temporaries, never named by the text of the whole ``for`` statement."""
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.randn(4, 2), torch.arange(4)), batch_size=2)
    with tensormagic.track(engine=engine) as rec:
        for xb, yb in loader:
            xb.sum() + yb.sum()
    fetched = {e.tensor.label for e in rec.filter(kind="view")}
    assert fetched == {"next(loader) temporary"}
    assert not any("for " in t.label for t in rec.tensors.values())



@pytest.mark.parametrize("engine", ENGINES)
def test_a_lambda_on_the_line_does_not_give_its_target_to_the_temporaries(engine):
    """``p = nn.Parameter((lambda v: v * 2)(torch.ones(2)))``: only the Parameter is ``p`` (a
    lambda made the line a place of two code objects, and ``torch.ones(2)`` and ``v * 2`` were
    named ``p`` too)."""
    with tensormagic.track(engine=engine) as rec:
        p = nn.Parameter((lambda v: v * 2)(torch.ones(2)))
    labels = [t.label for t in rec.tensors.values()]
    assert sorted(labels) == ["p", "torch.ones(2)", "v * 2"]  # three tensors, one of them p
    assert rec.tensor("p").tensor() is p


@pytest.mark.parametrize("engine", ENGINES)
def test_gradient_handed_to_a_hook_is_named_by_its_parameter(engine):
    """The gradient a hook ``lambda g: kept.append(g * 2)`` receives, first seen there, is ``g``."""
    w = torch.randn(3, requires_grad=True)
    kept: list[torch.Tensor] = []
    with tensormagic.track(engine=engine) as rec:
        h = w.register_hook(lambda g: kept.append(g * 2))
        (w * 3).sum().backward()
        h.remove()
    (seen,) = [e for e in rec.filter(kind="create") if e.first_seen]
    assert seen.tensor.label == "g"
    (doubled,) = rec.filter(op="torch.Tensor.mul", line=seen.line)
    assert [i.label for i in doubled.inputs] == ["g"]


@pytest.mark.parametrize("engine", ENGINES)
def test_vmap_slice_is_named_by_the_functions_parameter(engine):
    """The per-sample slice ``vmap`` hands ``lambda r: (r * r).sum()`` is ``r``."""
    from torch.func import vmap

    X = torch.randn(5, 3)
    with tensormagic.track(engine=engine) as rec:
        per = vmap(lambda r: (r * r).sum())(X)  # noqa: F841
    (square,) = rec.filter(op="torch.Tensor.mul")
    assert [i.label for i in square.inputs] == ["r", "r"]


@pytest.mark.parametrize("engine", ENGINES)
def test_tensor_a_library_reads_is_not_named_by_the_lines_operand(engine):
    """``ds[1]`` indexes a tensor inside ``TensorDataset.__getitem__`` (through a
    ``ConcatDataset``, whose tensors no name reaches): the tensor is not ``ds``."""
    from torch.utils.data import ConcatDataset, TensorDataset

    ds = ConcatDataset([TensorDataset(torch.randn(4, 2))])
    with tensormagic.track(engine=engine) as rec:
        row = ds[1][0] * 2  # noqa: F841
    (seen,) = [e for e in rec.filter(kind="create") if e.first_seen]
    assert seen.tensor.shape == (4, 2) and seen.tensor.label == seen.tensor.id


def _sq_loss(w, x):
    return (w * x).sum() ** 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tensor_made_inside_a_called_call_is_its_temporary_not_its_value(engine):
    """``g = grad(_sq_loss)(w, x)`` returns a tensor torch.func unwrapped (``g``, no grad_fn), not
    the ``torch.autograd.grad`` result made inside it: that one is ``grad(_sq_loss) temporary``,
    never the expression ``grad(_sq_loss)(w, x)``."""
    from torch.func import grad

    w, x = torch.ones(3), torch.full((3,), 2.0)
    with tensormagic.track(engine=engine) as rec:
        g = grad(_sq_loss)(w, x)
    assert g.grad_fn is None and g.tolist() == [24.0, 24.0, 24.0]  # 2·(w·x)·x = 2·6·2, by hand
    inner = [e.tensor for e in rec.filter(kind="create") if e.op == "torch.autograd.grad"]
    assert [t.label for t in inner] == ["grad(_sq_loss) temporary"]
    assert all("grad(_sq_loss)(w, x)" not in t.names for t in rec.tensors.values())


@pytest.mark.parametrize("engine", ENGINES)
def test_a_torch_op_called_through_a_lookup_is_its_expressions_value(engine):
    """``fns[0](x) + 1`` and ``getattr(torch, "relu")(x) + 1`` call the op itself: the op's result
    is named by its expression (no function stands between), not a "temporary"."""
    fns, x = [torch.relu], torch.ones(2)
    with tensormagic.track(engine=engine) as rec:
        a = fns[0](x) + 1  # noqa: F841
        b = getattr(torch, "relu")(x) + 1  # noqa: B009, F841 - the lookup is what is tested
    assert _labels(rec, "torch.relu") == ["fns[0](x)", 'getattr(torch, "relu")(x)']
