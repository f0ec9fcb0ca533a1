"""Diagnostics: each classic mistake is named at its line, and correct code raises no alarm."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from testkit import line_with, make_mlp
from torch import nn
from torch.nn import functional as F

import tensormagic
from tensormagic.api import TrackingWarning
from tensormagic.diagnostics import (
    IDS,
    BroadcastWarning,
    DeviceMismatchWarning,
    DtypeFloat64Warning,
    DtypeIntTargetWarning,
    GradAccumulationWarning,
    GradUnfilledWarning,
    InplaceSavedWarning,
    LeafMovedWarning,
    NonFiniteWarning,
    Settings,
    SyncInLoopWarning,
    TensorMagicWarning,
)
from tensormagic.model.events import Diagnostic

INPLACE_ERROR = "modified by an inplace operation"


def ids(rec) -> list[str]:
    return [d.id for d in rec.diagnostics]


def only(rec, diag_id: str) -> Diagnostic:
    found = [d for d in rec.diagnostics if d.id == diag_id]
    assert len(found) == 1, rec.diagnostics
    return found[0]


# -- 1. in-place write to a tensor backward needs ----------------------------------------------
def test_inplace_saved_is_reported_at_the_write_line():
    """The sigmoid/mul_ example: warned at mul_, naming sigmoid and its line, before backward fails."""
    x = torch.randn(3, requires_grad=True)
    with pytest.warns(InplaceSavedWarning), pytest.raises(RuntimeError, match=INPLACE_ERROR):
        with tensormagic.track() as rec:
            a = x.sigmoid()
            b = a * 2
            a.mul_(3)
            b.sum().backward()
    d = only(rec, "inplace-saved")
    assert d.line == line_with("a.mul_(3)")
    assert line_with("a = x.sigmoid()") in d.lines and line_with("b.sum().backward()") in d.lines  # the failed backward
    assert "sigmoid" in d.message and "mul_" in d.message and "a" in d.names
    assert d.severity == "error" and d.fix


def test_inplace_saved_backward_error_is_unchanged():
    """The user's backward() error has the same type and message as without tracking."""

    def run():
        x = torch.ones(3, requires_grad=True)
        a = x.sigmoid()
        b = a * 2
        a.mul_(3)
        b.sum().backward()

    with pytest.raises(RuntimeError) as bare:
        run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InplaceSavedWarning)
        with pytest.raises(RuntimeError) as tracked:
            with tensormagic.track():
                run()
    assert type(tracked.value) is type(bare.value) and str(tracked.value) == str(bare.value)


def test_inplace_saved_without_backward_warns_that_it_will_fail():
    """A stale graph still alive at the end of the block is reported before any backward runs."""
    x = torch.randn(3, requires_grad=True)
    with pytest.warns(InplaceSavedWarning, match="will fail"):
        with tensormagic.track() as rec:
            a = x.exp()
            a.add_(1)
    assert only(rec, "inplace-saved").line == line_with("a.add_(1)")
    with pytest.raises(RuntimeError, match=INPLACE_ERROR):
        a.sum().backward()


def test_inplace_saved_through_a_view():
    """A write through a slice overwrites the saved base: reported, naming the base and the view."""
    x = torch.randn(4, requires_grad=True)
    with pytest.warns(InplaceSavedWarning):
        with tensormagic.track() as rec:
            a = x.sigmoid()
            v = a[:2]
            v.mul_(3)
    d = only(rec, "inplace-saved")
    assert d.line == line_with("v.mul_(3)") and {"a", "v"} <= set(d.names)


def test_inplace_saved_through_data_is_a_silent_wrong_gradient():
    """A write through .data bypasses autograd's check: reported; the gradient is as without tracking."""

    def run():
        x = torch.ones(3, requires_grad=True)
        a = x.sigmoid()
        b = a * 2
        a.data.mul_(3)
        b.sum().backward()
        return x.grad

    bare = run()
    with pytest.warns(InplaceSavedWarning, match=r"\.data"):
        with tensormagic.track() as rec:
            grad = run()
    assert torch.equal(bare, grad)
    assert only(rec, "inplace-saved").source == "a.data.mul_(3)"


def test_inplace_write_to_an_input_autograd_saved():
    """Writing a leaf under no_grad after another op saved it (w * w) is reported at the write."""
    w = torch.randn(3, requires_grad=True)
    with pytest.warns(InplaceSavedWarning):
        with tensormagic.track() as rec:
            y = w * w
            with torch.no_grad():
                w.add_(1)
    d = only(rec, "inplace-saved")
    assert d.line == line_with("w.add_(1)") and "w" in d.names and d.count == 1
    del y


@pytest.mark.parametrize("engine", ["c", "python"])
def test_inplace_write_to_what_a_skipped_op_saved(engine: str):
    """An op whose later calls skip the checks (linear, once judged) still counts as saving its inputs."""
    w = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.warns(InplaceSavedWarning):
        with tensormagic.track(engine=engine) as rec:
            F.linear(x, w)  # the checks judge linear here: its creates need them no more
            y = F.linear(x, w)
            with torch.no_grad():
                w.add_(1)
    d = only(rec, "inplace-saved")
    assert d.line == line_with("w.add_(1)") and "w" in d.names
    del y


@pytest.mark.parametrize("engine", ["c", "python"])
def test_judged_creates_skip_the_record_hooks(engine: str):
    """Once judged, an op's creates skip the hooks (grad_fn, several inputs, an elementwise op no
    bigger than an input), but not an elementwise result bigger than every input, nor float64 ones."""
    from torch.overrides import _get_current_function_mode

    w = torch.randn(3, 3, requires_grad=True)
    x = torch.randn(2, 3)
    col, row = torch.randn(2, 1), torch.randn(1, 3)
    wd, xd = w.detach().double(), x.double()
    reached: list[str] = []
    with tensormagic.track(engine=engine):
        F.linear(x, w), x.exp(), x * x, F.linear(xd, wd), col.exp(), row.exp()  # judged; col, row seen
        tr = _get_current_function_mode().tracker
        tr.record_hooks.append(lambda tr, idx, objs: reached.append(tr.raw[idx][1]))
        F.linear(x, w), x.exp(), w.exp(), x * x  # quiet: several inputs / one input / a same-sized product
        col * row, F.linear(xd, wd)  # a product bigger than both inputs; a float64 result: the checks look
    assert reached == ["torch.Tensor.mul", "torch.nn.functional.linear"]


@pytest.mark.parametrize("engine", ["c", "python"])
def test_writes_after_backward_skip_the_record_hooks(engine: str):
    """An optimizer step after backward (the graphs that used the parameters are freed) calls no record hook."""
    from torch.overrides import _get_current_function_mode

    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 4)
    reached: list[str] = []
    with tensormagic.track(engine=engine) as rec:
        tr = _get_current_function_mode().tracker
        tr.record_hooks.append(lambda tr, idx, objs: reached.append(tr.raw[idx][0]))
        for _ in range(3):
            out = model(x)
            out.sum().backward()
            opt.step()
            opt.zero_grad()
    assert len(rec.filter(kind="inplace")) == 6 and "inplace" not in reached and rec.diagnostics == []


@pytest.mark.parametrize("engine", ["c", "python"])
def test_write_to_what_a_retained_graph_saved(engine: str):
    """After backward(retain_graph=True) the graph still holds w: the write is checked and reported."""
    w = torch.randn(3, requires_grad=True)
    with pytest.warns(InplaceSavedWarning):
        with tensormagic.track(engine=engine) as rec:
            y = w * w
            y.sum().backward(retain_graph=True)
            with torch.no_grad():
                w.add_(1)
    d = only(rec, "inplace-saved")
    assert d.line == line_with("w.add_(1)") and "w" in d.names
    del y


@pytest.mark.parametrize("engine", ["c", "python"])
def test_write_to_a_view_whose_grad_fn_torch_refuses_to_read(engine: str):
    """``nn.Embedding(..., padding_idx=0)`` zeroes ``weight[0]`` under no_grad, a view whose
    ``grad_fn`` torch refuses to read: the in-place check skips it and recording goes on."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        with tensormagic.track(engine=engine) as rec:
            emb = nn.Embedding(10, 4, padding_idx=0)
            out = emb(torch.tensor([0, 3]))  # noqa: F841
    assert rec.internal_error is None and [e.op for e in rec.events][-1] == "torch.nn.functional.embedding"


def test_inplace_before_use_or_on_unsaved_tensors_is_fine():
    """Writes no saved tensor depends on (before the use, or on what a mul by a scalar never saved): quiet."""
    x = torch.randn(3, requires_grad=True)
    with tensormagic.track() as rec:
        a = x * 2
        a.add_(1)
        b = a.exp()
        c = x + 1
        c.relu_()
        (b.sum() + c.sum()).backward()
    assert rec.diagnostics == []


# -- 2. a leaf that stops being a leaf ---------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_leaf_moved_by_dtype_change():
    """torch.randn(…, requires_grad=True).double() gives a non-leaf: said at its line, with the fix."""
    with pytest.warns(LeafMovedWarning):
        with tensormagic.track() as rec:
            w = torch.randn(3, requires_grad=True).double()
            (w * 2).sum().backward()
    d = only(rec, "leaf-moved")
    assert d.line == line_with("w = torch.randn(3, requires_grad=True).double()") and d.names == ("w",)
    assert "requires_grad_()" in d.fix and w.grad is None


def test_leaf_moved_to_another_device():
    """The same mistake with .to(device) (meta stands in for a GPU)."""
    with pytest.warns(LeafMovedWarning, match="meta"):
        with tensormagic.track() as rec:
            w = torch.randn(3, requires_grad=True).to("meta")
    assert only(rec, "leaf-moved").names == ("w",)


def test_moving_a_kept_leaf_is_fine():
    """A named leaf copied to another dtype keeps its .grad: no alarm."""
    with tensormagic.track() as rec:
        x = torch.randn(3, requires_grad=True)
        y = x.double()
        (y * 2).sum().backward()
    assert rec.diagnostics == [] and x.grad is not None


# -- 3. .grad that will never be filled; accumulation across steps ----------------------------
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_grad_of_a_non_leaf_is_never_filled():
    """Reading y.grad of a non-leaf: reported at the read, naming y and where it was made."""
    with pytest.warns(GradUnfilledWarning):
        with tensormagic.track() as rec:
            x = torch.ones(2, requires_grad=True)
            y = x * 2
            y.sum().backward()
            g = y.grad
    d = only(rec, "grad-unfilled")
    assert g is None and d.names == ("y",) and line_with("y = x * 2") in d.lines
    assert "retain_grad()" in d.fix


def test_grad_of_a_retained_non_leaf_is_fine():
    """retain_grad() before backward makes y.grad real: no alarm."""
    with tensormagic.track() as rec:
        x = torch.ones(2, requires_grad=True)
        y = x * 2
        y.retain_grad()
        y.sum().backward()
        g = y.grad
    assert rec.diagnostics == [] and g is not None


def _regression():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(8, 3), torch.randn(8, 1)


def test_gradients_accumulating_across_steps():
    """backward + step without zero_grad: reported at backward with the count of passes."""
    model, opt, x, y = _regression()
    with pytest.warns(GradAccumulationWarning):
        with tensormagic.track() as rec:
            for _ in range(4):
                loss = F.mse_loss(model(x), y)
                loss.backward()
                opt.step()
    d = only(rec, "grad-accumulation")
    assert d.line == line_with("loss.backward()") and d.count == 3
    # 4 loop steps: 4 passes summed, with the 3 optimizer steps between them (by hand)
    assert set(d.names) == {"model.weight", "model.bias"}
    assert "the sum of 4 backward passes, with 3 optimizer steps between them" in d.message


def test_deliberate_gradient_accumulation_is_fine():
    """Several backward calls, then one step, then zeroing: no alarm."""
    model, opt, x, y = _regression()
    with tensormagic.track() as rec:
        for _ in range(3):
            for _ in range(4):
                F.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    assert rec.diagnostics == []


def test_zeroing_in_place_resets_accumulation():
    """zero_grad(set_to_none=False) zeroes in place: no alarm."""
    model, opt, x, y = _regression()
    with tensormagic.track() as rec:
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            F.mse_loss(model(x), y).backward()
            opt.step()
    assert rec.diagnostics == []


# -- 4. silent broadcasting --------------------------------------------------------------------
def test_broadcast_before_a_reduction():
    """(64, 1) - (64,) gives (64, 64) and .mean() hides it: reported at the subtraction."""
    with pytest.warns(BroadcastWarning, match="64×64"):
        with tensormagic.track() as rec:
            pred = torch.randn(64, 1)
            target = torch.randn(64)
            loss = ((pred - target) ** 2).mean()
    d = only(rec, "broadcast")
    assert d.line == line_with("loss = ((pred - target) ** 2).mean()") and set(d.names) == {"pred", "target"}
    assert loss.shape == ()


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_broadcast_messages_count_elements_with_thousands_separators():
    """(64, 1) against (64,) makes 64 * 64 = 4,096 elements: both broadcast messages write "4,096
    elements" (they wrote "4096 elements")."""
    with pytest.warns(BroadcastWarning):
        with tensormagic.track() as rec:
            pred = torch.randn(64, 1)
            target = torch.randn(64)
            loss = ((pred - target) ** 2).mean()
            inner = nn.MSELoss()(pred, target)
    messages = [d.message for d in rec.diagnostics if d.id == "broadcast"]
    assert len(messages) == 2 and all("(4,096 elements" in m for m in messages), messages
    assert loss.shape == inner.shape == ()


def test_broadcast_is_followed_through_ops_the_block_ran_before():
    """Single-input ops seen before a broadcast (their calls skipped since) still carry it to the reduction."""
    with pytest.warns(BroadcastWarning, match="64×64"):
        with tensormagic.track() as rec:
            warm = (torch.randn(64) ** 2).mean()  # pow and mean: plain creates nobody needs to see
            pred = torch.randn(64, 1)
            target = torch.randn(64)
            loss = ((pred - target) ** 2).mean()
    assert only(rec, "broadcast").line == line_with("loss = ((pred - target) ** 2).mean()")
    assert warm.shape == loss.shape == ()


@pytest.mark.filterwarnings("ignore:Using a target size")
def test_broadcast_inside_a_loss():
    """nn.MSELoss with (64, 1) and (64,) broadcasts internally: reported at the loss."""
    with pytest.warns(BroadcastWarning):
        with tensormagic.track() as rec:
            pred = torch.randn(64, 1)
            target = torch.randn(64)
            loss = nn.MSELoss()(pred, target)
    assert only(rec, "broadcast").line == line_with("loss = nn.MSELoss()(pred, target)")


def test_explicit_outer_products_are_fine():
    """a[:, None] * b and unsqueeze on the same line are deliberate: no alarm."""
    with tensormagic.track() as rec:
        a = torch.randn(5)
        b = torch.randn(6)
        s1 = (a[:, None] * b).sum()
        s2 = (a.unsqueeze(1) - b).pow(2).mean()
    assert rec.diagnostics == [] and s1.shape == s2.shape == ()


# -- 5. the first non-finite value --------------------------------------------------------------
def test_first_non_finite_value_with_stats():
    """log(0) is the first op with Inf from finite inputs: reported there, not at the later ops."""
    with pytest.warns(NonFiniteWarning):
        with tensormagic.track(stats=True) as rec:
            x = torch.tensor([1.0, 0.0, 2.0])
            y = torch.log(x)
            z = y * 2
            w = z - z
    d = only(rec, "non-finite")
    assert d.line == line_with("y = torch.log(x)") and d.names == ("y", "x") and "1 Inf" in d.message
    assert torch.isnan(w).any()


def test_non_finite_is_off_without_stats():
    """Without stats=True nothing reads tensor values: no non-finite diagnostic."""
    with tensormagic.track() as rec:
        x = torch.tensor([1.0, 0.0])
        y = torch.log(x)
    assert rec.diagnostics == [] and torch.isinf(y).any()


# -- 6. device mismatch ------------------------------------------------------------------------
def test_device_mismatch_names_each_tensor_and_where_it_got_there():
    """cpu + meta: the tensors, their devices and the lines that put them there."""
    with pytest.warns(DeviceMismatchWarning), pytest.raises(RuntimeError):
        with tensormagic.track() as rec:
            x = torch.ones(3)
            w = torch.ones(3).to("meta")
            y = x + w
    d = only(rec, "device-mismatch")
    assert d.names == ("x", "w") and d.line == line_with("y = x + w")
    assert line_with('w = torch.ones(3).to("meta")') in d.lines and line_with("x = torch.ones(3)") in d.lines
    assert "x is on cpu" in d.message and "w is on meta" in d.message


def test_device_mismatch_error_is_unchanged():
    """The user's own exception propagates with the same type and message as without tracking."""

    def run():
        x = torch.ones(3)
        model = nn.Linear(3, 2).to("meta")
        return model(x)

    with pytest.raises(RuntimeError) as bare:
        run()
    with pytest.warns(DeviceMismatchWarning), pytest.raises(RuntimeError) as tracked:
        with tensormagic.track() as rec:
            run()
    assert type(tracked.value) is type(bare.value) and str(tracked.value) == str(bare.value)
    assert rec.failed and ids(rec) == ["device-mismatch"]


# -- 7. dtype surprises ------------------------------------------------------------------------
def test_float64_from_numpy_meets_float32():
    """from_numpy gives float64; times float32 weights the result is silently float64."""
    with pytest.warns(DtypeFloat64Warning, match="NumPy"):
        with tensormagic.track() as rec:
            data = torch.from_numpy(np.ones(5))
            weights = torch.randn(5)
            out = data * weights
    d = only(rec, "dtype-float64")
    assert out.dtype == torch.float64 and d.names == ("data", "weights")
    assert d.line == line_with("out = data * weights") and ".float()" in d.fix


def test_float64_into_a_linear_layer_fails_and_is_explained():
    """nn.Linear on float64 input raises; the diagnostic names the input and the weight."""
    layer = nn.Linear(5, 1)
    with pytest.warns(DtypeFloat64Warning), pytest.raises(RuntimeError, match="same dtype"):
        with tensormagic.track() as rec:
            data = torch.from_numpy(np.ones(5))
            out = layer(data)
    assert only(rec, "dtype-float64").names[:2] == ("data", "layer.weight")


def test_integer_target_for_a_float_loss():
    """nn.MSELoss()(output, torch.arange(1, 11)): an integer target, reported at the loss."""
    with pytest.warns(DtypeIntTargetWarning):
        with tensormagic.track() as rec:
            output = torch.randn(10, requires_grad=True)
            loss = nn.MSELoss()(output, torch.arange(1, 11))
    d = only(rec, "dtype-int-target")
    assert d.line == line_with("loss = nn.MSELoss()(output") and "int64" in d.message and "CrossEntropyLoss" in d.fix


def test_integer_class_labels_for_cross_entropy_are_fine():
    """cross_entropy takes integer class labels: no alarm."""
    with tensormagic.track() as rec:
        logits = torch.randn(4, 3)
        loss = F.cross_entropy(logits, torch.tensor([0, 2, 1, 0]))
    assert rec.diagnostics == []


# -- 8. host–device syncs in loops ------------------------------------------------------------
def test_sync_in_loop_counts_per_line():
    """.item() on a line run 20 times is flagged with its count (cpu counted through the settings seam)."""
    cpu_syncs = Settings(sync_devices=frozenset({"cpu"}))
    with pytest.warns(SyncInLoopWarning, match="20 times"):
        with tensormagic.track(diagnostics=cpu_syncs) as rec:
            t = torch.ones(3)
            total = 0.0
            for _ in range(20):
                total += t.sum().item()
            once = bool(t.sum() > 0)
    d = only(rec, "sync-in-loop")
    assert d.count == 20 and "item()" in d.message and d.severity == "info" and once


def test_cpu_reads_are_not_syncs_by_default():
    """On the CPU .item() waits for nothing: no alarm with default settings."""
    with tensormagic.track() as rec:
        t = torch.ones(3)
        for _ in range(20):
            t.sum().item()
    assert rec.diagnostics == []


@pytest.mark.cuda
def test_sync_in_loop_on_cuda():
    """.item() and .cpu() of CUDA tensors in a loop are flagged per line."""
    with pytest.warns(SyncInLoopWarning):
        with tensormagic.track() as rec:
            t = torch.ones(3, device="cuda")
            for _ in range(12):
                t.sum().item()
                t.cpu()
    assert [d.count for d in rec.diagnostics if d.id == "sync-in-loop"] == [12, 12]


# -- no false alarms -----------------------------------------------------------------------------


def test_no_alarm_on_a_correct_training_loop():
    """200 MLP steps (dropout, momentum, relu_, zero_grad, loss.item()) raise no diagnostic."""
    torch.manual_seed(0)
    model = make_mlp(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data, target = torch.randn(64, 20), torch.randn(64, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorMagicWarning)
        with tensormagic.track(max_events=5000) as rec:
            for _ in range(200):
                opt.zero_grad()
                loss = F.mse_loss(model(data), target)
                loss.backward()
                opt.step()
                last = loss.item()
    assert rec.diagnostics == [] and last < 1.5


def test_no_alarm_on_the_tutorial_cells():
    """The classic tutorial cells of the core issue raise no diagnostic."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorMagicWarning)
        with tensormagic.track() as rec:
            x = torch.rand(5, 3)
            y = torch.rand(5, 3)
            s = torch.add(x, y)
            y.add_(x)
            x = torch.randn(4, 4)
            v = x.view(16)
            z = x.view(-1, 8)
            z[0, 0] = 5.0
            a = np.ones(5)
            b = torch.from_numpy(a)
            np.add(a, 1, out=a)
            c = torch.ones(5).numpy()
            m = torch.ones_like(x, device="meta")
            xm = x.to("meta")
            zm = xm + m
            zd = x.to("cpu", torch.double)
            x = torch.ones(2, 2, requires_grad=True)
            y = x + 2
            z = y * y * 3
            out = z.mean()
            out.backward()
            with torch.no_grad():
                q = x**2
    assert rec.diagnostics == [] and not q.requires_grad and float(x.grad[0, 0]) == 4.5
    del s, v, b, c, zm, zd


class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv1(x)), inplace=True), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def test_no_alarm_on_a_conv_net_forward_and_backward():
    """A small conv net (batch norm, in-place relu, pooling, flatten) forward + backward: no diagnostic."""
    torch.manual_seed(0)
    net = _ConvNet()
    images, labels = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorMagicWarning)
        with tensormagic.track(stats=True) as rec:
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
    assert rec.diagnostics == [] and net.conv1.weight.grad is not None


# -- selection, warnings, serialisation -----------------------------------------------------------
def test_selecting_diagnostics():
    """A list of ids runs only those; [] and None run none; an unknown id fails before the block."""
    pred, target = torch.randn(8, 1), torch.randn(8)
    for spec, expected in ((["broadcast"], ["broadcast"]), (["leaf-moved"], []), ([], []), (None, [])):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TensorMagicWarning)
            with tensormagic.track(diagnostics=spec) as rec:
                (pred - target).mean()
        assert ids(rec) == expected, spec
    with pytest.raises(ValueError, match="unknown diagnostic 'brodcast'"):
        tensormagic.track(diagnostics=["brodcast"])


def test_each_diagnostic_is_a_filterable_warning_category():
    """Every id has its own TensorMagicWarning subclass (not a TrackingWarning); filtering one silences it."""
    from tensormagic.diagnostics import category

    assert len({category(i) for i in IDS}) == len(IDS)
    for i in IDS:
        assert issubclass(category(i), TensorMagicWarning) and not issubclass(category(i), TrackingWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=BroadcastWarning)
        with tensormagic.track() as rec:
            (torch.randn(8, 1) - torch.randn(8)).sum()
    assert ids(rec) == ["broadcast"] and not [w for w in caught if issubclass(w.category, TensorMagicWarning)]


def test_warnings_as_errors_never_replace_the_users_exception():
    """With an "error" filter, a failing block still raises the user's own exception."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorMagicWarning)
        with pytest.raises(RuntimeError, match="expected device"):
            with tensormagic.track() as rec:
                torch.ones(3) + torch.ones(3, device="meta")
    assert ids(rec) == ["device-mismatch"]


def test_diagnostic_round_trips_through_a_dict():
    """to_dict/from_dict give the same Diagnostic, so a log file can carry it."""
    with pytest.warns(BroadcastWarning):
        with tensormagic.track() as rec:
            pred, target = torch.randn(8, 1), torch.randn(8)
            (pred - target).abs().sum()
    d = only(rec, "broadcast")
    assert Diagnostic.from_dict(d.to_dict()) == d and d.where == f"test_diagnostics.py:{d.line}"


def test_lines_in_a_tracked_cell_count_the_magic_line(ip):
    """Under %%trackgrad a diagnostic's line counts the %%trackgrad line as line 1, as events do."""
    from testkit import run

    cell = "%%trackgrad --quiet -o rec\npred = torch.randn(8, 1)\ntarget = torch.randn(8)\n(pred - target).abs().mean()\n"
    with pytest.warns(BroadcastWarning):
        result = run(ip, cell)
    rec = ip.user_ns["rec"]
    d = only(rec, "broadcast")
    assert (d.line, d.where, d.cell, d.names) == (4, "line 4", result.execution_count, ("pred", "target"))
    bad = "(pred - target).abs().mean()"
    assert d.line == cell.splitlines().index(bad) + 1 and d.source == bad  # counted in the cell's text


def test_selecting_diagnostics_by_text_each_time():
    """A comma-separated text selects its own ids every time it is given, after other texts too; an
    unknown id in a text fails every time."""
    from tensormagic.diagnostics import select

    for _ in range(2):
        assert select("all").ids == frozenset(IDS)
        assert select("broadcast, leaf-moved").ids == {"broadcast", "leaf-moved"}
        assert select("none").ids == frozenset()
        with pytest.raises(ValueError, match="unknown diagnostic 'brodcast'"):
            select("broadcast,brodcast")
