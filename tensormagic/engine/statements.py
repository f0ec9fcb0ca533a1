"""What one line of source says, read from its text: the names an assignment binds and the value
it binds (``assigned_names``, ``assigned_value``, ``binds_object``), the calls it makes
(``called_function``, ``unseen_maker``, ``outer_call``, ``backward_receiver``), and where a name is bound or a
statement ends in a block's source (``binding_line``, ``statement_end``).

``naming.py`` names tensors from where they live; ``bound_names.py`` from these lines."""

from __future__ import annotations

import ast
import functools
from typing import Iterator


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def assigned_name(source_line: str | None) -> str | None:
    """``y`` for ``y = x + 2``; None where the line is not a simple single-name assignment."""
    if not source_line:
        return None
    tree = _parse(source_line.strip())
    if tree is None or len(tree.body) != 1:
        return None
    stmt = tree.body[0]
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        tgt = stmt.targets[0]
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        tgt = stmt.target
    else:
        return None
    return tgt.id if isinstance(tgt, ast.Name) else None


def _statement(source_line: str) -> ast.stmt | None:
    """The one statement on a line; a compound statement's header (``for a, b in xs:``) too."""
    text = source_line.strip()
    tree = _parse(text)
    if tree is None:  # a header alone is not a statement: give it a body (after any comment)
        tree = _parse(text + "\n pass")
    if tree is None or len(tree.body) != 1:
        return None
    return tree.body[0]


def _flat_names(tgt: ast.AST) -> tuple[str, ...] | None:
    """``(step, xb, yb)`` for ``step, (xb, yb)``; None where a target is not a plain name
    (``a[0], b``) or is starred (its count is unknown)."""
    if isinstance(tgt, ast.Name):
        return (tgt.id,)
    if isinstance(tgt, (ast.Tuple, ast.List)):
        out: list[str] = []
        for e in tgt.elts:
            sub = _flat_names(e)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    return None


@functools.lru_cache(maxsize=256)  # read for every line of every block's end: a line's text decides it
def assigned_names(source_line: str | None) -> tuple[str, ...] | None:
    """Every name a line binds, in order: ``("y",)`` for ``y = x + 2``, ``("a", "b")`` for
    ``a, b = f(x)``, ``("step", "xb", "yb")`` for ``for step, (xb, yb) in enumerate(loader):``."""
    if not source_line:
        return None
    stmt = _statement(source_line)
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        return _flat_names(stmt.targets[0])
    if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        return _flat_names(stmt.target)
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return _flat_names(stmt.target)
    return None


@functools.lru_cache(maxsize=256)  # read for every line of every block's end: a line's text decides it
def assigned_value(source_line: str | None) -> str | None:
    """The text of the value an assignment binds, spaces as ``source._expression_text`` gives an
    expression's: ``nn.Sequential(nn.Linear(4, 8), nn.ReLU())`` for ``model = nn.Sequential(…)``;
    None for a line that is no assignment (a ``for`` binds what ``next`` returns)."""
    if not source_line:
        return None
    text = source_line.strip()
    stmt = _statement(text)
    value = getattr(stmt, "value", None) if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
    if value is None:
        return None
    segment = ast.get_source_segment(text, value)
    return " ".join(segment.split()) if segment else None


#: calls whose value is a tensor though their names are a class's: ``nn.Parameter(…)``
_TENSOR_CLASSES = frozenset(("Parameter", "Buffer", "Tensor", "UninitializedParameter"))
#: torch functions that hand back the module they are given (or a wrapper of it)
_MODULE_FUNCTIONS = frozenset(("weight_norm", "spectral_norm", "orthogonal", "remove_weight_norm",
                               "remove_spectral_norm", "register_parametrization", "compile", "deepcopy"))  # fmt: skip


@functools.lru_cache(maxsize=256)  # read for every line of every block's end: a line's text decides it
def binds_object(source_line: str | None) -> bool:
    """Whether an assignment's value is, by its source, an object that is no tensor: a class made
    (``lin = nn.Linear(4, 3)``, ``model = MyNet()``) or a module handed back by a function that
    wraps one (``weight_norm(…)``, ``torch.compile(model)``).  Read where the namespace cannot say
    (a function's local, gone when the block ends): the tensors made while the value was built
    are not it."""
    value = assigned_value(source_line)
    tree = _parse(value) if value else None
    node = tree.body[0] if tree is not None and len(tree.body) == 1 else None
    call = node.value if isinstance(node, ast.Expr) else None
    if not isinstance(call, ast.Call):
        return False
    name = dotted(call.func)
    last = name.rsplit(".", 1)[-1] if name else ""
    if last in _MODULE_FUNCTIONS:
        return True
    return last[:1].isupper() and not last.isupper() and last not in _TENSOR_CLASSES


@functools.lru_cache(maxsize=256)  # read for every line of every block's end: a line's text decides it
def called_function(source_line: str | None) -> str | None:
    """The function a line calls, as a temporary made inside it is named: ``clip_grad_norm_``
    for ``torch.nn.utils.clip_grad_norm_(…)``, ``opt.step``, ``loader`` for
    ``for xb in enumerate(loader):``."""
    if not source_line:
        return None
    stmt = _statement(source_line)
    if stmt is None:
        return None
    node: ast.AST | None = None
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        node = stmt.iter
        while isinstance(node, ast.Call) and dotted(node.func) in ("enumerate", "zip", "iter") and node.args:
            node = node.args[0]
        name = dotted(node) if not isinstance(node, ast.Call) else dotted(node.func)
    else:
        value = getattr(stmt, "value", None)
        name = dotted(value.func) if isinstance(value, ast.Call) else None
    if name is None:
        return None
    return name.rsplit(".", 1)[-1] if name.split(".", 1)[0] in ("torch", "F", "nn") else name


def _calls(source_line: str | None) -> Iterator[str | None]:
    """The dotted names of a line's calls, the outermost first (None for ``f(x)(y)``'s inner one)."""
    tree = _parse(source_line.strip()) if source_line else None
    if tree is None:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield dotted(node.func)


#: functions that make a tensor without an op a TorchFunctionMode sees (torch.overrides ignores
#: them, or they wrap a tensor in Python): a tensor first met with no op was made by one of these
UNSEEN_MAKERS = frozenset(("from_numpy", "frombuffer", "from_dlpack", "Parameter", "Buffer", "load",
                           "as_subclass", "_make_subclass"))  # fmt: skip


def unseen_maker(source_line: str | None) -> str | None:
    """The dotted name of a call on a line to a function that makes a tensor no op shows
    (``torch.from_numpy`` in ``o = lin(torch.from_numpy(a))``), the outermost first; None if the
    line calls none.  The name a tensor first met with no op is said to be made by: the line's
    own outermost call is often the op that consumed it (``lin``, ``.relu()``), not its maker."""
    return next((n for n in _calls(source_line) if n and n.rsplit(".", 1)[-1] in UNSEEN_MAKERS), None)


def outer_call(expression: str) -> str | None:
    """The last name of the function an expression calls at its top: ``clip_grad_norm_`` for
    ``nn.utils.clip_grad_norm_(model.parameters(), 1.0)``, ``float`` for ``(a == b).float()``;
    None for anything else (``x[1:] * 2``, ``f(x) * 2``, text that does not parse)."""
    tree = _parse(expression)
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    node = tree.body[0].value
    name = dotted(node.func) if isinstance(node, ast.Call) else None
    return name.rsplit(".", 1)[-1] if name else None


def called_expression(expression: str) -> str | None:
    """``grad(loss_fn)`` for ``grad(loss_fn)(w, x)``: the call an expression calls the result of
    (a function transform's: ``vmap(f)``, ``torch.func.grad(f)``), whose tensors are made inside
    it, not its value; None for anything else, and for ``getattr(torch, name)(x)`` and
    ``partial(…)(x)``, which may call a torch op directly (``fns[0](x)`` likewise is no call's)."""
    tree = _parse(expression)
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    node = tree.body[0].value
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Call):
        return None
    if (dotted(node.func.func) or "").rsplit(".", 1)[-1] in ("getattr", "partial"):
        return None
    return ast.unparse(node.func)


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr}" if head else node.attr
    return None


def binding_line(source: str | None, name: str, lo: int = 1, hi: int | None = None) -> int | None:
    """The first line in ``[lo, hi]`` of ``source`` that assigns ``name`` (plain names only)."""
    if not source or not name.isidentifier():
        return None
    tree = _parse(source)
    if tree is None:
        return None
    best: int | None = None
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.For, ast.With)):
            continue
        for tgt in targets:
            for sub in ast.walk(tgt):
                if isinstance(sub, ast.Name) and sub.id == name:
                    ln = node.lineno
                    if ln >= lo and (hi is None or ln <= hi) and (best is None or ln < best):
                        best = ln
    return best


def statement_end(source: str, lineno: int) -> int | None:
    """The last line of the compound statement (the ``with`` block) that starts at ``lineno``."""
    tree = _parse(source)
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno == lineno and isinstance(node, (ast.With, ast.AsyncWith)):
            return node.end_lineno
    return None


def backward_receiver(source_line: str | None) -> str | None:
    """``loss`` where the line makes one ``.backward(…)`` call and calls it on the name ``loss``
    (``loss.backward()  # step``, ``loss.backward(); opt.step()``); None where the line makes
    none or several, calls it on something else, or is not whole statements."""
    tree = _parse(source_line.strip()) if source_line else None
    if tree is None:
        return None
    calls = [n for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "backward"]  # fmt: skip
    return dotted(calls[0].func.value) if len(calls) == 1 else None
