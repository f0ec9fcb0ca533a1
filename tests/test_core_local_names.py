"""Names a person can recognise for tensors no namespace name reaches when the block ends: the
parameters of a module a function built and dropped, the tensors the block's end first met, and a
loss an earlier step of a loop made inside a model.  On both engines.

Expected names and lines come from this file's source text (``_line``) or by hand (torch's
``named_parameters`` paths of an ``nn.Sequential`` are its children's indices)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import tensormagic
from tensormagic.views.lines import line_rows

ENGINES = ("c", "python")
_SOURCE = open(__file__, encoding="utf-8").read().splitlines()


def _line(fragment: str) -> int:
    """The line of this file whose statement starts with ``fragment`` (once)."""
    (n,) = [i + 1 for i, text in enumerate(_SOURCE) if text.strip().startswith(fragment)]
    return n


def _train() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss = model(torch.randn(5, 4)).pow(2).mean()
        loss.backward()
        opt.step()  # _train's
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.01 * p


PARAMS = ("model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias")


@pytest.mark.parametrize("engine", ENGINES)
def test_parameters_of_a_functions_local_module_take_its_local_name(engine):
    """The weights ``opt.step()`` writes, of a model ``_train`` holds in its local ``model``, are
    ``model.0.weight`` … ``model.2.bias``, not bare ids, though the model is gone at the block's end."""
    with tensormagic.track(engine=engine) as rec:
        _train()
    step = [e for e in rec.filter(kind="inplace") if e.line == _line("opt.step()  # _train's")]
    assert {e.tensor.label for e in step} == set(PARAMS)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_write_through_a_loop_variable_names_the_parameter(engine):
    """``p -= 0.01 * p`` over ``model.parameters()`` writes ``model.0.weight`` … by name."""
    with tensormagic.track(engine=engine) as rec:
        _train()
    writes = [e for e in rec.filter(kind="inplace") if e.line == _line("p -= 0.01 * p")]
    assert [e.tensor.label for e in writes] == list(PARAMS)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_functions_local_module_names_its_paths_and_gradients(engine):
    """Inside the local ``model`` ops run in ``model.0`` … (not ``module.0``), and each backward
    fills ``model.0.weight.grad`` …"""
    with tensormagic.track(engine=engine) as rec:
        _train()
    assert {e.module for e in rec.events if e.module} == {"model.0", "model.1", "model.2"}
    grads = [e for e in rec.filter(kind="create") if e.op == "torch.Tensor.backward"]
    assert len(grads) == 8 and {e.tensor.label for e in grads} == {f"{p}.grad" for p in PARAMS}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_local_name_the_namespace_also_holds_says_its_function(engine):
    """Where the namespace's own ``model`` is another module, the local one's weights are
    ``_train.<locals>.model.0.weight``: ``model.0.weight`` would be the namespace's."""
    model = nn.Linear(2, 2)  # noqa: F841 - the namespace's ``model``, never called
    with tensormagic.track(engine=engine) as rec:
        _train()
    step = [e for e in rec.filter(kind="inplace") if e.line == _line("opt.step()  # _train's")]
    assert {e.tensor.label for e in step} == {f"_train.<locals>.{p}" for p in PARAMS}


def _evaluate() -> None:
    model = nn.Linear(4, 1)
    model(torch.randn(2, 4)).sum().backward()


@pytest.mark.parametrize("engine", ENGINES)
def test_locals_of_one_name_in_two_functions_say_their_function(engine):
    """``model`` in ``_train`` and ``model`` in ``_evaluate`` are two modules: their weights are
    ``_train.<locals>.model.0.weight`` and ``_evaluate.<locals>.model.weight``, not both ``model…``."""
    with tensormagic.track(engine=engine) as rec:
        _train()
        _evaluate()
    step = [e for e in rec.filter(kind="inplace") if e.line == _line("opt.step()  # _train's")]
    assert {e.tensor.label for e in step} == {f"_train.<locals>.{p}" for p in PARAMS}
    (lin,) = [e for e in rec.filter(op="torch.nn.functional.linear") if e.line == _line("model(torch.randn(2, 4))")]
    assert [i.label for i in lin.inputs[1:]] == ["_evaluate.<locals>.model.weight", "_evaluate.<locals>.model.bias"]


def _call_a_global() -> None:
    _GLOBAL_NET(torch.randn(2, 3))


_GLOBAL_NET = nn.Linear(3, 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_module_no_local_holds_takes_no_local_name(engine):
    """A function that calls a module global to it holds it in no local: no local name is kept
    (the namespace, here the test's, does not hold it either: its class name, as before)."""
    with tensormagic.track(engine=engine) as rec:
        _call_a_global()
    (lin,) = rec.filter(op="torch.nn.functional.linear")
    assert lin.module == "Linear" and [i.label for i in lin.inputs][1:] == [i.id for i in lin.inputs][1:]


def _call_a_module_no_name_holds() -> None:
    nn.Linear(3, 1)(torch.randn(2, 3))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_module_no_name_holds_gone_by_the_end_is_named_by_its_class(engine):
    """``nn.Linear(3, 1)(x)`` in a function: no variable ever held the module, gone at the
    block's end; its output is ``Linear output``, as a live module's no name reaches (not ``module``)."""
    with tensormagic.track(engine=engine) as rec:
        _call_a_module_no_name_holds()
    (lin,) = rec.filter(op="torch.nn.functional.linear")
    assert (lin.module, lin.tensor.label) == ("Linear", "Linear output")


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tensor_the_block_end_first_met_is_placed_there(engine):
    """``torch.get_rng_state()`` (no op the mode sees) bound as ``b[2]`` is first met by the
    block's end: its event is placed at ``block end``, and the report shows no ``?`` place."""
    with tensormagic.track(engine=engine) as rec:
        b = [1, 2, torch.get_rng_state()]  # noqa: F841
    (seen,) = [e for e in rec.events if e.tensor.label == "b[2]"]
    assert seen.where == "block end" and "first seen at the block's end" in seen.note
    assert not [ln for ln in rec.to_text().splitlines() if ln.strip() == "?"]
    assert [row.where for row in line_rows(rec)] == ["block end"]  # the Lines view's row too


class _WithLoss(nn.Module):
    """Returns a dict with its loss, as transformers' models do (``out.loss``, ``out["loss"]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.lin(x).pow(2).mean()}


def _gpt2_steps() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 50, (2, 8))
    for _ in range(2):
        out = model(ids, labels=ids)
        loss = out.loss
        loss.backward()


@pytest.mark.parametrize("engine", ENGINES)
def test_one_name_bound_to_a_models_output_object_does_not_name_its_tensors(engine):
    """``out = model(ids, labels=ids)`` in a function binds the ModelOutput GPT-2 returned, not
    the loss in it: the loss is ``model output`` (what is true of it), never ``out``."""
    with tensormagic.track(engine=engine) as rec:
        _gpt2_steps()
    losses = [e.tensor for e in rec.filter(kind="backward")]
    assert len(losses) == 2
    assert all("out" not in t.names and t.label.startswith("model output") for t in losses), [t.label for t in losses]


def _net_and_batch() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return _WithLoss(), torch.randn(4, 3)


def _two_steps(engine: str) -> tensormagic.Recording:
    net, x = _net_and_batch()
    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            out = net(x)
            loss = out["loss"]
            loss.backward()
    return rec


@pytest.mark.parametrize("engine", ENGINES)
def test_an_earlier_steps_loss_is_named_by_its_backward_call(engine):
    """``loss = out["loss"]`` runs no op: step 1's loss, made inside ``net`` and gone at the end,
    is ``loss`` as ``loss.backward()`` calls it, like the last step's, not ``net temporary``."""
    rec = _two_steps(engine)
    first, last = rec.filter(kind="backward")
    assert first.tensor.label == "loss" and "loss" in last.tensor.names
    assert [e.tensor.label for e in rec.filter(op="torch.Tensor.mean")][0] == "loss"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_last_steps_loss_is_said_by_the_name_its_backward_call_used(engine):
    """The last step's loss, held as ``out["loss"]`` and ``loss``, is said ``loss`` first (the name
    ``loss.backward()`` used, as step 1's), so the rows read ``loss (step 1)``, ``loss (step 2)``."""
    rec = _two_steps(engine)
    last = rec.filter(kind="backward")[-1]
    assert last.tensor.names == ("loss", "out['loss']")
    assert "backward loss (step 2)" in " ".join(rec.to_text(width=200).split())


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backward_call_with_more_on_its_line_names_the_earlier_steps_loss(engine):
    """``loss.backward()  # …; then more`` on one line still names step 1's loss ``loss`` (on
    Python 3.10, which has no column positions, from the line's one ``.backward()`` call)."""
    net, x = _net_and_batch()
    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            loss = net(x)["loss"]
            loss.backward(); n = 1  # noqa: E702 - a second statement on the backward call's line
    assert n == 1
    assert rec.filter(kind="backward")[0].tensor.label == "loss"


def test_without_column_positions_a_lines_one_backward_call_gives_its_receiver():
    """Where the offset cannot be placed in the source (Python 3.10), ``loss.backward(); n = 1``
    names ``loss``, and a line with two ``.backward()`` calls names neither."""
    from tensormagic.engine.snapshot import _backward_self

    name = _backward_self(lambda where, lasti: None, {"loss", "a", "b"})
    here = __file__
    assert name((here, _line("loss.backward(); n = 1")), 0) == "loss"
    assert name((here, _line("a.backward(); b.backward()")), 0) is None


def _two_backward_calls_on_one_line(a: torch.Tensor, b: torch.Tensor) -> None:
    a.backward(); b.backward()  # noqa: E702 - read as text by the test above


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backward_on_a_name_the_namespace_holds_no_tensor_in_names_nothing(engine):
    """``loss.backward()`` names the tensor only where ``loss`` holds a tensor at the end: here
    ``loss`` ends as a float, so step 1's loss keeps the name of where it was made."""
    net, x = _net_and_batch()
    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            loss = net(x)["loss"]
            loss.backward()
        loss = 0.0
    assert "loss" not in rec.filter(kind="backward")[0].tensor.names


@pytest.mark.parametrize("engine", ENGINES)
def test_gpt2_step_one_loss_is_loss_as_the_last_steps(engine):
    """GPT-2 with AdamW, ``loss = out.loss; loss.backward()`` for two steps: step 1's loss is
    ``loss`` (not ``model output``), and the last step's is ``loss`` first too."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 50, (2, 8))
    with tensormagic.track(engine=engine) as rec:
        for _ in range(2):
            opt.zero_grad()
            out = model(ids, labels=ids)
            loss = out.loss
            loss.backward()
            opt.step()
    first, last = rec.filter(kind="backward")
    assert first.tensor.names == ("loss",) and last.tensor.names == ("loss", "out['loss']")  # ModelOutput is a dict


def _loop_over_workers() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=8, num_workers=2)
    lin = nn.Linear(4, 1)
    for xb, yb in loader:
        ((lin(xb) - yb) ** 2).mean()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_functions_worker_batches_are_named_by_their_targets(engine):
    """In a function (no namespace value to go by), ``for xb, yb in loader`` with two workers
    names each 8×4 batch ``xb`` and each 8×1 batch ``yb``: the base seed ``iter(loader)`` makes
    on that line is not one of the values the loop binds."""
    with tensormagic.track(engine=engine) as rec:
        _loop_over_workers()
    line = _line("for xb, yb in loader:")
    batches = [e for e in rec.filter(kind="create") if e.line == line and e.tensor.shape != ()]
    assert {e.tensor.shape for e in batches} == {(8, 4), (8, 1)}
    # on Python 3.10 (no column positions) a batch that arrived during an earlier step's next()
    # may keep its id; it never takes the other target's name
    assert all(e.tensor.label == ("xb" if e.tensor.shape == (8, 4) else "yb")
               or (sys.version_info < (3, 11) and not e.tensor.names) for e in batches), \
        [(e.tensor.shape, e.tensor.label) for e in batches]  # fmt: skip


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g  # _Square's


@pytest.mark.parametrize("engine", ENGINES)
def test_a_functions_incoming_gradient_is_named_by_its_parameter(engine):
    """The gradient autograd hands a custom Function's ``backward(ctx, g)`` (made by no op the
    tracker sees) is ``g``, the parameter that held it, where it is first seen and as an input of
    ``2 * x * g``, not a bare id."""
    w = torch.ones(3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        _Square.apply(w).sum().backward()
    at = [e for e in rec.events if e.line == _line("return 2 * x * g  # _Square's")]
    assert [(e.origin, e.tensor.label) for e in at if e.origin == "seen"] == [("seen", "g")]
    made = [e for e in at if e.origin != "seen" and len(e.inputs) == 2]
    assert [e.inputs[1].label for e in made] == ["g"]  # the first, ``2 * x``, is an id on Python 3.10


@pytest.mark.parametrize("engine", ENGINES)
def test_a_local_holding_a_first_seen_tensor_says_its_function_where_the_namespace_has_the_name(engine):
    """Where the namespace holds a ``g`` of its own, the Function's ``g`` is ``backward.<locals>.g``."""
    w = torch.ones(3, requires_grad=True)
    g = torch.zeros(1)  # noqa: F841 - the namespace's own g
    with tensormagic.track(engine=engine) as rec:
        _Square.apply(w).sum().backward()
    seen = [e.tensor.label for e in rec.events if e.origin == "seen" and e.line == _line("return 2 * x * g  # _Square's")]
    assert seen == ["backward.<locals>.g"]
