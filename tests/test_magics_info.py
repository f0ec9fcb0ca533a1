"""``%tensorinfo``, ``%device``, configuration and load/unload in a real InteractiveShell."""

from __future__ import annotations

import pytest
import torch
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from testkit import run

import tensormagic
from tensormagic.info import tensor_info


def _shown(ip, line: str) -> str:
    with capture_output() as cap:
        ip.run_line_magic(*line.split(" ", 1)) if " " in line else ip.run_line_magic(line, "")
    return cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)


def test_tensorinfo_explains_a_tensor(ip):
    """``%tensorinfo x`` shows shape, dtype, autograd, grad, version, statistics and where x was created."""
    run(ip, "%%trackgrad --quiet\nx = torch.ones(2, 2, requires_grad=True)\ny = (x + 2).sum()\ny.backward()")
    text = _shown(ip, "tensorinfo x")
    for needle in ("2×2", "float32 on cpu", "contiguous", "requires_grad, leaf", ".grad", "all 1",
                   "version", "line 2 by torch.ones"):
        assert needle in text, needle


def test_tensorinfo_says_which_cell_ran_code_an_earlier_cell_defined(ip):
    """A tensor made by a function defined in one cell and called from a later tracked cell was
    created at the function's line, ``while`` the later cell ``ran``: both cells named."""
    defined = ip.execution_count
    run(ip, "def double(a):\n    return a * 2")
    ran = ip.execution_count
    run(ip, "%%trackgrad --quiet\ny = double(torch.ones(3))")
    text = _shown(ip, "tensorinfo y")
    assert f"In[{defined}] line 2 by torch.Tensor.mul, while In[{ran}] ran" in text


def test_tensorinfo_names_views_and_numpy_sharers(ip):
    """A view names its base and memory shared with a NumPy array is listed."""
    run(ip, "import numpy as np\nbase = torch.zeros(4)\nv = base[1:3]\narr = base.numpy()")
    text = _shown(ip, "tensorinfo v")
    assert "view of" in text and "base" in text and "arr (NumPy)" in text


def test_tensor_info_to_dict(ip):
    """``tensor_info(t).to_dict()`` gives plain data, stats included."""
    d = tensor_info(torch.tensor([1.0, float("inf"), 0.0])).to_dict()
    assert d["shape"] == (3,) and d["stats"]["inf"] == 1 and d["stats"]["zeros"] == 1


@pytest.mark.parametrize("make, values", [
    (lambda: torch.empty(0), "empty"),
    (lambda: torch.arange(5), "min 0 max 4 mean 2 std 1.581, 1 zero"),  # 0..4: std sqrt(2.5)
    (lambda: torch.tensor([True, False]), "min 0 max 1 mean 0.5"),
    (lambda: torch.tensor([1 + 2j, 3j]), "min 2.236 max 3"),  # magnitudes: sqrt(5) and 3
    (lambda: torch.ones(3, device="meta"), "meta tensor: shape only, no values"),
    (lambda: torch.ones(2, dtype=torch.half), "all 1"),
])  # fmt: skip
def test_tensor_info_describes_every_kind(make, values):
    """Empty, integer, bool, complex, meta and half tensors get their size, dtype, device and values right."""
    t = make()
    text = tensor_info(t).to_text()
    dtype = str(t.dtype).removeprefix("torch.")
    assert f"({t.numel()} elements, {t.numel() * t.element_size()} B)" in text  # torch's own counts
    assert f"{dtype} on {t.device.type}, strided" in text
    assert f"values          {values}" in text


def test_tensorinfo_non_leaf_grad_is_explained(ip):
    """A non-leaf's missing ``.grad`` is explained, not read (which would warn)."""
    run(ip, "a = torch.ones(2, requires_grad=True)\nb = a * 2")
    assert "retain_grad" in _shown(ip, "tensorinfo b")


def test_tensorinfo_module_lists_parameters(ip):
    """``%tensorinfo model`` is a table of parameters and buffers with totals."""
    run(ip, "model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))")
    text = _shown(ip, "tensorinfo model")
    assert "model.0.weight" in text and "model.1.running_mean (buffer)" in text and "12 parameters" in text


def test_tensorinfo_without_argument_lists_namespace(ip):
    """``%tensorinfo`` alone lists every tensor in the namespace."""
    run(ip, "t1 = torch.ones(3)\nt2 = torch.zeros(2, 2, dtype=torch.int64)")
    text = _shown(ip, "tensorinfo")
    assert "t1" in text and "t2" in text and "int64" in text


@pytest.mark.parametrize("arg, message", [
    ("nosuchname", "could not evaluate 'nosuchname': NameError"),
    ("3", "needs a tensor or an nn.Module; '3' is of type int"),
    ("1/0", "ZeroDivisionError"),
])  # fmt: skip
def test_tensorinfo_bad_input_is_a_usage_error(ip, arg, message):
    """Bad ``%tensorinfo`` input is a one-line UsageError."""
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("tensorinfo", arg)


def test_device_lists_devices_and_tensors(ip):
    """``%device`` shows CPU, the default device and tensors grouped by device with bytes."""
    run(ip, "dm = torch.ones(4, device='meta')\ndc = torch.ones(4)")
    text = _shown(ip, "device")
    assert "cpu" in text and "default device: cpu" in text and "on meta: 1 tensor, 16 B: dm" in text


def test_device_sets_and_restores_the_default(ip):
    """``%device meta`` sets the default device; ``%device cpu`` restores it without a mode."""
    from torch.overrides import _len_torch_function_stack

    try:
        ip.run_line_magic("device", "meta")
        assert torch.ones(1).device.type == "meta"
    finally:
        ip.run_line_magic("device", "cpu")
    assert torch.ones(1).device.type == "cpu" and _len_torch_function_stack() == 0


@pytest.mark.parametrize("arg, message", [
    ("cuda:7", "cuda:7 is not available"),
    ("banana", "'banana' is not a device"),
    ("cpu meta", "one device at most"),
])  # fmt: skip
def test_device_bad_input_is_a_usage_error(ip, arg, message):
    """Unavailable or malformed devices are one-line UsageErrors."""
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("device", arg)


def test_config_traits_apply_to_cells(ip):
    """``%config TensorMagic.stats = True`` makes every tracked cell compute statistics."""
    run(ip, "%config TensorMagic.stats = True")
    try:
        run(ip, "%%trackgrad --quiet -o cfg\nc = torch.tensor([2.0, 4.0])")
        assert ip.user_ns["cfg"].events[0].stats.mean == 3.0
    finally:
        run(ip, "%config TensorMagic.stats = False")


def test_display_text_mode_shows_plain_text_only(ip):
    """``display = "text"`` displays only text/plain."""
    run(ip, "%config TensorMagic.display = 'text'")
    try:
        with capture_output() as cap:
            run(ip, "%%trackgrad\nd = torch.ones(1)")
        assert cap.outputs and all(set(o.data) == {"text/plain"} for o in cap.outputs)
    finally:
        run(ip, "%config TensorMagic.display = 'auto'")


def test_unload_removes_magics_callbacks_and_config(ip):
    """``%unload_ext`` removes the magics, the per-cell callbacks and the configurable."""
    run(ip, "%trackgrad on --quiet")
    ip.run_line_magic("unload_ext", "tensormagic")
    assert ip.find_line_magic("trackgrad") is None and ip.find_cell_magic("trackgrad") is None
    assert ip.find_line_magic("tensorinfo") is None and ip.find_line_magic("device") is None
    names = [getattr(cb, "__qualname__", "") for cb in ip.events.callbacks["pre_run_cell"]]
    assert not any("AutoTracker" in n for n in names)
    assert not any(type(c).__name__ == "TensorMagic" for c in ip.configurables)
    ip.run_line_magic("load_ext", "tensormagic")  # the fixture unloads at the end


def test_load_twice_registers_once(ip):
    """Loading the extension again registers nothing twice."""
    before = sum(type(c).__name__ == "TensorMagic" for c in ip.configurables)
    tensormagic.load_ipython_extension(ip)
    assert sum(type(c).__name__ == "TensorMagic" for c in ip.configurables) == before == 1


def test_reload_ext_leaves_one_working_copy(ip):
    """``%reload_ext`` leaves exactly one set of magics that still works."""
    run(ip, "%trackgrad on --quiet")
    ip.run_line_magic("reload_ext", "tensormagic")
    assert sum(type(c).__name__ == "TensorMagic" for c in ip.configurables) == 1
    before = tensormagic.last_recording()
    run(ip, "r1 = torch.ones(1)")
    assert tensormagic.last_recording() is before  # reloading switched per-cell tracking off
    run(ip, "%%trackgrad --quiet -o rl\nr2 = torch.ones(1)")
    assert ip.user_ns["rl"].events[0].tensor.label == "r2"


def test_unknown_diagnostic_id_is_a_usage_error(ip):
    """A typo in ``TensorMagic.diagnostics`` is a one-line UsageError listing the known ids."""
    run(ip, "%config TensorMagic.diagnostics = ['broadcst']")
    try:
        with pytest.raises(UsageError, match="unknown diagnostic 'broadcst'; known: all, "):
            ip.run_cell_magic("trackgrad", "", "a = 1\n")
    finally:
        run(ip, "%config TensorMagic.diagnostics = 'all'")


def test_terminal_ipython_never_imports_ipywidgets():
    """Every magic in a terminal-style shell shows text and leaves ipywidgets unimported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "for cell in ['%load_ext tensormagic', 'import torch', '%%trackgrad\\nx = torch.ones(2) * 2',\n"
        "             '%tensorinfo x', '%tensorinfo', '%device', '%trackgrad on', 'y = x + 1', '%trackgrad off']:\n"
        "    assert ip.run_cell(cell, store_history=True).success, cell\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tensormagic · cell" in proc.stdout


#: a view made under no_grad whose base is then written in place with grad on: torch raises when
#: its grad_fn (or is_leaf) is read
UNREADABLE_GRAD_FN = "x = torch.ones(3, requires_grad=True).clone()\nwith torch.no_grad():\n    v = x[:2]\nx.mul_(2)"


def test_tensorinfo_says_an_unreadable_grad_fn_could_not_be_read(ip):
    """``%tensorinfo v`` on a tensor whose grad_fn raises when read says it could not be read and
    claims neither "no grad_fn", nor leaf or not a leaf, nor what its .grad is."""
    run(ip, UNREADABLE_GRAD_FN)
    with pytest.raises(RuntimeError):
        ip.user_ns["v"].grad_fn  # noqa: B018 - the premise: torch refuses the read
    text = _shown(ip, "tensorinfo v")
    assert "grad_fn could not be read" in text and "RuntimeError: A view was created in no_grad mode" in text
    assert "no grad_fn" not in text and "not a leaf" not in text and "leaf," not in text
    assert ".grad " not in text and "non-leaf" not in text


def test_tensorinfo_lists_a_namespace_holding_an_unreadable_grad_fn(ip):
    """``%tensorinfo`` with no argument lists every tensor, and the one whose grad_fn raises when
    read as "unreadable", instead of failing; the panel's namespace rows do the same."""
    from tensormagic.views.panel_namespace import namespace_rows

    run(ip, UNREADABLE_GRAD_FN)
    text = _shown(ip, "tensorinfo")
    row = next(line for line in text.splitlines() if line.startswith("v "))
    assert "unreadable" in row and "MulBackward0" in next(line for line in text.splitlines() if line.startswith("x "))
    rows = {r.name: r.grad_fn for r in namespace_rows({"x": ip.user_ns["x"], "v": ip.user_ns["v"]})}
    assert rows == {"x": "MulBackward0", "v": "unreadable"}


def test_card_of_a_recorded_unreadable_grad_fn_claims_no_leaf():
    """A freed tensor's card, from a snapshot whose grad_fn the recorder marked "?" (it raised
    when read; the snapshot's is_leaf, derived from it, is then False), says the grad_fn could
    not be read and claims neither "not a leaf" nor a grad_fn named "?"."""
    from tensormagic.model.events import TensorRef
    from tensormagic.views.card import _ref_rows

    ref = TensorRef("t1", None, ("v",), (2,), "float32", "cpu", True, False, "?", 1)
    rows = dict(_ref_rows(ref))
    assert rows["autograd"] == "requires_grad, grad_fn could not be read: leaf or not is not known"
    assert "grad_fn" not in rows


def test_tensorinfo_counts_one_element_in_the_singular(ip):
    """``%tensorinfo`` of a scalar says "(1 element, 4 B)", and a freed scalar's card the same."""
    from tensormagic.model.events import TensorRef
    from tensormagic.views.card import _ref_rows

    run(ip, "s = torch.tensor(2.0)")
    assert "(1 element, 4 B)" in _shown(ip, "tensorinfo s")
    ref = TensorRef("t1", None, ("s",), (), "float32", "cpu", False, True, None, 0)
    assert dict(_ref_rows(ref))["shape"] == "scalar  (1 element, 4 B)"


def test_tensorinfo_takes_a_name_as_the_reports_write_it(ip):
    """``%tensorinfo model.0.weight`` (how reports name a Sequential's parameter) explains
    ``model[0].weight``; ``model.0.weight.grad`` its gradient."""
    run(ip, "model = torch.nn.Sequential(torch.nn.Linear(4, 3))\nmodel(torch.ones(2, 4)).sum().backward()")
    assert "3×4" in _shown(ip, "tensorinfo model.0.weight")
    assert "3×4" in _shown(ip, "tensorinfo model.0.weight.grad")


def test_tensorinfo_of_a_missing_child_is_one_usage_line(ip):
    """A report-style name whose child does not exist is a one-line UsageError, not a traceback."""
    run(ip, "model = torch.nn.Sequential(torch.nn.Linear(4, 3))")
    with pytest.raises(UsageError, match="no child module '5'"):
        ip.run_line_magic("tensorinfo", "model.5.weight")
    with pytest.raises(UsageError, match="SyntaxError"):
        ip.run_line_magic("tensorinfo", "model.0 weight")


def test_tensorinfo_of_an_inference_tensor_states_no_version_not_minus_one():
    """An inference tensor has no version counter (torch raises on ``_version``): its version row
    says so, in ``tensor_info`` and in a freed tensor's card, and shows no number such as -1."""
    from tensormagic.model.events import TensorRef
    from tensormagic.views.card import _ref_rows

    with torch.inference_mode():
        a = torch.ones(3)
    with pytest.raises(RuntimeError, match="version counter"):
        a._version  # noqa: B018 - torch's own word that there is no version to show
    rows = dict(tensor_info(a).rows())
    assert rows["version"].startswith("none: no version counter") and "-1" not in rows["version"]
    assert "note" in rows and rows["note"] == "an inference tensor"  # "an", and said once
    ref = TensorRef("t1", None, ("a",), (3,), "float32", "cpu", False, True, None, -1)
    assert dict(_ref_rows(ref))["version"].startswith("none: no version counter")


def test_tensorinfo_of_a_leaf_whose_grad_zero_grad_cleared_does_not_deny_the_backward():
    """After backward and ``zero_grad()`` a parameter's ``.grad`` is None although backward reached it:
    the .grad row does not say that no backward has reached it."""
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    lin(torch.ones(1, 2)).sum().backward()
    assert lin.weight.grad is not None  # backward reached it
    opt.zero_grad()
    assert lin.weight.grad is None  # torch's default set_to_none=True
    grad = dict(tensor_info(lin.weight).rows())[".grad"]
    assert grad.startswith("None") and "zero_grad()" in grad and "no backward has reached" not in grad


def test_tensorinfo_counts_zeros_with_the_word_that_agrees():
    """The values row counts zeros as "1,200 zeros" (thousands separated, plural), a freed tensor's
    recorded values the same: never "zero(s)"."""
    from tensormagic.views.card import _recorded_stats_row

    t = torch.cat([torch.zeros(1200), torch.ones(3)])  # 1,200 zeros by construction
    values = dict(tensor_info(t).rows())["values"]
    assert values.endswith(", 1,200 zeros"), values
    assert _recorded_stats_row(tensor_info(t).stats)[1].endswith(", 1,200 zeros")


def test_tensorinfo_of_a_view_of_an_unnamed_tensor_says_its_shape_as_a_shape():
    """A view whose base no name holds reads "view of an unnamed tensor of shape 2×3" (was "a 2×3
    tensor", and "a 2 tensor" for one dimension)."""
    base = torch.zeros(2, 3)
    v, w = base[0], base[0][1:]
    assert v._base is base and w._base is base  # torch: both are views of base
    assert dict(tensor_info(v, namespace={"v": v}).rows())["view of"] == "an unnamed tensor of shape 2×3"
    one = torch.zeros(4)
    assert dict(tensor_info(one[1:], namespace={}).rows())["view of"] == "an unnamed tensor of shape 4"
    assert dict(tensor_info(v, namespace={"base": base}).rows())["view of"] == "base"


def test_values_with_nan_and_inf_keep_the_counts_apart_from_the_statistics():
    """NaN and Inf counts follow a comma, with thousands separators: "std 1.414, 1 NaN" (it read
    "std 1.414 1 NaN", one run of numbers) and "1,500 NaN, 2,000 Inf"."""
    nan, inf = float("nan"), float("inf")
    one = dict(tensor_info(torch.tensor([1.0, 3.0, nan])).rows())["values"]
    assert one == "min 1 max 3 mean 2 std 1.414, 1 NaN"  # finite 1 and 3: mean 2, std sqrt(2)
    many = dict(tensor_info(torch.tensor([nan] * 1500 + [inf] * 2000 + [1.0])).rows())["values"]
    assert many.endswith("std 0, 1,500 NaN, 2,000 Inf"), many
    assert dict(tensor_info(torch.tensor([nan, inf])).rows())["values"] == "1 NaN, 1 Inf"


def test_tensorinfo_takes_an_optimizer_state_as_the_reports_write_it(ip):
    """``%tensorinfo opt.state[model.0.weight].exp_avg`` (how reports name Adam's state) explains
    ``opt.state[model[0].weight]['exp_avg']``, also for a parameter named by a dotted Python path;
    a key the state lacks is one usage line naming the keys it holds."""
    run(ip, "model = torch.nn.Sequential(torch.nn.Linear(4, 3))\nlin = torch.nn.Linear(2, 2)\n"
            "opt = torch.optim.Adam([*model.parameters(), *lin.parameters()])\n"
            "(model(torch.ones(2, 4)).sum() + lin(torch.ones(2)).sum()).backward()\nopt.step()")  # fmt: skip
    text = _shown(ip, "tensorinfo opt.state[model.0.weight].exp_avg")
    assert text.startswith("opt.state[model.0.weight].exp_avg") and "3×4" in text  # the weight's shape
    assert "values          all 0.2" in text  # (1 - beta1) * grad = 0.1 * 2: two rows of ones
    assert _shown(ip, "tensorinfo opt.state[lin.bias].exp_avg_sq").startswith("opt.state[lin.bias].exp_avg_sq")
    with pytest.raises(UsageError, match="has no 'momentum_buffer': it holds step, exp_avg, exp_avg_sq"):
        ip.run_line_magic("tensorinfo", "opt.state[lin.bias].momentum_buffer")
    run(ip, "w = torch.ones(2, requires_grad=True)\nsgd = torch.optim.SGD([w], lr=0.1)")
    with pytest.raises(UsageError, match="sgd.state holds nothing for w: no step has run for it yet"):
        ip.run_line_magic("tensorinfo", "sgd.state[w].momentum_buffer")


def test_tensorinfo_tables_count_with_separators_and_the_word_that_agrees(ip):
    """A module's table counts "1,100 parameters" (was "1100 parameters"), a one-element module
    "1 parameter", and a namespace of one tensor "1 tensor" (was "1 tensors")."""
    from tensormagic.info import module_info, namespace_info

    lin = torch.nn.Linear(10, 100)  # 10 * 100 weights + 100 biases = 1,100
    assert module_info(lin, "lin").footer.startswith("1,100 parameters, ")
    one = torch.nn.Module()
    one.p = torch.nn.Parameter(torch.ones(()))
    assert module_info(one, "one").footer == "1 parameter, 4 B"
    assert namespace_info({"x": torch.ones(2)}).footer == "1 tensor, 8 B"
