"""The names a tensor takes from the line that made it: ``z`` for ``z = y * y * 3``.

``source.py`` finds the line; ``naming.py`` names tensors from where they live when the block ends
(the namespace, module parameters, containers); this module names them from the assignment.

A block's records are cut into segments (consecutive records of one line) and each segment into
runs (one execution of the line: a loop that stays on one line repeats the same ops, or its
bytecode offset falls back).  Only the value a run binds takes the line's target name:

- where the namespace still holds the target's last value and that value was made by a run of the
  line, its place in that run (and its op) says which tensor of every other run of the line was
  bound (``norm = clip_grad_norm_(…)``: the total norm, not the six tensors made on the way);
- where the namespace holds a value the line did not make by an op (``p = nn.Parameter(…)``),
  the line's temporaries take no name;
- otherwise the tensors no later op of the run consumed take the name (each one's in order, for
  ``a, b = …`` and ``for step, (xb, yb) in …``).

Tensors left without a name are named after where they were made: ``model.0 output`` inside a
module, ``clip_grad_norm_ temporary`` inside a library function the line called, and by the
expression that made them (``pred.argmax(1)``, from the bytecode's column positions) otherwise.  Dead tensors are
named when the events are built; live ones when the block ends (their graphs are named then).
"""

from __future__ import annotations

from typing import Any, Callable, Container, Mapping

from .line_runs import MAX_PERIOD_SCAN, op_key, segment_of, split_runs
from .operands import operand_name
from .raw import EXTRA, FUNC, KIND, LASTI, MODULE, TID, WHERE, create_parts
from .statements import called_expression, outer_call

_MADE = frozenset(("create", "view", "move", "compiled"))  # event kinds that make the tensor they name


class LineNames:
    """What naming needs from the block's end: per line (``where``) its target names, the
    values the namespace holds for them, and how to call a module or a called function."""

    def __init__(self, targets: Mapping[Any, tuple[str, ...] | None],
                 bound: Mapping[Any, list[tuple[str, int | None]]],
                 functions: Mapping[Any, str | None], module_of: Callable[[Any], str | None],
                 expression: Callable[[Any, int], str | None] | None = None,
                 outer_call: Callable[[Any, int], bool | None] | None = None,
                 values: Mapping[Any, str | None] | None = None,
                 outputs: Container[tuple[int, str]] | None = None,
                 called: Mapping[int, tuple[Any, int, int | None]] | None = None,
                 call_name: Callable[[Any, int], str | None] | None = None,
                 packed: Container[tuple[int, str]] = ()) -> None:  # fmt: skip
        self.targets = targets  # where -> tensor-valued names the line binds, in order
        self.bound = bound  # where -> (name, raw index of the value the namespace holds, or None)
        self.functions = functions  # where -> the function the line calls (temporaries' name)
        self.module_of = module_of
        self._expression = expression  # (where, bytecode offset) -> the expression evaluated there
        self._outer_call = outer_call  # (where, offset) -> whether it is the line's last call (3.10)
        self.values = values or {}  # where -> the text of the value an assignment binds
        self.outputs = outputs  # (tensor id, module path) a module returned (None: not known)
        #: (tensor id, module path) a module returned inside a tuple, list or dict: ``out = model(x)``
        #: binds that container, not the tensor (``out.loss``)
        self.packed = packed
        #: tensor id -> (line, offset) of a ``.backward()`` called on it (``loss.backward()``), and
        #: the raw index that made it; the name that call gives it is read only for a tensor no
        #: line bound (``called_name``)
        self.called = called or {}
        self._call_name = call_name
        self._call_names: dict[tuple[Any, int], str | None] = {}
        self._expressions: dict[tuple[Any, int], tuple[str | None, str | None] | None] = {}
        self._bound_runs: dict[Any, list[tuple[str, int, int, int, Any]] | None] = {}
        self._names: dict[str, tuple[str, ...]] = {}
        self._texts: dict[tuple[Any, int], str | None] = {}

    def name(self, text: str) -> tuple[str, ...]:
        got = self._names.get(text)
        if got is None:
            got = self._names[text] = (text,)
        return got

    def _text(self, where: Any, lasti: Any) -> str | None:
        """The source text of the expression evaluated at bytecode offset ``lasti`` of line
        ``where``, read once for the names, operands and values that ask; None where the offset
        cannot be placed in the source (Python 3.10)."""
        if self._expression is None or not isinstance(lasti, int):
            return None
        key = (where, lasti)
        if key not in self._texts:
            self._texts[key] = self._expression(where, lasti)
        return self._texts[key]

    def expression(self, where: Any, lasti: Any) -> tuple[str | None, str | None] | None:
        """What the line's code was evaluating when a tensor was made at bytecode offset
        ``lasti``: (the expression, cut for a table; the function it calls, if it is a call), or
        None where the offset cannot be placed in the source (Python 3.10)."""
        key = (where, lasti)
        if key not in self._expressions:
            text = self._text(where, lasti)
            if text is None:
                self._expressions[key] = None
            else:
                cut = _cut(text)
                # ``grad(loss_fn)(w, x)`` calls what ``grad(loss_fn)`` returned: named by that text
                call = outer_call(text) or _cut(called_expression(text))
                # inside a ``for``'s ``next(loader)`` (or the user's own ``next(it)``): "next" alone
                # says nothing, the iterable does
                self._expressions[key] = (cut, cut if call == "next" else call)
        return self._expressions[key]

    def operand(self, where: Any, r: Any, tid: int) -> str | None:
        """The name the source gave ``tid`` as an input of record ``r`` (``g`` for ``g * 2``),
        or None where it does not say (``operands.operand_name``)."""
        inputs = _consumed(r)
        if r[KIND] not in _MADE or tid not in inputs:
            return None
        text = self._text(where, r[LASTI])
        if text is None or not r[FUNC]:
            return None
        return operand_name(text, r[FUNC], len(inputs), inputs.index(tid))

    def called_name(self, tid: int) -> str | None:
        """``loss``, where a line called ``loss.backward()`` on ``tid`` (None: no such call)."""
        got = self.called.get(tid)
        if got is None or self._call_name is None:
            return None
        at = got[:2]
        if at not in self._call_names:
            self._call_names[at] = self._call_name(*at)
        return self._call_names[at]

    def evaluates(self, where: Any, r: Any, value: str) -> bool:
        """Whether record ``r`` was made where its line evaluated ``value`` (or at an offset the
        source cannot place, as on Python 3.10): by the value's own op, or inside its call."""
        text = self._text(where, r[LASTI])
        return text is None or text == value

    def at_outer_call(self, where: Any, lasti: Any) -> bool | None:
        """Whether offset ``lasti`` is the call of the line's function (Python 3.10, from the
        bytecode), or None where it cannot be said."""
        if self._outer_call is None or not isinstance(lasti, int):
            return None
        return self._outer_call(where, lasti)


MAX_EXPRESSION = 48  # a longer expression is cut, with an ellipsis: it names a tensor in a table


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_EXPRESSION else text[: MAX_EXPRESSION - 1] + "…"


def _bound_runs(raw: list[Any], ln: LineNames, where: Any) -> list[tuple[str, int, int, int, Any]] | None:
    """Per name the namespace's value of which a run of this line made: (name, its offset from
    the run's start, from its end, the run's length, its op key).  None: no such value."""
    if where in ln._bound_runs:
        return ln._bound_runs[where]
    out: list[tuple[str, int, int, int, Any]] = []
    least = _least(ln, where)
    for name, idx in ln.bound.get(where, ()):
        if idx is None or idx >= len(raw):
            continue
        seg = segment_of(raw, idx, MAX_PERIOD_SCAN)
        if seg is None:
            continue
        for a, b in split_runs(raw, *seg, least):
            if a <= idx < b:
                out.append((name, idx - a, b - 1 - idx, b - a, op_key(raw[idx])))
                break
    got = ln._bound_runs[where] = out or None
    return got


def _least(ln: LineNames, where: Any) -> int:
    """The fewest records an execution of a line is taken to make: one per name it binds."""
    names = ln.targets.get(where) if where is not None else None
    return len(names) if names else 1


def line_results(raw: list[Any], ln: LineNames, *, failed: bool = False,
                 lo: int = 0, hi: int | None = None) -> list[tuple[int, tuple[str, ...]]]:  # fmt: skip
    """(tensor id, names) for tensors the lines of ``raw[lo:hi]`` made: first the values the
    lines bound, then the temporaries' names.  In a block that failed, the last line never
    finished its assignment: it binds nothing.  ``raw[lo:hi]`` starts and ends on segments'
    boundaries."""
    bound_out: list[tuple[int, tuple[str, ...]]] = []
    temp_out: list[tuple[int, tuple[str, ...]]] = []
    n = len(raw)
    end = n if hi is None else hi
    i = lo
    while i < end:
        where = raw[i][WHERE]
        j = i + 1
        while j < end and raw[j][WHERE] == where:
            j += 1
        names = ln.targets.get(where) if where is not None else None
        runs = split_runs(raw, i, j, _least(ln, where))
        if names and not (failed and j == n):
            _bind(raw, ln, where, names, runs, bound_out)
        _temporaries(raw, ln, where, runs, temp_out)
        i = j
    if ln.called:  # before the temporaries' names: the user's own name for a value no line bound
        temp_out = _called_names(raw, ln, bound_out, lo, end) + temp_out
    return bound_out + temp_out


def _bind(raw: list[Any], ln: LineNames, where: Any, names: tuple[str, ...],
          runs: list[tuple[int, int]], out: list[tuple[int, tuple[str, ...]]]) -> None:  # fmt: skip
    held = _bound_runs(raw, ln, where)
    bound_elsewhere = {name for name, idx in ln.bound.get(where, ()) if idx is None}
    free = [x for x in names if x not in bound_elsewhere]
    if held is None and len(free) > 1:
        # ``values, idx = torch.sort(x)``: one call's outputs, in order, to the names in order
        # ``for xb, yb in loader`` binds what ``next(loader)`` returned, not what ``iter(loader)``
        # made on the same line (a worker loader's base seed, at an offset the source places nowhere)
        made = [tid for a, b in runs for tid in _unconsumed(raw, a, b, ln, where, _next_value(raw, ln, where, a, b), True)]
        if made and len(made) % len(free) == 0:
            out.extend((tid, ln.name(free[i % len(free)])) for i, tid in enumerate(made))
        return
    for a, b in runs:
        if held is not None:
            for name, k, kend, length, key in held:
                c = a + k if b - a == length else b - 1 - kend
                if a <= c < b and op_key(raw[c]) == key and raw[c][KIND] in _MADE:
                    out.append((raw[c][TID], ln.name(name)))
            continue
        if len(free) == 1:
            value = ln.values.get(where)
            out.extend((tid, ln.name(free[0])) for tid in _unconsumed(raw, a, b, ln, where, value, packed=ln.packed))


def _next_value(raw: list[Any], ln: LineNames, where: Any, a: int, b: int) -> str | None:
    """``next(loader)``: the expression of the first record of ``raw[a:b]`` a ``next()`` made
    (a ``for`` fetching its item, or the line's own ``next(it)``); None if none."""
    for k in range(a, b):
        text = ln._text(where, raw[k][LASTI])
        if text is not None and text.startswith("next("):
            return text
    return None


def _temporaries(raw: list[Any], ln: LineNames, where: Any, runs: list[tuple[int, int]],
                 out: list[tuple[int, tuple[str, ...]]]) -> None:  # fmt: skip
    """``model.0 output`` for a tensor made inside a module; ``clip_grad_norm_ temporary`` for
    one made inside a library function the line called; ``pred.argmax(1)`` for one the line's
    own expression made (the expression being evaluated is that op's call, or no call at all)."""
    fn = ln.functions.get(where) if where is not None else None
    short = fn.rsplit(".", 1)[-1] if fn else None
    for a, b in runs:
        direct = short is None or any(
            (raw[k][FUNC] or "").rsplit(".", 1)[-1] == short for k in range(a, b)
        )
        for k in range(a, b):
            r = raw[k]
            if r[KIND] not in _MADE:
                continue
            if r[KIND] == "create" and create_parts(r[EXTRA])[1] == "seen":
                # first met here, made by no op seen (a hook's gradient, an argument from NumPy):
                # not the module's output, the call's temporary, nor the expression that consumed
                # it, but maybe an operand that expression names
                name = _operand(raw, ln, where, k, b) if create_parts(r[EXTRA])[2] == "direct" else None
                if name:
                    out.append((r[TID], ln.name(name)))
                continue
            if r[MODULE] is not None:
                mod = ln.module_of(r[MODULE])
                if mod:
                    # a module's output is what it returned; what else it made is its temporary
                    # (an input a full backward hook wraps, a transformer layer's residual sum)
                    what = "output" if ln.outputs is None or (r[TID], r[MODULE]) in ln.outputs else "temporary"
                    out.append((r[TID], ln.name(f"{mod} {what}")))
                continue
            expr = ln.expression(where, r[LASTI])
            if expr is None:  # no column positions: the line's called function says it
                # unless the bytecode says the op ran before that call, making one of its
                # arguments (``net(torch.randn(2, 4))``): then it keeps its id
                if not direct and ln.at_outer_call(where, r[LASTI]) is not False:
                    out.append((r[TID], ln.name(f"{fn} temporary")))
                continue
            text, callee = expr
            op = (r[FUNC] or "").rsplit(".", 1)[-1]
            if callee is None or callee == op:
                out.append((r[TID], ln.name(text)))  # type: ignore[arg-type]
            else:  # made inside the function being called, not its value
                out.append((r[TID], ln.name(f"{callee} temporary")))


def _called_names(raw: list[Any], ln: LineNames, bound_out: list[tuple[int, tuple[str, ...]]],
                  lo: int, hi: int) -> list[tuple[int, tuple[str, ...]]]:  # fmt: skip
    """``loss`` for a tensor made by an op in ``raw[lo:hi]`` that no line bound and a later line
    called ``loss.backward()`` on (``LineNames.called_name``): the user's name for it, over where
    it was made (``model output``).  Per backward call, not per record: most losses are bound."""
    out: list[tuple[int, tuple[str, ...]]] = []
    bound: set[int] | None = None
    for tid, (_where, _lasti, idx) in ln.called.items():
        if idx is None or not lo <= idx < hi or raw[idx][TID] != tid or raw[idx][KIND] not in _MADE:
            continue
        if raw[idx][KIND] == "create" and create_parts(raw[idx][EXTRA])[1] == "seen":
            continue  # first met, made by no op seen: its operand names it, if anything
        if bound is None:
            bound = {t for t, _ in bound_out}
        name = ln.called_name(tid) if tid not in bound else None
        if name:
            out.append((tid, ln.name(name)))
    return out


def _operand(raw: list[Any], ln: LineNames, where: Any, k: int, b: int) -> str | None:
    """The name the source gave a tensor first met at ``raw[k]``, as an input of the first op of
    its run that read it (seeing it is part of recording that op)."""
    tid = raw[k][TID]
    for m in range(k + 1, b):
        if tid in _consumed(raw[m]):
            return ln.operand(where, raw[m], tid)
    return None


def name_live(raw: list[Any], ln: LineNames, names: dict[int, tuple[str, ...]],
              unnamed: list[tuple[int, int | None]], *, failed: bool) -> None:  # fmt: skip
    """Names from their lines for live tensors the namespace does not name: each one's segment
    of records is scanned, unless there are many (then one pass over the whole block)."""
    wanted = {tid for tid, idx in unnamed if idx is not None and idx < len(raw) and raw[idx][TID] == tid}
    if not wanted:
        return
    spans_set: set[tuple[int, int]] | None = set() if len(wanted) <= 64 else None
    for tid, idx in unnamed:
        if spans_set is None:
            break
        if tid in wanted:
            seg = segment_of(raw, idx, MAX_PERIOD_SCAN)  # type: ignore[arg-type]
            if seg is None:
                spans_set = None
            else:
                spans_set.add(seg)
    spans = sorted(spans_set) if spans_set is not None else [(0, len(raw))]
    for lo, hi in spans:
        for tid, name in line_results(raw, ln, failed=failed, lo=lo, hi=hi):
            if tid in wanted:
                names.setdefault(tid, name)


def _unconsumed(raw: list[Any], lo: int, hi: int, ln: LineNames | None = None, where: Any = None,
                value: str | None = None, strict: bool = False,
                packed: Container[tuple[int, str]] = ()) -> list[int]:  # fmt: skip
    """Tensors made in ``raw[lo:hi]`` (one run of a line) that no later op of the run used, in
    the order they were made.  With the ``value`` an assignment binds: only those made where the
    line evaluated that value or an offset the source cannot place; ``model = nn.Sequential(
    nn.Linear(4, 8))`` binds a module, and the weights made in ``nn.Linear(4, 8)`` are not it.
    ``strict``: only those made where the source places the value (none at an offset it cannot place).
    ``packed``: (tensor id, top-level module path) of tensors a module call handed back inside a
    container: not what one name bound to that call's value holds."""
    consumed: set[int] = set()
    out = []
    for k in range(hi - 1, lo - 1, -1):
        r = raw[k]
        if r[KIND] in _MADE and r[TID] not in consumed and (
                value is None or (ln._text(where, r[LASTI]) == value if strict else ln.evaluates(where, r, value))) \
                and not (packed and r[MODULE] is not None and (r[TID], r[MODULE].split(".", 1)[0]) in packed):  # type: ignore[union-attr]  # fmt: skip
            out.append(r[TID])
        consumed.update(_consumed(r))
    out.reverse()
    return out


def _consumed(r: Any) -> tuple[int, ...]:
    kind, extra = r[KIND], r[EXTRA]
    if kind == "create":
        return create_parts(extra)[0]
    if kind == "view":
        return (extra,)
    if kind == "move":
        return (extra[0],)
    if kind == "inplace":
        return extra[1:]
    if kind == "compiled":  # (inputs, outputs, graphs, ops): inputs are (tid, meta) pairs
        return tuple(tid for tid, _meta in extra[0])
    return ()
