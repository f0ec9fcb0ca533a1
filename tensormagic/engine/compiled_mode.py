"""``CompiledTrackMode``: ``TrackMode`` whose common calls run in C (``csrc/``, the ``_hotpath``
extension; ``mode.py``'s docstring says which), and the Python entry torch.compile inlines."""

from __future__ import annotations

from functools import partial
from types import FunctionType, MethodType, ModuleType
from typing import Any

import torch

from . import autograd, backward_run, identity, ops
from . import raw as raw_mod
from .frames import compile_flag as _flag
from .frames import dynamo_compiling as _dynamo_compiling
from .mode import Tensor, TrackMode, _hotpath, _now
from .ops import GENERAL
from .tracker import Tracker


def _compiled_entry(self: CompiledTrackMode, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
    """``CompiledTrackMode.__torch_function__`` as Python code, for the callers that run it as
    such: torch.compile inlines it (the first line); ``torch.overrides.handle_torch_function``
    (``F.relu``, ``F.cross_entropy``, ``Tensor.backward``: torch functions written in Python) calls
    it as a Python method, which CPython runs without the function's vectorcall.  Those calls go
    to the compiled object too, as torch's own dispatch from C does through ``set_dispatch``."""
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame from the user's traceback
    if _dynamo_compiling() or _flag._is_compiling_flag:  # is_compiling(): see TrackMode.__torch_function__
        return func(*args, **kwargs) if kwargs else func(*args)
    return self._hot(self, func, types, args, kwargs)


class CompiledTrackMode(TrackMode):
    """``TrackMode`` whose common calls run in C (``csrc/``, see the module docstring); every
    other call goes to ``TrackMode.__torch_function__``, unchanged.

    torch looks ``__torch_function__`` up on the mode object and requires a method bound to it.
    The instance attribute is a copy of ``_compiled_entry`` (same code) whose calls from C
    (torch's dispatch) go to the compiled object (``_hotpath.set_dispatch``): torch.compile reads
    that attribute, guards on its code and inlines it (it cannot trace the C object, and a guard
    on the code holds from one block to the next).  A Python caller that CPython runs the code for
    directly (``torch.overrides.handle_torch_function``) reaches the compiled object through it."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__(tracker)
        # the compiled path classifies a new function itself, and runs every call from C: the rare
        # kinds (moves, views, backward, out=) between these two halves of ``_call``, backward's
        # own run through ``backward_run.run`` as ``_call`` does
        self._classify_now = self._classify
        self._before_now = self._before_call
        self._after_now = self._after_call
        self._backward_now = partial(backward_run.run, self)
        # where the C dispatch reads ``is_compiling()``'s flag (``_flag._is_compiling_flag``): a
        # torch without it has none to read.  The compiled object takes this dict once, when made
        self._compile_flags = vars(_flag) if isinstance(_flag, ModuleType) else None
        tr, lines = tracker, tracker.lines
        self._hot = _hotpath.Hot(
            actions=self._actions, state=self.__dict__, slow=MethodType(TrackMode.__torch_function__, self),
            watched=self._watched, where=self._where,
            on_error=self._on_error, internal=self._internal, tracker=tr,
            error_hooks=tr.error_hooks, record_hooks=tr.record_hooks, quiet=tr.quiet_creates, raw=tr.raw,
            times_append=tr.times.append, tensors=tr.tensors, sid_of_key=tr.sid_of_key,
            metas=tr._metas, intern=tr._intern, inputs=tr._inputs, gf_names=raw_mod._gf_names,
            gf_name=raw_mod._gf_name, names=ops._names, ids=identity._ids, counter=identity._counter,
            ref_type=identity.Ref, storage_id=identity.storage_id, no_storage=identity.NO_STORAGE,
            modules=tr.modules, lines=lines, line_cache=lines._cache, learn=lines._learn, find=lines.find,
            record_write=tr.record_write, record_outputs=tr.record_outputs, tensor_type=Tensor,
            now=_now, general=GENERAL, f64=torch.float64, write_gate=tr.write_gate, suspects=tr.suspects,
            recheck=tr._recheck, t0=tr.t0, fast_cap=tr._fast_cap,
        )  # fmt: skip
        py = _compiled_entry
        fn = FunctionType(py.__code__, py.__globals__, "__torch_function__", py.__defaults__, py.__closure__)
        fn.__qualname__ = "CompiledTrackMode.__torch_function__"
        # the place of a call the Python halves record (backward's, a move's…): the same walk, compiled
        self._where = self._hot.where  # type: ignore[method-assign]
        _hotpath.set_dispatch(fn, self._hot)
        self._dispatch = fn
        self.__torch_function__ = MethodType(fn, self)  # type: ignore[method-assign]
        # the block's end walks every tensor it made: the same loop, compiled
        tr.live_tensors = partial(_hotpath.live_tensors, tr.tensors, identity._ids, tr.merged)  # type: ignore[method-assign]
        # what the Python path still registers (backward's gradients, first sights) and snapshots
        # (each backward's leaves) goes through the compiled helpers too, while the block runs, and
        # so do each backward's walk for its leaves and the read of what they held
        self._tracker_helpers = {"meta": self._hot.meta, "_new": self._hot.new_tensor, "_add": self._hot.add,
                                 "_grads_filled": self._hot.grads_filled,
                                 "_leaves_of": partial(_hotpath.leaves_of, autograd._has_variable),
                                 "_held_grads": _hotpath.held_grads}  # fmt: skip
        tr.__dict__.update(self._tracker_helpers)

    def _internal(self, e: BaseException) -> None:
        super()._internal(e)
        self._hot.disable()

    def make_inert(self) -> None:
        super().make_inert()
        self._hot.disable()

    def close(self) -> None:
        # the bound method and the compiled object's references make cycles through this mode;
        # the block's end snapshots with the tracker's own methods (the compiled object closes)
        self.__dict__.pop("__torch_function__", None)
        self._dispatch.__dict__.clear()
        for name in ("_classify_now", "_before_now", "_after_now", "_backward_now", "_where"):
            self.__dict__.pop(name, None)
        for name in self._tracker_helpers:
            self.tracker.__dict__.pop(name, None)
        self._hot.close()
        super().close()
