"""The name an op's input had in the source that called it: ``g`` for the tensor ``g * 2`` read.

A tensor first met as an op's input, with no op the tracker saw making it (a gradient handed to a
hook, a per-sample slice ``vmap`` passes to its function), has no line that made it and often no
name in the namespace.  The expression that read it says what it was called, where the source
says which operand the input was; otherwise nothing is said.
"""

from __future__ import annotations

import ast
import functools

from .statements import dotted

#: per operator, the names torch gives the op it calls: (on the left operand, reflected on the
#: right one).  ``2 * g`` calls ``g.mul(2)`` and ``2 - g`` ``g.__rsub__(2)`` (``resolve_name``)
_BINARY: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ast.Add: (("add", "__add__"), ("add", "__radd__")),
    ast.Sub: (("sub", "__sub__"), ("rsub", "__rsub__")),
    ast.Mult: (("mul", "__mul__"), ("mul", "__rmul__")),
    ast.Div: (("div", "__truediv__", "__div__"), ("__rtruediv__", "__rdiv__")),
    ast.FloorDiv: (("__floordiv__", "floor_divide"), ("__rfloordiv__",)),
    ast.Mod: (("remainder", "__mod__"), ("__rmod__",)),
    ast.Pow: (("pow", "__pow__"), ("__rpow__",)),
    ast.MatMult: (("matmul", "__matmul__"), ("__rmatmul__",)),
    ast.BitAnd: (("bitwise_and", "__and__"), ("bitwise_and", "__rand__")),
    ast.BitOr: (("bitwise_or", "__or__"), ("bitwise_or", "__ror__")),
    ast.BitXor: (("bitwise_xor", "__xor__"), ("bitwise_xor", "__rxor__")),
    ast.LShift: (("__lshift__",), ("__rlshift__",)),
    ast.RShift: (("__rshift__",), ("__rrshift__",)),
    # a comparison's reflection is its mirror: ``2 < g`` calls ``g.gt(2)``
    ast.Lt: (("lt", "__lt__"), ("gt", "__gt__")),
    ast.Gt: (("gt", "__gt__"), ("lt", "__lt__")),
    ast.LtE: (("le", "__le__"), ("ge", "__ge__")),
    ast.GtE: (("ge", "__ge__"), ("le", "__le__")),
    ast.Eq: (("eq", "__eq__"), ("eq", "__eq__")),
    ast.NotEq: (("ne", "__ne__"), ("ne", "__ne__")),
}
_UNARY: dict[type, tuple[str, ...]] = {
    ast.USub: ("neg", "__neg__"), ast.UAdd: ("positive", "__pos__"), ast.Invert: ("bitwise_not", "__invert__"),
}  # fmt: skip
_METHOD = "torch.Tensor."


@functools.lru_cache(maxsize=512)
def operand_name(expression: str, func: str, n_inputs: int, position: int) -> str | None:
    """The dotted name (``g``, ``self.h``) the source gave the ``position``-th of the ``n_inputs``
    tensors an op ``func`` read, where ``expression`` is the call that ran it; None unless the
    source says which operand that input was: a Tensor method's ``self`` (``g.sum()``,
    ``g[0]``), a unary operator's operand, a binary operator's two tensors, or its one
    operand that is not a literal.  A function's arguments say nothing: a list argument hands an
    op several tensors, a name may hold a number."""
    if not func.startswith(_METHOD):
        return None
    short = func[len(_METHOD):]
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    node = tree.body
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == short:
        return dotted(node.func.value) if position == 0 else None
    if isinstance(node, ast.Subscript) and short == "__getitem__":
        return dotted(node.value) if position == 0 else None
    if isinstance(node, ast.UnaryOp) and short in _UNARY.get(type(node.op), ()) and n_inputs == 1:
        return dotted(node.operand)
    if isinstance(node, ast.BinOp):
        op, left, right = node.op, node.left, node.right
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        op, left, right = node.ops[0], node.left, node.comparators[0]
    else:
        return None
    on_left, reflected = _BINARY.get(type(op), ((), ()))
    if short not in on_left and short not in reflected:
        return None
    if n_inputs == 2:
        # both tensors: the left one's op ran, on (left, right), unless a subclass on the right
        # went first, reflected: where the names cannot tell the two apart, only ``r * r`` says
        names = (dotted(left), dotted(right))
        if short in reflected and names[0] != names[1]:
            return None
        return names[position]
    if n_inputs == 1:
        others = [x for x in (left, right) if not _literal(x)]
        return dotted(others[0]) if len(others) == 1 else None
    return None


def _literal(node: ast.AST) -> bool:
    """A number written in the source (``2``, ``-1.5``): never a tensor."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant)
