"""``backward()`` and ``torch.autograd.grad`` run with the tracking mode on the stack while
autograd's engine runs, so that the torch calls of backward hooks (``Tensor.register_hook``, a
Node's hooks, ``register_post_accumulate_grad_hook``, a module's full backward hook) and of Python
``autograd.Function.backward`` methods are recorded, at their own lines, as made during backward.

Why it takes more than calling the function: torch takes a ``TorchFunctionMode`` off the stack
while the mode's ``__torch_function__`` runs, and ``Tensor.backward``, ``torch.autograd.backward``
and ``torch.autograd.grad`` reach the mode through ``handle_torch_function``.  Calling them from the
mode runs the engine with the mode off, and the engine's graph task keeps the thread's
torch-function state from its start: the hooks run with the mode off.  Pushing the mode before the
call would only send the call back to the mode (their first lines check for one).

How: torch's own ``torch.autograd.backward`` / ``grad`` code runs, from a copy of the function
whose globals differ in one name, ``_engine_run_backward``: the argument checks, their errors and
warnings, ``_make_grads`` (the implicit ``ones_like``, which the user did not write), the
``retain_graph`` default, the ``is_grads_batched`` and ``materialize_grads`` paths all run as
torch wrote them, with the mode off.  Only the engine run has the mode on the stack; it is popped
in a ``finally`` (an error, an interrupt).  No torch object is changed.  ``Tensor.backward`` on a
tensor that no other mode or subclass handles is ``torch.autograd.backward(self, gradient,
retain_graph, create_graph, inputs=inputs)``: that call is made.

While the engine runs, the mode's busy flag is ``OffThread``: false on the thread that called
backward (its hooks are recorded), true on any other (autograd's device threads, which copy the
mode stack from the graph task: their calls pass through unrecorded).  A backward started inside a
hook runs as torch runs it from the mode, with the mode off.  A compiled graph's own torch calls
during backward (an AOT-compiled function's backward graph) are part of the backward call and are
not recorded.

Where torch is not what this expects (a private name gone, another signature, a patched
``torch.autograd.backward``, another mode or a subclass that handles backward, compiled autograd
on) the call runs as before: from the mode, its hooks not recorded.
"""

from __future__ import annotations

import inspect
import sys
import threading
from types import FunctionType
from typing import Any, Callable

import torch

_get_ident = threading.get_ident
_UNSET: Any = object()
_spec: Any = _UNSET  # (autograd.backward, autograd.grad, Tensor.backward, _engine_run_backward) or None
_C = torch._C

#: the parameters this module's calls rely on, in order, with their defaults
_BACKWARD_PARAMS = ("tensors", "grad_tensors", "retain_graph", "create_graph", "grad_variables", "inputs")
_GRAD_PARAMS = ("outputs", "inputs", "grad_outputs", "retain_graph", "create_graph", "only_inputs",
                "allow_unused", "is_grads_batched", "materialize_grads")  # fmt: skip
_TENSOR_BACKWARD = (("self", inspect.Parameter.empty), ("gradient", None), ("retain_graph", None),
                    ("create_graph", False), ("inputs", None))  # fmt: skip
_C_NAMES = ("_push_on_torch_function_stack", "_pop_torch_function_stack", "_len_torch_function_stack",
            "_get_function_stack_at", "_has_torch_function_unary")  # fmt: skip


class OffThread:
    """The mode's busy flag while backward's engine runs: false on the thread that called
    backward, true on every other one (see the module docstring)."""

    __slots__ = ("ident",)

    def __init__(self) -> None:
        self.ident = _get_ident()

    def __bool__(self) -> bool:
        return _get_ident() != self.ident


def _lookup() -> tuple[Callable[..., Any], ...] | None:
    """torch's functions as this module expects them, or None (then backward runs as before)."""
    try:
        from torch.autograd import graph

        ag = sys.modules["torch.autograd"]
        erb = graph._engine_run_backward
        if any(not callable(getattr(_C, n, None)) for n in _C_NAMES):
            return None
        params = list(inspect.signature(erb).parameters.values())
        P = inspect.Parameter
        if [p.kind for p in params] != [P.POSITIONAL_OR_KEYWORD, P.VAR_POSITIONAL, P.VAR_KEYWORD]:
            return None
        for f, names in ((ag.backward, _BACKWARD_PARAMS), (ag.grad, _GRAD_PARAMS)):
            if type(f) is not FunctionType or f.__closure__ is not None:
                return None
            if f.__globals__.get("_engine_run_backward") is not erb or "_engine_run_backward" not in f.__code__.co_names:
                return None
            if tuple(inspect.signature(f).parameters) != names:
                return None
        tb = torch.Tensor.backward
        got = tuple((p.name, p.default) for p in inspect.signature(tb).parameters.values())
        if got != _TENSOR_BACKWARD or not {"autograd", "backward", "has_torch_function_unary"} <= set(tb.__code__.co_names):
            return None
        return ag.backward, ag.grad, tb, erb
    except Exception:  # noqa: BLE001 - anything unexpected: backward runs as before
        return None


def spec() -> tuple[Callable[..., Any], ...] | None:
    """The functions, looked up once per process."""
    global _spec
    if _spec is _UNSET:
        _spec = _lookup()
    return _spec  # type: ignore[no-any-return]


def tensor_backward() -> Any:
    """``torch.Tensor.backward`` as looked up (None where backward runs as before)."""
    s = spec()
    return None if s is None else s[2]


def _tensor_backward_args(self: Any, gradient: Any = None, retain_graph: Any = None, create_graph: Any = False,
                          inputs: Any = None) -> tuple[Any, ...]:  # fmt: skip
    """``Tensor.backward``'s parameters (``_TENSOR_BACKWARD``, checked against torch's)."""
    return self, gradient, retain_graph, create_graph, inputs


def _compiled_autograd_on() -> bool:
    ca = sys.modules.get("torch._dynamo.compiled_autograd")
    return ca is not None and getattr(ca, "compiled_autograd_enabled", False) is not False


def run(mode: Any, func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """``func(*args, **kwargs)`` for a backward call the mode received, with its engine run under
    the mode where torch is as expected (module docstring).  The mode's busy flag is set, as for
    any call the mode makes, and put back."""
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
    busy = mode._busy
    mode._busy = True
    try:
        fn, cargs, ckw = _prepared(mode, func, args, kwargs)
        return fn(*cargs, **ckw)
    finally:
        mode._busy = busy


def _prepared(mode: Any, func: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """What to call: torch's function, copied with the engine run under the mode, and its
    arguments; or ``func`` and the call's own arguments.  Never raises."""
    try:
        plan = _plan(func, args, kwargs)
        if plan is None:
            return func, args, kwargs
        target, cargs, ckw = plan
        g = dict(target.__globals__)  # torch.autograd's namespace as it is now, one name changed
        g["_engine_run_backward"] = _EngineRun(mode, g["_engine_run_backward"], func)
        fn = FunctionType(target.__code__, g, target.__name__, target.__defaults__)
        fn.__kwdefaults__ = target.__kwdefaults__
        fn.__qualname__ = target.__qualname__
        return fn, cargs, ckw
    except Exception as e:  # noqa: BLE001 - recording must never change what user code gets
        mode._internal(e)
        return func, args, kwargs


def _plan(func: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
    """(torch's function to run, its arguments) or None: call ``func`` as it is."""
    s = spec()
    if s is None or _compiled_autograd_on():
        return None
    backward, grad, tensor_backward, _erb = s
    if func is backward or func is grad:
        return func, args, kwargs
    if func is tensor_backward and sys.modules["torch.autograd"].backward is backward:
        try:
            self, gradient, retain_graph, create_graph, inputs = _tensor_backward_args(*args, **kwargs)
        except TypeError:
            return None  # torch raises its own error for these
        if _C._has_torch_function_unary(self):
            return None  # another mode or a subclass handles it, as Tensor.backward's first line says
        return backward, (self, gradient, retain_graph, create_graph), {"inputs": inputs}
    return None


class _EngineRun:
    """Stands for ``_engine_run_backward`` in the copy's globals: torch's, with the mode on the stack."""

    __slots__ = ("mode", "erb", "func")

    def __init__(self, mode: Any, erb: Callable[..., Any], func: Any) -> None:
        self.mode, self.erb, self.func = mode, erb, func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
        mode = self.mode
        tr = mode.tracker
        lines = tr.lines
        n0 = len(tr.raw)
        depth = _C._len_torch_function_stack()
        on_graph, busy = lines.on_graph, mode._busy
        _C._push_on_torch_function_stack(mode)
        try:
            mode._busy = OffThread()
            if on_graph is not None:
                lines.on_graph = _BackwardGraph(on_graph)
            return self.erb(*args, **kwargs)
        finally:
            mode._busy = busy
            lines.on_graph = on_graph
            if _C._len_torch_function_stack() == depth + 1 and _C._get_function_stack_at(depth) is mode:
                _C._pop_torch_function_stack()
            if len(tr.raw) > n0:
                try:
                    tr.note_backward_span(n0, self.func, lines.find(sys._getframe(0)))
                except Exception as e:  # noqa: BLE001 - the user's result or exception is what counts
                    mode._internal(e)


class _BackwardGraph:
    """``LineFinder.on_graph`` while the engine runs: a compiled function called in a hook is its
    call as usual; a graph frame under no compiled call (an AOT-compiled function's backward
    graph) is part of the backward call: its torch calls are not recorded."""

    __slots__ = ("on_graph",)

    def __init__(self, on_graph: Callable[[Any], Any]) -> None:
        self.on_graph = on_graph

    def __call__(self, frame: Any) -> Any:
        w = self.on_graph(frame)
        return frame if w is None else w
