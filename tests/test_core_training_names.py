"""Names and facts on a real training loop (Adam, clip_grad_norm_, a DataLoader,
``zero_grad(set_to_none=True)``) and on the tutorial material, on both engines.

Expected names and lines come from this file's source text (``_line``) or by hand."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.data import DataLoader, TensorDataset

import tensormagic
from tensormagic.views.panel_tables import inplace_table, tensor_rows

ENGINES = ("c", "python")
_SOURCE = open(__file__, encoding="utf-8").read().splitlines()


def _line(fragment: str) -> int:
    """The line of this file whose statement starts with ``fragment`` (once)."""
    (n,) = [i + 1 for i, text in enumerate(_SOURCE) if text.strip().startswith(fragment)]
    return n


def _train(engine: str):
    torch.manual_seed(0)
    X, Y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    loader = DataLoader(TensorDataset(X, Y), batch_size=16)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with tensormagic.track(engine=engine) as rec:
        for step, (xb, yb) in enumerate(loader):  # noqa: B007 - the loop target is what is named
            opt.zero_grad(set_to_none=True)
            pred = model(xb)
            loss = F.cross_entropy(pred, yb)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # noqa: F841
            opt.step()
            acc = (pred.argmax(1) == yb).float().mean()  # noqa: F841
    return rec


@pytest.fixture(scope="module", params=ENGINES)
def loop(request):
    return _train(request.param)


def _made(rec, line: int) -> list:
    return [e for e in rec.events if e.line == line and e.kind in ("create", "view", "move")]


def test_loop_targets_name_every_batch(loop):
    """``for step, (xb, yb) in enumerate(loader)`` names each step's batch ``xb`` and ``yb``."""
    stacks = [e for e in _made(loop, _line("for step, (xb, yb) in enumerate(loader)")) if e.op == "torch.stack"]
    assert [e.tensor.label for e in stacks] == ["xb", "yb", "xb", "yb"]


def test_module_temporaries_are_named_after_the_module(loop):
    """Inside ``pred = model(xb)`` the first Linear's and the ReLU's outputs are ``model.0 output`` and
    ``model.1 output``; only the last one is ``pred``."""
    made = _made(loop, _line("pred = model(xb)"))
    assert [e.tensor.label for e in made] == ["model.0 output", "model.1 output", "pred"] * 2


def test_only_the_bound_value_takes_the_target(loop):
    """``norm = clip_grad_norm_(…)`` names one tensor a step ``norm``: the total norm (vector_norm)."""
    made = _made(loop, _line("norm = torch.nn.utils.clip_grad_norm_"))
    normed = [e for e in made if "norm" in e.tensor.names]
    assert [e.op for e in normed] == ["torch.linalg.vector_norm"] * 2
    assert {e.tensor.label for e in made if e not in normed} == {"clip_grad_norm_ temporary"}


def test_foreach_norm_is_recorded_under_its_own_name(loop):
    """``torch._foreach_norm`` (a private op) is recorded: four per step, not a tensor "made by clip_grad_norm_"."""
    made = _made(loop, _line("norm = torch.nn.utils.clip_grad_norm_"))
    assert [e.op for e in made].count("torch._foreach_norm") == 8
    assert not any(e.origin == "seen" for e in made)


def test_each_steps_gradient_is_named_after_its_parameter(loop):
    """With ``set_to_none=True`` each backward makes new gradients, each named ``<param>.grad``."""
    grads = [e.tensor.label for e in _made(loop, _line("loss.backward()"))]
    params = ["model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"]
    assert sorted(grads) == sorted([f"{p}.grad" for p in params] * 2)


def test_inplace_tab_names_clip_writes_by_gradient(loop):
    """The In-place tab names ``clip_grad_norm_``'s writes by the gradients' names."""
    rows = [e for e in inplace_table(loop).rows if e.line == _line("norm = torch.nn.utils.clip_grad_norm_")]
    assert sorted(e.tensor.label for e in rows) == sorted(
        f"model.{i}.{w}.grad" for i in (0, 2) for w in ("weight", "bias") for _ in range(2))


def test_optimizer_state_is_named_from_opt_state(loop):
    """Adam's state tensors are ``opt.state[<param>].exp_avg`` and so on."""
    made = {e.tensor.label for e in _made(loop, _line("opt.step()"))}
    assert {"opt.state[model.0.weight].exp_avg", "opt.state[model.0.weight].exp_avg_sq",
            "opt.state[model.2.bias].step"} <= made


def test_parameters_existed_before_the_cell(loop):
    """A parameter made before the block is "existed before this cell", not made by ``addcdiv_``."""
    row = next(r for r in tensor_rows(loop) if r.label == "model.0.weight")
    assert (row.op, row.where) == ("existed before this cell", "")


def test_same_device_dtype_change_is_a_cast(loop):
    """``(pred == yb).float()`` is counted as a cast, apart from device moves."""
    assert "0 moves, 2 casts" in loop.summary_line()


@pytest.mark.parametrize("engine", ENGINES)
def test_autograd_grad_fills_no_grad(engine):
    """``autograd.grad`` returns ``g``; the report never says it filled ``w.grad``."""
    w = torch.randn(3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        r = w * 2
        (g,) = torch.autograd.grad(r.sum(), w)
    (bw,) = rec.filter(kind="backward")
    assert w.grad is None and rec.tensor("g").created.op == "torch.autograd.grad"
    text = rec.to_text()
    assert "w.grad" not in text and "fills no .grad" in text


@pytest.mark.parametrize("engine", ENGINES)
def test_gradient_left_from_before_is_not_new(engine):
    """A ``.grad`` left by an earlier backward is accumulated into, not reported as a new tensor."""
    w = torch.randn(3, requires_grad=True)
    (w * 2).sum().backward()
    with tensormagic.track(engine=engine) as rec:
        (w * 3).sum().backward()
    assert not [e for e in rec.filter(kind="create") if "w.grad" in e.tensor.names]
    (bw,) = rec.filter(kind="backward")
    assert [(gr.tensor.label, gr.accumulated) for gr in bw.grads] == [("w", True)]


@pytest.mark.parametrize("engine", ENGINES)
def test_complex_real_is_a_view(engine):
    """``z.real`` is a view of ``z``."""
    z = torch.randn(3, dtype=torch.complex64)
    with tensormagic.track(engine=engine) as rec:
        r = z.real  # noqa: F841
    (v,) = rec.filter(kind="view")
    assert (v.tensor.label, v.base.label, v.line) == ("r", "z", _line("r = z.real"))


@pytest.mark.parametrize("engine", ENGINES)
def test_sparse_mm_result_is_made_by_an_op(engine):
    """``torch.sparse.mm``'s result is created by its op (``torch._sparse_mm``), not "seen"."""
    a, b = torch.eye(3).to_sparse(), torch.randn(3, 2)
    with tensormagic.track(engine=engine) as rec:
        s = torch.sparse.mm(a, b)  # noqa: F841
    (c,) = [e for e in rec.filter(kind="create") if "s" in e.tensor.names]
    assert (c.op, c.origin, c.line) == ("torch._sparse_mm", "op", _line("s = torch.sparse.mm(a, b)"))


@pytest.mark.parametrize("engine", ENGINES)
def test_packed_sequence_tensors_are_on_their_line(engine):
    """``pack_padded_sequence``'s tensors are created on its own line, not the next one."""
    seqs, lens = torch.randn(3, 2, 4), torch.tensor([3, 2])
    with tensormagic.track(engine=engine) as rec:
        ps = pack_padded_sequence(seqs, lens)
        q = ps.data * 2  # noqa: F841
    made = [e for e in rec.filter(kind="create") if e.op == "torch._pack_padded_sequence"]
    assert [e.line for e in made] == [_line("ps = pack_padded_sequence(seqs, lens)")] * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_parameter_wrapping_leaves_the_temporary_unnamed(engine):
    """In ``p = nn.Parameter(torch.randn(3))`` only the Parameter is ``p``, not the randn temporary."""
    with tensormagic.track(engine=engine) as rec:
        p = nn.Parameter(torch.randn(3))  # noqa: F841
    (randn,) = rec.filter(op="torch.randn")
    assert "p" not in randn.tensor.names and rec.tensor("p").created.origin == "seen"


class _OwnNet(nn.Module):
    """A module written in this file: its ops run on its own lines, not the caller's."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).relu()


@pytest.mark.parametrize("engine", ENGINES)
def test_input_to_a_users_own_module_does_not_take_the_target_name(engine):
    """In ``out = net(torch.randn(2, 4))`` with ``net`` written by the user, ``out`` is the module's
    output (made on its ``forward`` line); the randn input is not called ``out``."""
    net = _OwnNet()
    with tensormagic.track(engine=engine) as rec:
        out = net(torch.randn(2, 4))
    (randn,) = rec.filter(op="torch.randn")
    assert "out" not in randn.tensor.names
    assert rec.tensor("out").created.line == _line("return self.fc(x).relu()") and torch.is_tensor(out)


@pytest.mark.parametrize("engine", ENGINES)
def test_tuple_assignment_names_each_value(engine):
    """``values, idx = torch.sort(x)`` names the two results ``values`` and ``idx``."""
    x = torch.randn(5)
    with tensormagic.track(engine=engine) as rec:
        values, idx = torch.sort(x)
        del values, idx
    made = [e.tensor.label for e in rec.filter(kind="create")]
    assert made == ["values", "idx"]


@pytest.mark.parametrize("engine", ENGINES)
def test_tuple_assignment_in_a_loop_names_each_steps_values(engine):
    """Each step of ``values, idx = torch.sort(x)`` in a loop names its two results, not both
    ``values``: one call makes both at one bytecode offset."""
    x = torch.randn(5)
    with tensormagic.track(engine=engine) as rec:
        for _ in range(3):
            values, idx = torch.sort(x)
    made = [(e.tensor.names[0], e.tensor.dtype) for e in rec.filter(kind="create")]
    assert made == [("values", "float32"), ("idx", "int64")] * 3


@pytest.mark.parametrize("engine", ENGINES)
def test_worker_batches_are_named_by_their_target(engine):
    """``for xb, yb in loader`` with two workers names the first step's 8×4 batch ``xb`` and its
    8×1 batch ``yb``; the op ``lin(xb) - yb`` reads them under those names."""
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=8, num_workers=2)
    lin = nn.Linear(4, 1)
    with tensormagic.track(engine=engine) as rec:
        for xb, yb in loader:
            loss = ((lin(xb) - yb) ** 2).mean()  # noqa: F841
    # a worker's batch may arrive during an earlier step's next() (the loader keeps it for later):
    # the line cannot say which step took it, and calls it the loop's temporary (or nothing, on
    # Python 3.10), never by the other target's name
    batches = [e for e in _made(rec, _line("for xb, yb in loader:")) if e.tensor.shape != ()]
    temp = "next(loader) temporary"
    assert sorted(e.tensor.shape for e in batches) == [(8, 1), (8, 1), (8, 4), (8, 4)]
    assert all(set(e.tensor.names[:1]) <= ({"xb", temp} if e.tensor.shape == (8, 4) else {"yb", temp})
               for e in batches)  # fmt: skip
    assert {e.tensor.label for e in batches} >= {"xb", "yb"}  # the batches the names hold at the end
    subs = rec.filter(op="torch.Tensor.sub")
    assert [(e.inputs[0].label, set(e.inputs[1].names[:1]) <= {"yb", temp}) for e in subs] == [("lin output", True)] * 2


@pytest.mark.parametrize("engine", ENGINES)
def test_header_and_tabs_count_alike_past_max_events(engine):
    """Past ``max_events`` the header's tensor count is the Tensors tab's row count, and its casts
    are the Devices tab's rows plus the folded repeats its totals list (100 casts in all)."""
    from tensormagic.views.common import move_counts
    from tensormagic.views.panel_tables import move_totals_html, moves_table, tensors_table

    x = torch.zeros(3)
    with tensormagic.track(engine=engine, max_events=20) as rec:
        for _ in range(100):
            y = x.double()  # noqa: F841
    moves, casts, folded = move_counts(rec)
    assert moves == 0 and casts + folded == 100 and folded > 0
    assert f"0 moves, {casts} casts, {folded} moves/casts folded" in rec.summary_line()
    assert len(tensors_table(rec).rows) == len(rec.tensors)
    assert len(moves_table(rec).rows) == casts and f"<td>{folded:,}</td>" in move_totals_html(rec)


def test_warning_inside_a_view_call_points_at_the_users_line():
    """A call the Python half records (``x.T``, a view) still runs from C: torch's deprecation warning
    for ``.T`` of a 3-D tensor names this file's line."""
    x = torch.randn(2, 3, 4)
    with tensormagic.track(engine="c", diagnostics=()) as rec:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            xt = x.T  # noqa: F841 - deprecated on 3-D tensors: torch warns
    (wn,) = [c for c in caught if ".T" in str(c.message)]
    assert (wn.filename, wn.lineno) == (__file__, _line("xt = x.T"))
    assert [e.kind for e in rec.events] == ["view"]


class _Stack(nn.Module):
    """Calls the items of a ModuleList and a ModuleDict from its forward (containers are never called)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.heads = nn.ModuleDict({"out": nn.Linear(4, 2)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.heads["out"](x)


@pytest.mark.parametrize("engine", ENGINES)
def test_module_paths_through_containers_are_attribute_paths(engine):
    """Ops in a ModuleList's or ModuleDict's items run in ``net.layers.0``, ``net.layers.1`` and
    ``net.heads.out``: the paths a user writes, not the item's class name (both layers apart)."""
    net = _Stack()
    with tensormagic.track(engine=engine) as rec:
        net(torch.randn(3, 4))
    assert {e.module for e in rec.events if e.module} == {"net.layers.0", "net.layers.1", "net.heads.out"}


@pytest.mark.parametrize("engine", ENGINES)
def test_children_called_by_forward_are_named_below_their_parent(engine):
    """``net.forward(x)`` runs ``net``'s children without calling ``net``: their ops are in
    ``net.0``, ``net.1``, ``net.2``, not in modules named by their class."""
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with tensormagic.track(engine=engine) as rec:
        net.forward(torch.randn(3, 4))
    assert [e.module for e in rec.events if e.module] == ["net.0", "net.1", "net.2"]


@pytest.mark.parametrize("engine", ENGINES)
def test_module_no_variable_reaches_keeps_its_class_name(engine):
    """A module no variable holds, nor any module a variable holds, is named by its class."""
    net = nn.Sequential(nn.Linear(4, 2))  # noqa: F841 - searched, and does not hold the module below
    kept = [nn.Linear(4, 2)]  # a list holds it: no module path leads to it
    with tensormagic.track(engine=engine) as rec:
        kept[0](torch.randn(3, 4))
    assert {e.module for e in rec.events if e.module} == {"Linear"}


@pytest.mark.parametrize("engine", ENGINES)
def test_gpt2_block_paths_name_their_layer(engine):
    """A transformers GPT-2 (built from a config, offline) runs its blocks from ``transformer.h``,
    a ModuleList: their ops are in ``m.transformer.h.0.attn`` ... ``m.transformer.h.1.mlp.c_fc``."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=100, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    m = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 100, (1, 8))
    with tensormagic.track(engine=engine) as rec:
        m(ids)
    modules = {e.module for e in rec.events if e.module}
    for layer in ("0", "1"):
        assert {f"m.transformer.h.{layer}.attn.c_attn", f"m.transformer.h.{layer}.mlp.c_fc"} <= modules
    assert not [p for p in modules if "GPT2Block" in p]


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.11+ names these by their expression text")
@pytest.mark.parametrize("engine", ENGINES)
def test_argument_of_a_module_call_is_not_its_temporary_on_310(engine):
    """On Python 3.10 (no column positions) the tensors ``out = net(torch.randn(2, 4) * 2)`` makes
    before ``net`` runs are not "net temporary" (they keep their ids); what ``clip_grad_norm_``
    makes inside itself stays "clip_grad_norm_ temporary"."""
    net = _OwnNet()
    net(torch.ones(1, 4)).sum().backward()
    with tensormagic.track(engine=engine) as rec:
        out = net(torch.randn(2, 4) * 2)  # noqa: F841
        norm = nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # noqa: F841
    args = [e for e in rec.filter(kind="create") if e.line == _line("out = net(torch.randn(2, 4) * 2)") and not e.module]
    assert [e.tensor.label for e in args] == [e.tensor.id for e in args] and len(args) == 2
    inside = [e for e in rec.filter(kind="create") if e.line == _line("norm = nn.utils") and e.tensor.label != "norm"]
    assert inside and {e.tensor.label for e in inside} == {"clip_grad_norm_ temporary"}


class _Odd(nn.Module):
    """A module whose own ``named_parameters`` yields a non-tensor beside its parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def named_parameters(self, *args, **kwargs):  # type: ignore[override]
        yield "w", self.w
        yield "inner", nn.Linear(1, 1, bias=False)


def test_namespace_names_cover_tensors_grads_modules_buffers_and_containers():
    """Each namespace value gives its names in order: a tensor (and a leaf's .grad), a module's
    parameters (with grads) and buffers, what a module's own named_parameters yields, containers."""
    from tensormagic.engine.naming import named_tensors

    leaf = torch.ones(2, requires_grad=True)
    (leaf * 2).sum().backward()
    bn = nn.BatchNorm1d(2)
    bn.weight.grad = torch.zeros(2)
    odd = _Odd()
    ns = {"_hidden": leaf, "leaf": leaf, "made": leaf * 3, "bn": bn, "odd": odd, "pair": [leaf, 1],
          "d": {"k": leaf}, "In": leaf}
    got = [(n, t) for n, t in named_tensors(ns)]
    assert [n for n, _ in got] == [
        "leaf", "leaf.grad", "made", "bn.weight", "bn.weight.grad", "bn.bias", "bn.running_mean",
        "bn.running_var", "bn.num_batches_tracked", "odd.w", "odd.inner.weight", "pair[0]", "pair[0].grad",
        "d['k']", "d['k'].grad"]
    assert got[1][1] is leaf.grad and got[4][1] is bn.weight.grad and got[6][1] is bn.running_mean


def test_a_loaders_dataset_tensors_are_named_through_it():
    """A loader over a ``Subset`` of a ``TensorDataset`` names its tensors
    ``loader.dataset.dataset.tensors[i]``; a dataset held directly, ``ds.tensors[i]``."""
    from tensormagic.engine.naming import named_tensors

    X, Y = torch.randn(4, 2), torch.randn(4)
    ds = TensorDataset(X, Y)
    loader = DataLoader(torch.utils.data.Subset(ds, range(2)))
    got = list(named_tensors({"loader": loader, "ds": ds}))
    assert [n for n, _ in got] == ["loader.dataset.dataset.tensors[0]", "loader.dataset.dataset.tensors[1]",
                                   "ds.tensors[0]", "ds.tensors[1]"]  # fmt: skip
    assert got[0][1] is X and got[3][1] is Y


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_are_views_of_the_named_dataset_tensors(engine):
    """A batch's rows read from a dataset made inline are views of ``loader.dataset.tensors[0]``,
    not of a bare id."""
    loader = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
    with tensormagic.track(engine=engine) as rec:
        for (xb,) in loader:  # noqa: B007
            pass
    bases = {e.base.label for e in rec.filter(kind="view")}
    assert bases == {"loader.dataset.tensors[0]"}


@pytest.mark.parametrize("engine", ENGINES)
def test_autograd_grad_says_each_gradients_shape_apart_from_its_name(engine):
    """``autograd.grad(loss, [w, b])`` reads "returns the gradients of w (2×3), b (3)": the
    shapes in brackets (it read "of w 2×3, b 3") and the plural for two."""
    w, b = torch.randn(2, 3, requires_grad=True), torch.randn(3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        loss = (w * b).sum()
        gw, gb = torch.autograd.grad(loss, [w, b])
    (bw,) = rec.filter(kind="backward")
    assert gw.shape == (2, 3) and gb.shape == (3,)  # torch's shapes for the words below
    assert "from loss: returns the gradients of w (2×3), b (3)  (fills no .grad)" in rec.to_text(width=200)


def _build_and_use() -> torch.Tensor:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    out = model(torch.ones(2, 4)).sum()
    return out


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 code has no column positions to place the value")
@pytest.mark.parametrize("engine", ENGINES)
def test_a_line_binding_a_module_names_none_of_its_tensors_after_it(engine):
    """``model = nn.Sequential(nn.Linear(4, 3), …)`` in a function the block calls binds a module:
    the weights ``nn.Linear(4, 3)`` makes are not named ``model``; the sum the next line binds is ``out``."""
    with tensormagic.track(engine=engine) as rec:
        _build_and_use()
    line = _line("model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())")
    made = [e for e in rec.events if e.line == line and e.kind in ("create", "view")]
    assert made and not any("model" in e.tensor.names for e in made)
    (total,) = rec.filter(op="torch.Tensor.sum")
    assert total.tensor.names[0] == "out"


def _make_layer() -> torch.Tensor:
    lin = nn.Linear(4, 3)
    return lin(torch.ones(2, 4))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_class_made_in_a_function_names_none_of_its_tensors(engine):
    """``lin = nn.Linear(4, 3)`` in a function the block calls makes a module: no tensor made while
    it was built is ``lin`` (its weights are not the module)."""
    with tensormagic.track(engine=engine) as rec:
        _make_layer()
    line = _line("lin = nn.Linear(4, 3)")
    made = [e for e in rec.events if e.line == line and e.kind in ("create", "view")]
    assert len(made) == 4 and not any("lin" in e.tensor.names for e in made)  # two empties, two Parameters


@pytest.mark.parametrize(("line", "obj"), [
    ("lin = nn.Linear(4, 3)", True), ("model = MyNet()", True), ("opt = torch.optim.Adam(ps)", True),
    ("lin = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3))", True), ("f = torch.compile(model)", True),
    ("w = nn.Parameter(torch.randn(3))", False), ("t = torch.Tensor(3)", False), ("y = F.relu(x)", False),
    ("y = net(x)", False), ("for x in Loader():", False),
])  # fmt: skip
def test_binds_object_reads_a_class_or_a_module_wrapper_from_the_source(line, obj):
    """A class made, or a function that hands back a module, binds no tensor; a Parameter does."""
    from tensormagic.engine.statements import binds_object

    assert binds_object(line) is obj


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tensor_a_module_made_but_did_not_return_is_its_temporary(engine):
    """In ``nn.TransformerEncoderLayer`` the residual sums and the ReLU are made in ``layer`` itself
    but not returned: ``layer temporary``; what ``layer.norm1`` returns is ``layer.norm1 output``."""
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    x = torch.randn(3, 2, 8)
    with tensormagic.track(engine=engine) as rec:
        y = layer(x)  # noqa: F841
    made = {(e.op, e.tensor.label) for e in rec.filter(kind="create")}
    assert ("torch.Tensor.add", "layer temporary") in made and ("torch.nn.functional.relu", "layer temporary") in made
    assert ("torch.nn.functional.layer_norm", "layer.norm1 output") in made
    assert not any(label == "layer output" for _op, label in made)  # the layer returns y


@pytest.mark.parametrize("engine", ENGINES)
def test_an_input_a_full_backward_hook_wraps_is_not_the_modules_output(engine):
    """A full backward hook makes torch wrap ``lin``'s input in a view inside ``lin``'s call: that
    view is ``lin temporary``; ``F.linear``'s result is ``lin output``."""
    lin = nn.Linear(3, 2)
    lin.register_full_backward_hook(lambda m, gi, go: None)
    x = torch.randn(4, 3, requires_grad=True)
    with tensormagic.track(engine=engine) as rec:
        y = lin(x)  # noqa: F841
    (wrap,) = [e for e in rec.filter(kind="view") if e.base.label == "x"]
    (out,) = rec.filter(op="torch.nn.functional.linear")
    assert (wrap.tensor.label, out.tensor.label) == ("lin temporary", "lin output")


def _leaf_with_grad() -> torch.Tensor:
    w = torch.ones(3, requires_grad=True)
    (w * 2).sum().backward()
    return w


@pytest.mark.parametrize("engine", ENGINES)
def test_a_leaf_only_its_line_names_names_its_gradient(engine):
    """A leaf no namespace name reaches (kept in an object's attribute) is ``w`` by its line, and
    the gradient its backward filled is ``w.grad``, as the backward row says, not a bare id."""
    from types import SimpleNamespace

    with tensormagic.track(engine=engine) as rec:
        box = SimpleNamespace(w=_leaf_with_grad())
    (grad,) = [e for e in rec.filter(kind="create") if e.op == "torch.Tensor.backward"]
    (bw,) = rec.filter(kind="backward")
    assert box.w.grad is not None and grad.tensor.label == "w.grad" and bw.grads[0].tensor.label == "w"
