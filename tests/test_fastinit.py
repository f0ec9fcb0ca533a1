"""fastinit.fast_constructor: the compiled SlotMaker and the Python fallback build the same objects
as the event model's own dataclass constructors."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass
from typing import Any, Callable

import pytest

from tensormagic.model import fastinit
from tensormagic.model.events import Event, GradRecord, Stats, TensorRef

REF = TensorRef("t1", "s1", ("x",), (2, 3), "float32", "cpu", True, False, "AddBackward0", 4)

#: (class, positional arguments, keyword arguments): required fields only, and many set
CASES: list[tuple[type, tuple[Any, ...], dict[str, Any]]] = [
    (TensorRef, ("t1", None, (), (), "int64", "meta", False, True, None, 0), {}),
    (TensorRef, (), dict(id="t2", storage_id="s1", names=("a", "b"), shape=(4,), dtype="float64", device="cuda:0",
                         requires_grad=True, is_leaf=True, grad_fn=None, version=7)),  # fmt: skip
    (GradRecord, (REF, (2, 3), "float32"), {}),
    (GradRecord, (REF,), dict(shape=(1,), dtype="float16", accumulated=True, grad_id="t9")),
    (Stats, (), {}),
    (Stats, (0.0, 1.0), dict(nan=2, note="n")),
    (Event, (0, "create", "torch.add"), dict(tensor=REF)),
    (Event, (), dict(seq=3, kind="inplace", op="torch.Tensor.add_", tensor=REF, line=4, source="x.add_(1)", cell=2,
                     module="fc1", time_us=1.5, inputs=(REF, REF), version_before=1, version_after=2,
                     aliases=(REF,), inplace=True, stats=Stats(0.0, 1.0), note="a note")),  # fmt: skip
]

ENGINES = [pytest.param(True, id="compiled"), pytest.param(False, id="python")]


def _maker(cls: type, compiled: bool) -> Callable[..., Any]:
    if compiled and fastinit.SlotMaker is None:
        pytest.fail("tensormagic.engine._hotpath was not built: is a C compiler installed?")
    return fastinit.fast_constructor(cls, compiled=compiled)


@pytest.mark.parametrize("compiled", ENGINES)
@pytest.mark.parametrize(("cls", "args", "kwargs"), CASES)
def test_same_object_as_the_dataclass(compiled: bool, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The constructor's object equals the dataclass's own: fields, defaults, repr and hash."""
    made = _maker(cls, compiled)(*args, **kwargs)
    own = cls(*args, **kwargs)
    assert type(made) is cls
    assert made == own and repr(made) == repr(own) and hash(made) == hash(own)


@pytest.mark.parametrize("compiled", ENGINES)
def test_made_objects_stay_frozen(compiled: bool) -> None:
    """A field of a constructed object cannot be assigned, as with the dataclass."""
    ref = _maker(TensorRef, compiled)(*CASES[0][1])
    with pytest.raises(FrozenInstanceError):
        ref.version = 1  # type: ignore[misc]


@pytest.mark.parametrize("compiled", ENGINES)
@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((REF,), {}, "missing"),
        ((REF, (1,), "f", False, None, "extra"), {}, "arguments but|positional"),
        ((REF, (1,), "f"), dict(colour="red"), "unexpected keyword"),
        ((REF, (1,), "f"), dict(shape=(2,)), "multiple values"),
    ],
    ids=["missing", "too-many", "unknown-keyword", "given-twice"],
)
def test_bad_arguments_are_a_type_error(compiled: bool, args: tuple[Any, ...], kwargs: dict[str, Any],
                                        message: str) -> None:  # fmt: skip
    """Wrong arguments raise TypeError, as the dataclass constructor does."""
    with pytest.raises(TypeError):
        GradRecord(*args, **kwargs)
    with pytest.raises(TypeError, match=message):
        _maker(GradRecord, compiled)(*args, **kwargs)


def test_slot_maker_refuses_a_class_with_a_dict() -> None:
    """SlotMaker only builds slotted classes: one with a __dict__ is refused up front."""

    @dataclass(frozen=True)
    class Loose:
        a: int

    if fastinit.SlotMaker is None:
        pytest.fail("tensormagic.engine._hotpath was not built: is a C compiler installed?")
    with pytest.raises(TypeError, match="__dict__"):
        fastinit.fast_constructor(Loose, compiled=True)


def test_compiled_event_dicts_are_event_to_dict() -> None:
    """The compiled event encoder gives Event.to_dict's dict (same keys in the same order) for every kind."""
    if fastinit.SlotDict is None:
        pytest.fail("tensormagic.engine._hotpath was not built: is a C compiler installed?")
    from test_logfile import _every_kind

    from tensormagic.model.fastinit import DICT, DICTS, REF, REFS

    kinds = {"tensor": REF, "base": REF, "source_tensor": REF, "inputs": REFS, "aliases": REFS, "outputs": REFS,
             "grads": DICTS, "stats": DICT}  # fmt: skip
    to_dict = fastinit.fast_to_dict(Event, kinds, compiled=True)
    events = [*_every_kind().events, CASES[-1][0](**CASES[-1][2])]
    assert {e.kind for e in events} >= {"create", "view", "inplace", "move", "backward", "compiled"}
    for e in events:
        got, want = to_dict(e, TensorRef.to_dict), e.to_dict()
        # a compiled event's graph_ops, plain strings, stay a tuple here and are a list in to_dict:
        # the same JSON array in the log the writer writes
        assert json.dumps(got) == json.dumps(want) and list(got) == list(want)


def test_slot_dict_refuses_unknown_fields_and_other_objects() -> None:
    """A kind for a field the class lacks, or an object of another class, is a clear error."""
    if fastinit.SlotDict is None:
        pytest.fail("tensormagic.engine._hotpath was not built: is a C compiler installed?")
    with pytest.raises(ValueError, match="no field 'colour'"):
        fastinit.fast_to_dict(Event, {"colour": fastinit.REF}, compiled=True)
    to_dict = fastinit.fast_to_dict(Event, {}, compiled=True)
    with pytest.raises(TypeError, match="expected Event"):
        to_dict(REF, TensorRef.to_dict)
