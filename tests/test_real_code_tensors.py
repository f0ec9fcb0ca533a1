"""Real code on every kind of tensor, tracked on both engines (``realcode.check``: bit-identical
results, the whole block recorded, ``tensor_info`` on each), and what the recording says of the
kinds the tracker cannot read as usual: inference tensors, nested tensors, subclasses, tensors
rebuilt by pickle / torch.load."""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest
import torch
from realcode import ENGINES, check
from torch.utils._pytree import tree_map

import tensormagic
from tensormagic.engine.describe import NO_VERSION
from tensormagic.engine.identity import tensor_id


def sparse_coo_and_csr() -> dict[str, Any]:
    dense = torch.randn(5, 4).relu()
    coo = dense.to_sparse().requires_grad_()
    w = torch.randn(4, 3, requires_grad=True)
    y = torch.sparse.mm(coo, w)
    y.sum().backward()
    csr = dense.to_sparse_csr()
    z = csr @ torch.randn(4, 2)
    return {"coo": coo, "w": w, "y": y, "csr": csr, "z": z, "back": coo.to_dense() * 2}


def complex_numbers() -> dict[str, Any]:
    x = torch.randn(8, dtype=torch.complex64, requires_grad=True)
    f = torch.fft.fft(x)
    y = (f * f.conj()).real.sum() + torch.angle(x).sum()
    y.backward()
    return {"x": x, "f": f, "y": y, "polar": torch.polar(torch.rand(3), torch.rand(3))}


def nested_strided_and_jagged() -> dict[str, Any]:
    parts = [torch.randn(2, 3), torch.randn(4, 3)]
    strided = torch.nested.nested_tensor(parts)
    s2 = strided * 2 + 1
    jagged = torch.nested.nested_tensor(parts, layout=torch.jagged, requires_grad=True)
    j2 = (jagged * 3).sin()
    j2.values().sum().backward()
    return {"strided": strided, "s2": s2, "jagged": jagged, "j2": j2, "s_parts": s2.unbind()}


with torch.inference_mode():
    MADE_IN_INFERENCE = torch.arange(6.0).reshape(2, 3)


def inference_before_and_inside() -> dict[str, Any]:
    lin = torch.nn.Linear(3, 2)
    a = lin(MADE_IN_INFERENCE.clone())  # an inference tensor made before the block, used in it
    b = MADE_IN_INFERENCE * 2
    with torch.inference_mode():
        c = lin(torch.randn(4, 3))
        c.add_(1)  # in place on an inference tensor: no version counter to read
        d = c.relu()
    e = a.sum() + d.sum()  # recording goes on after the inference block
    e.backward()
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "lin": lin}


class Strict(torch.Tensor):
    """A subclass that refuses every call it does not know (as strict wrappers in the wild do)."""

    ALLOWED = {torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.sum,
               torch.Tensor.add_, torch.Tensor.sigmoid, torch.Tensor.double, torch.Tensor.backward}

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func not in cls.ALLOWED:
            raise RuntimeError(f"Strict refuses {getattr(func, '__name__', func)}")
        with torch._C.DisableTorchFunctionSubclass():
            r = func(*args, **(kwargs or {}))
        return r.as_subclass(Strict) if isinstance(r, torch.Tensor) else r


class Wrapper(torch.Tensor):
    """A wrapper subclass: no storage of its own, its data in ``elem``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> Any:
        return torch.Tensor._make_wrapper_subclass(cls, elem.shape, dtype=elem.dtype, device=elem.device)

    def __init__(self, elem: torch.Tensor) -> None:
        self.elem = elem

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        unwrap = lambda x: x.elem if isinstance(x, Wrapper) else x  # noqa: E731
        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))
        return tree_map(lambda x: Wrapper(x) if isinstance(x, torch.Tensor) else x, out)


def subclasses() -> dict[str, Any]:
    leaf = torch.randn(3, requires_grad=True)
    s = leaf.as_subclass(Strict)
    s2 = s.sigmoid() + 1
    s3 = s2 * s
    s3.add_(1)  # in place: the diagnostics' hooks read it too
    s3.double().sum().backward()
    w = Wrapper(torch.randn(3))
    w2 = w * 2 + w
    p = torch.nn.Parameter(torch.randn(3))
    q = (p * 2).sum()
    q.backward()
    return {"leaf": leaf, "s": s, "s2": s2, "s3": s3, "w": w, "w2": w2, "p": p, "q": q}


SCENARIOS = [sparse_coo_and_csr, complex_numbers, nested_strided_and_jagged, inference_before_and_inside, subclasses]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_tensor_kind_runs_bit_identical_and_recorded(scenario: Any, engine: str) -> None:
    """Each tensor kind's results and RNG state are bit-identical tracked and untracked, the whole
    block is recorded without an internal error, and tensor_info describes each tensor."""
    check(scenario, engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_inference_tensor_is_recorded_without_a_version(engine: str) -> None:
    """An op on an inference tensor made before the block is recorded; the input's snapshot says it
    has no version counter (NO_VERSION) rather than a version it does not have."""
    with tensormagic.track(engine=engine) as rec:
        y = MADE_IN_INFERENCE + 1
    (ev,) = [e for e in rec.events if e.op.endswith("add")]
    assert (ev.tensor.shape, ev.tensor.version) == ((2, 3), 0)  # made outside inference mode
    assert [(i.shape, i.version) for i in ev.inputs] == [((2, 3), NO_VERSION)]
    del y


@pytest.mark.parametrize("engine", ENGINES)
def test_in_place_write_on_an_inference_tensor_is_recorded(engine: str) -> None:
    """An in-place op on a tensor without a version counter is still recorded as a write."""
    with tensormagic.track(engine=engine) as rec:
        with torch.inference_mode():
            c = torch.zeros(3)
            c.add_(1)
    assert [(e.kind, e.op) for e in rec.events][-1] == ("inplace", "torch.Tensor.add_")


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("engine", ENGINES)
def test_strided_nested_tensor_shows_its_regular_sizes(engine: str) -> None:
    """A nested tensor of the strided layout, which has no single shape, is recorded with its
    number of components and regular sizes, None for the irregular dimension."""
    with tensormagic.track(engine=engine) as rec:
        nt = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)])
        n2 = nt * 2
    (ev,) = [e for e in rec.events if e.op.endswith("mul")]
    assert ev.tensor.shape == (2, None, 3) and ev.inputs[0].shape == (2, None, 3)
    assert "2×?×3" in rec.to_text()
    del n2


@pytest.mark.parametrize("engine", ENGINES)
def test_strict_subclass_is_tracked_without_running_its_torch_function(engine: str) -> None:
    """Tracking a strict subclass's ops neither raises nor calls its __torch_function__ for the
    tracker's own reads: it sees exactly the calls the untracked run makes."""
    calls: list[str] = []

    class Counting(Strict):
        @classmethod
        def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            calls.append(getattr(func, "__name__", str(func)))
            return super().__torch_function__(func, types, args, kwargs)

    s = torch.ones(3).as_subclass(Counting)
    _ = (s + 1) * 2
    untracked = list(calls)
    calls.clear()
    with tensormagic.track(engine=engine) as rec:
        y = (s + 1) * 2
    assert calls == untracked and rec.internal_error is None
    assert [e.op for e in rec.events if e.kind == "create"][-2:] == ["torch.Tensor.add", "torch.Tensor.mul"]
    del y


def _pickled() -> bytes:
    return pickle.dumps(torch.arange(160.0).reshape(10, 16))


def _saved() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(12, dtype=torch.int32).reshape(3, 4)}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("engine", ENGINES)
def test_unpickled_tensor_shows_its_real_shape_at_its_line(engine: str) -> None:
    """A tensor rebuilt by pickle (torch.empty(0), then set_() which no mode sees) is recorded at its
    line with its real shape, dtype and a storage of its own, and the next op's input is that snapshot."""
    blob = _pickled()
    with tensormagic.track(engine=engine) as rec:
        t = pickle.loads(blob)
        u = t + 1
    made = rec.tensor("t").created
    assert (made.tensor.shape, made.tensor.dtype, made.source) == ((10, 16), "float32", "t = pickle.loads(blob)")
    add = rec.tensor("u").created
    assert add.inputs[0] is made.tensor or add.inputs[0] == made.tensor
    assert made.tensor.storage_id is not None and made.tensor.storage_id != add.tensor.storage_id
    del u


@pytest.mark.parametrize("engine", ENGINES)
def test_tensor_from_torch_load_shows_its_real_shape_even_unused(engine: str) -> None:
    """A tensor torch.load rebuilt and nothing used in the block shows its real shape and dtype
    (looked at again at the next recorded op or at the block's end)."""
    blob = _saved()
    with tensormagic.track(engine=engine) as rec:
        d = torch.load(io.BytesIO(blob))
    made = rec.tensor("d['w']").created
    assert (made.tensor.shape, made.tensor.dtype) == ((3, 4), "int32")
    del d


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_tensor_resized_in_place_keeps_its_empty_creation(engine: str) -> None:
    """A tensor made empty and then resized by a visible op keeps its creation record as made
    (0 elements): only writes no op showed change a creation record."""
    with tensormagic.track(engine=engine) as rec:
        e = torch.empty(0)
        e.resize_(5)
        f = e + 1
    assert rec.tensor("e").created.tensor.shape == (0,)
    assert rec.tensor("f").created.inputs[0].shape == (5,)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("engine", ENGINES)
def test_what_the_tracker_could_not_read_is_said_and_logged(engine: str, tmp_path: Any) -> None:
    """A tensor the tracker read only in part is listed with what it could not read and what sort
    of tensor it is, in the recording, its text, and the log read back."""
    log = tmp_path / "cells.jsonl"
    with tensormagic.track(engine=engine, log=log) as rec:
        nt = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)])
        z = MADE_IN_INFERENCE + 1
    nid, iid = tensor_id(nt), tensor_id(MADE_IN_INFERENCE)
    assert rec.unreadable[nid] == "a nested tensor: no single size in dimension 1 (shown as ?)"
    assert rec.unreadable[iid] == "an inference tensor: no version counter: in-place writes are not counted"
    assert f"note: MADE_IN_INFERENCE ({iid}) is an inference tensor" in rec.to_text()
    (back,) = tensormagic.load_log(log)
    assert back.unreadable == rec.unreadable
    del z


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_tensorinfo_magic_explains_every_kind(ip: Any) -> None:
    """%tensorinfo explains a wrapper subclass (no storage of its own), a strict subclass, an
    inference tensor and a strided nested tensor without an error."""
    from IPython.utils.capture import capture_output
    from testkit import run

    ip.user_ns.update(wr=Wrapper(torch.randn(3)), st=torch.ones(2).as_subclass(Strict), inf=MADE_IN_INFERENCE,
                      nt=torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(1, 3)]))  # fmt: skip
    for name in ("wr", "st", "inf", "nt"):
        with capture_output() as cap:
            result = run(ip, f"%tensorinfo {name}")
        assert result.error_in_exec is None and result.error_before_exec is None, name
        text = cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)
        assert text.startswith(name) and "shape" in text, text


def test_notes_on_tensors_read_in_part_are_sentences_and_count_what_they_leave_out() -> None:
    """A freed inference tensor's note reads "t1 — no version counter: …" (not "t1 is no version
    counter"), the HTML names tensors as the text does, and past five notes the rest are counted."""
    import html
    import re

    with tensormagic.track() as rec:
        with torch.inference_mode():
            a = torch.ones(3) * 2  # torch.ones(3) is freed at the block's end: its kind is not known
            bs = [torch.ones(2) for _ in range(6)]
    assert len(rec.unreadable) == 8  # torch.ones(3), a and six ones(2): all made in inference mode
    text = rec.to_text()
    notes = [line.removeprefix("  note: ") for line in text.splitlines() if line.startswith("  note: ")]
    assert " is no version counter" not in text
    assert notes[0].endswith(" — no version counter: in-place writes are not counted")
    assert notes[1] == f"a ({tensor_id(a)}) is an inference tensor: no version counter: in-place writes are not counted"
    assert notes[5:] == ["… 3 more tensors read only in part"]  # 8 - 5 by hand
    html_notes = [html.unescape(n) for n in re.findall(r"<div class='tm-muted'>note: (.*?)</div>", rec.to_html())]
    assert html_notes == notes
    del bs
