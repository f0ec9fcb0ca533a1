"""``operands.operand_name``: which name the source gave an op's input, and silence where the
source does not say.  Expected names are the expressions' own text, read by hand."""

from __future__ import annotations

import pytest

from tensormagic.engine.operands import operand_name

T = "torch.Tensor."


@pytest.mark.parametrize(("expression", "func", "n", "position", "name"), [
    ("g * 2", "mul", 1, 0, "g"),
    ("2 * g", "mul", 1, 0, "g"),
    ("2 - g", "__rsub__", 1, 0, "g"),
    ("-1.5 * self.h", "mul", 1, 0, "self.h"),
    ("a - b", "sub", 2, 1, "b"),
    ("r * r", "mul", 2, 0, "r"),
    ("2 < g", "gt", 1, 0, "g"),
    ("-g", "neg", 1, 0, "g"),
    ("g.sum()", "sum", 1, 0, "g"),
    ("g.add(h)", "add", 2, 0, "g"),
    ("g[0]", "__getitem__", 1, 0, "g"),
])  # fmt: skip
def test_operand_the_source_names(expression, func, n, position, name):
    """An input the source shows as a named operand takes that name."""
    assert operand_name(expression, T + func, n, position) == name


@pytest.mark.parametrize(("expression", "func", "n", "position"), [
    ("scale * g", "mul", 1, 0),  # two names, one tensor: either may be the number
    ("a + b", "add", 2, 0),  # add is also b.__radd__(a): the order may be swapped
    ("a == b", "eq", 2, 1),  # its own reflection
    ("g.add(h)", "add", 2, 1),  # a method's arguments: a name may hold a list
    ("g * 2", "add", 1, 0),  # another op than the expression's
    ("f(g) * 2", "mul", 1, 0),  # an operand that is no name
    ("g * 2", "mul", 3, 0),  # more inputs than operands
    ("g *", "mul", 1, 0),  # no expression
])  # fmt: skip
def test_operand_the_source_does_not_name(expression, func, n, position):
    """Where the source cannot say which operand an input was, nothing is said."""
    assert operand_name(expression, T + func, n, position) is None


def test_functions_are_not_methods():
    """An op that is no Tensor method is named by no operand: a function's arguments may hold lists."""
    assert operand_name("torch.relu(g)", "torch.relu", 1, 0) is None
