"""What each torch function means to the tracker, decided once per function and cached."""

from __future__ import annotations

from typing import Any, Callable

from torch.overrides import resolve_name

SKIP, GENERAL, INPLACE, MOVE, BACKWARD, DATA_SET, NUMPY, ALIAS = range(8)

_MOVE_METHODS = {
    "to", "cuda", "cpu", "mps", "double", "float", "half", "bfloat16", "type",
    "int", "long", "short", "char", "byte", "bool", "cfloat", "cdouble",
}  # fmt: skip
#: methods that return a tensor sharing storage without ``_is_view()`` saying so
_ALIAS_METHODS = {
    "detach", "alias", "data.__get__",
    # properties that are views of the tensor (``z.real`` of a complex z, ``x.T``)
    "real.__get__", "imag.__get__", "T.__get__", "mT.__get__", "H.__get__", "mH.__get__",
}  # fmt: skip
#: calls that read metadata or convert to Python values: never an event
_QUIET_METHODS = {
    "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset",
    "is_floating_point", "is_complex", "is_contiguous", "element_size", "get_device",
    "data_ptr", "untyped_storage", "__len__", "__hash__", "__format__", "__repr__",
    "__reduce_ex__", "__deepcopy__", "has_names", "is_sparse", "__index__", "__int__",
    "__float__", "__bool__", "item", "tolist", "__array__", "__contains__", "retain_grad",
    "register_hook", "requires_grad_", "share_memory_", "is_pinned", "__iter__",
}  # fmt: skip

#: private torch functions that never make a tensor: kept off the recording path
_PRIVATE_QUIET = {"torch._set_grad_enabled", "torch._assert", "torch._assert_async", "torch._C"}

_names: dict[Any, str] = {}
#: func -> its classification: each block's mode asks again for every function it meets (a dozen a
#: training cell), and the answer depends on the function's name alone
_classes: dict[Any, int] = {}


def op_name(func: Callable[..., Any]) -> str:
    """``torch.Tensor.add_``, ``torch.autograd.grad``, …: cached, since resolve_name costs µs."""
    name = _names.get(func)
    if name is None:
        if type(func) is str:  # already a name (raw records keep names, not functions)
            return func
        name = resolve_name(func)
        if name is None:
            mod = getattr(func, "__module__", None) or "torch"
            if mod.startswith("torch._C") or mod == "torch._VF":
                mod = "torch"
            qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            if mod == "torch":  # methods of torch._C._VariableFunctionsClass are torch.<name>
                qual = getattr(func, "__name__", qual)
            name = f"{mod}.{qual}" if not qual.startswith(mod) else qual
        _names[func] = name
    return name


def classify(func: Callable[..., Any]) -> int:
    """What ``func`` means to the tracker (``SKIP``, ``GENERAL``, …), decided once per function."""
    action = _classes.get(func)
    if action is None:
        action = _classes[func] = _classify(func)
    return action


def _classify(func: Callable[..., Any]) -> int:
    name = op_name(func)
    if name in ("torch.Tensor.backward", "torch.autograd.backward", "torch.autograd.grad"):
        return BACKWARD
    if name.startswith("torch.Tensor."):
        meth = name[len("torch.Tensor.") :]
        if meth == "data.__set__":
            return DATA_SET
        if meth in _ALIAS_METHODS:
            return ALIAS
        if meth.endswith(".__get__") or meth in _QUIET_METHODS:
            return SKIP
        if meth == "numpy":
            return NUMPY
        if meth in _MOVE_METHODS:
            return MOVE
    short = name.rsplit(".", 1)[-1]
    if short in _QUIET_METHODS:
        return SKIP
    if short == "__setitem__" or (short.endswith("_") and not short.endswith("__")):
        return INPLACE
    if short.startswith("_") and not short.startswith("__"):
        # torch's own private ops make tensors the user gets (``torch.sparse.mm`` runs
        # ``torch._sparse_mm``, ``clip_grad_norm_`` ``torch._foreach_norm``, ``pack_padded_sequence``
        # ``torch._pack_padded_sequence``): recorded under their real names.  Other private
        # helpers (``_set_grad_enabled``, ``Tensor._is_view``, profiler hooks) make nothing we show.
        if name.startswith("torch._") and name.count(".") == 1 and name not in _PRIVATE_QUIET:
            return GENERAL
        return SKIP
    return GENERAL
